"""Progressive delivery: shadow, canary steps, promotion or rollback, decided on Prometheus.
May import `shipway.errors`, `shipway.paths`, `shipway.monitoring`, `shipway.serving`,
`shipway.release.audit`; `shipway.models` imports it, not the other way round (but for the
policy's type).
"""
