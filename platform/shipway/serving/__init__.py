"""Serving: model bundles, Shipway's MLServer runtime, the Envoy data plane, the control plane,
and the client (and traffic generator) that assets, the demo and tests call it with.
May import `shipway.monitoring.drift` (the live drift window), `shipway.features`, and
`shipway.rollout.state` (the control plane exports each rollout's state as metrics).
"""
