"""Validation engine: Prometheus-backed checks of every seed criterion, profiles, soak runner, synthetic history.

Modules: `series` (time series arithmetic), `checks` (pure check kinds), `profiles` (production and
compressed clocks), `criteria` (every criterion by name + evaluation), `prometheus` (Prometheus and
Alertmanager clients), `scrape` (parse a streamer's /metrics), `soak` (soak runner and memory profile),
`synthetic` (OpenMetrics history for backfills), `periods` (daily / weekly / monthly validations),
`cli` (`k2 soak`, `k2 validate`).
"""
