"""The console: what people look at, on top of every other app.

The admin index dashboard (dashboard.py, charts.py, templatetags/gateway_admin.py), the live traffic page
and its websocket (live_selectors.py, consumers.py), the per-model-group deployment health pages and the
"test connection" action (deployment_health.py, admin.py; the probe itself is apps/monitoring's), the
usage panel on a key's admin page (key_usage.py) and the demo tenant (``manage.py bootstrap_demo``).

It reads teams, keys, spend, the proxy and monitoring (probes, alerts); none of them imports it. Where
the console shows something on another app's admin page (the key usage panel, the deployments' "test
connection" action) it adds it from ``ConsoleConfig.ready()`` through that admin's own extension point.
"""
