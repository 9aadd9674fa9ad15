"""Models: declarations, the catalog that checks them against their sources, training, and
MLflow tracking.

A model is declared in `assets/<folder>/model.yaml` (`declaration`, checked by `catalog`).
Nothing here knows a model's features or label: they come from the declaration and its Feast
feature service. Its Dagster definitions are `shipway.defs`'.
Layer 6: may import `shipway.serving` (the bundle training writes), `shipway.features`,
`shipway.data`, `shipway.stats` and the base modules.
"""
