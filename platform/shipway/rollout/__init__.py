"""Progressive delivery: deploying a released version (`deploy`), then shadow, canary steps,
promotion or rollback, decided on Prometheus (`analysis`, `controller`), with their effects
on the audit and MLflow (`effects`), the saved state (`state`), its metrics (`metrics`) and
what `shipway rollout` and `shipway render seldon` do (`commands`).
Layer 9, the top of the domain: may import every layer below; only `shipway.defs` and the
entry points import it.
"""
