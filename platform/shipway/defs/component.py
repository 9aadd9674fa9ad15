"""`ShipwayModel`: a Dagster Component that turns one model declaration into its lifecycle.

For a declared model `<name>` it merges, with one name per concept, each area's definitions:

- training (`shipway.defs.models`): `<name>_training_set` with its contract's checks, `<name>`
  (XGBoost, an MLflow run and registered version of that name) and `<name>_gate`;
- deployment (`shipway.defs.deployment`): `<name>_deployment`, the `<name>_release` job and
  `<name>_release_sensor`;
- rollout (`shipway.defs.rollout`): `<name>_rollout_sensor`;
- monitoring (`shipway.defs.monitoring`): `<name>_live_quality`, `<name>_live_drift`,
  `<name>_feature_skew` and the `<name>_monitoring` job;
- retraining (`shipway.defs.retraining`): `<name>_retrain`, `<name>_lifecycle`,
  `<name>_drift_sensor`, `<name>_quality_sensor` and, with a cadence, `<name>_retrain_schedule`.
"""

from __future__ import annotations

from dagster import AssetKey, Component, ComponentLoadContext, Definitions

from shipway.defs.batch import batch_definitions
from shipway.defs.deployment import deployment_definitions
from shipway.defs.models import training_definitions
from shipway.defs.monitoring import monitoring_definitions
from shipway.defs.retraining import retraining_definitions
from shipway.defs.rollout import rollout_sensor
from shipway.models.catalog import DeclaredModel


class ShipwayModel(Component):
    """One declared model's assets, checks, jobs and sensors, from its `model.yaml`."""

    def __init__(self, model: DeclaredModel) -> None:
        self.model = model

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        return model_definitions(self.model)


def model_definitions(model: DeclaredModel) -> Definitions:
    declaration = model.declaration
    deployment = AssetKey(declaration.deployment)
    return Definitions.merge(
        training_definitions(model),
        deployment_definitions(model),
        Definitions(sensors=[rollout_sensor(declaration, deployment)]),
        monitoring_definitions(model, deployment),
        retraining_definitions(model),
        batch_definitions(model),
    )
