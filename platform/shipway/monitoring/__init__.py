"""Monitoring: the Prometheus server and client, live feature drift against the training
reference, and the retraining decision a model's drift sensor makes from Prometheus.
May import `shipway.errors`, `shipway.paths`, `shipway.processes`.
"""
