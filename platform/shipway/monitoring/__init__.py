"""Monitoring: the Prometheus server and client, live quality (the prediction log joined with
labels as they land), drift by day, training/serving skew (`live` runs them from the lake),
the retraining decisions a model's sensors make from Prometheus, and the alert rules and
Grafana dashboards generated from each declaration. The collectors the serving control plane
exports live here too (`quality.QualityCollector`, `skew.SkewCollector`).
Layer 7: may import `shipway.models` and every layer below it.
"""
