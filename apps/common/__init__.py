"""The ground floor: shared utilities with no app knowledge (interval logs, log context).

A plain package, not a Django app: nothing here has models, and nothing here imports an app, so every
layer above (teams, keys, spend, proxy, ratelimit, console) may import it.
"""
