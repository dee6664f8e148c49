"""Monitoring: scheduled deployment probes, the traffic view of deployment health, and alerts.

- probes.py: beat calls every enabled deployment with one 1-token chat through the proxy's own adapter
  (connection_probe.py) and keeps the latest result per deployment (``DeploymentProbe``), so a
  deployment with no traffic still has a known state. Probes are the gateway's own calls: they go
  around /v1, so no tenant's limits, budgets or ledger see them.
- traffic.py: what the spend ledger says about a deployment's recent requests (failures vs refusals).
- rules.py: alert rules over the ledger, aggregates, probes and shared cooldowns (deployment unhealthy,
  limits hit repeatedly, spend anomalies); services.py turns findings into ``AlertEvent`` rows, UNIQUE
  per (rule, subject, window), so two workers never send one alert twice, and delivers them through
  the matching ``AlertChannel`` rows (delivery.py: e-mail, a generic JSON webhook, Slack Block Kit).
  Budget alerts (apps/spend) reach the same channels.

It sits between the proxy and the console: it reads teams, spend and the proxy; the console's health
pages read it.
"""
