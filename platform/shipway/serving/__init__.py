"""Serving: model bundles and signed model packages, Shipway's MLServer runtime, the Envoy data
plane, the control plane, the prediction spool and log, Seldon Core as the scale-out target, and
the client (and traffic generator) that assets, the demo and tests call it with.
May import `shipway.monitoring.drift` (the live drift window), `shipway.features`,
`shipway.rollout.state` (the control plane exports each rollout's state as metrics) and
`shipway.data.lake` (the prediction log is a Delta table).
"""
