"""Models: declarations, the catalog that checks them, training, metric gates, MLflow tracking,
and the `ShipwayModel` component that builds each declared model's Dagster definitions.

A model is declared in `assets/<folder>/model.yaml` (`declaration`, checked by `catalog`);
`component` turns it into its assets, checks, jobs and sensor. Nothing here knows a model's
features or label: they come from the declaration and its Feast feature service.
May import `shipway.data` and `shipway.features`; from later stages, the formats training
writes (`monitoring.drift`'s reference, `serving.bundle`'s files), and in `component` the
serving client and the retraining decision it wires into Dagster.
"""
