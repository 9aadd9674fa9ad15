"""Monitoring: the Prometheus server and client, live feature drift against the training
reference, live quality (the prediction log joined with labels as they land), and the
retraining decisions a model's drift and quality sensors make from Prometheus.
May import `shipway.errors`, `shipway.paths`, `shipway.processes`, the policy types of
`shipway.models.declaration` and the metrics of `shipway.release.statistics`; `assets` (the
Dagster definitions) also the lake, the prediction log and the resources.
"""
