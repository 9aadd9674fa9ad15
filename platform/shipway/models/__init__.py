"""Models: declarations, training, metric gates, MLflow tracking, and the asset factory.

A model is declared in `assets/<folder>/model.yaml` (`declaration`); `component` turns each
declaration into its Dagster assets, checks, jobs and sensor. Nothing here knows a model's
features or label: they come from the declaration and its Feast feature service.
May import `shipway.data` and `shipway.features`; serving and monitoring only in `component`.
"""
