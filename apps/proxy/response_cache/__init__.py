"""The gateway's exact-match response cache for chat, completions and embeddings (docs/caching.md).

``keys`` says when two requests are the same, ``entries`` how an answer is stored and replayed,
``store`` where it lives (Redis, or this process's memory), ``flow`` how a /v1 request uses it.
"""
