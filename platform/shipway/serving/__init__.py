"""Serving: model bundles, MLServer per version, the control plane and traffic splitter, and
the client (and traffic generator) that assets, the demo and tests call it with.
May import `shipway.monitoring.drift` (the live drift window) and `shipway.features`.
"""
