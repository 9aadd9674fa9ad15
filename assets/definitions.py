"""Dagster code location of this repository's ML products. It only assembles: the fraud
model's assets, checks, jobs and sensor, and resources configured from the environment."""

import os
import sys
from pathlib import Path

from dagster import AssetSelection, Definitions, EnvVar, define_asset_job
from dagster_dbt import DbtCliResource

from assets.fraud.data import raw_events, raw_events_batch, raw_events_contract
from assets.fraud.deployment import fraud_deployment
from assets.fraud.features import (
    feature_views,
    online_store,
    training_set,
    training_set_contract,
)
from assets.fraud.model import fraud_model, fraud_model_gate
from assets.fraud.sensors import fraud_model_drift_sensor, fraud_model_retrain
from assets.fraud.transform import dbt_project, fraud_dbt_models
from shipway.paths import ShipwayHome
from shipway.resources import (
    MlflowResource,
    PrometheusResource,
    ServingResource,
    ShipwayHomeResource,
)

# Resources, dbt's profile and Feast's feature_store.yaml read their paths from these
# variables; `shipway up` and the demo set them, plain `dagster dev` gets the defaults.
for key, value in ShipwayHome.from_env().environment().items():
    os.environ.setdefault(key, value)

landing = AssetSelection.assets(raw_events_batch, raw_events)
land_raw_events = define_asset_job(
    "land_raw_events",
    selection=landing,
    description="Land a batch of card transactions (days and scenario, or a Parquet file, in "
    "the launchpad); its contract admits it to raw_events or quarantines it.",
)
fraud_model_lifecycle = define_asset_job(
    "fraud_model_lifecycle",
    selection=AssetSelection.all() - landing,
    description="Everything after landing: dbt, Feast, training set, model, gate, deployment.",
)

defs = Definitions(
    assets=[
        raw_events_batch,
        raw_events,
        fraud_dbt_models,
        feature_views,
        online_store,
        training_set,
        fraud_model,
        fraud_deployment,
    ],
    asset_checks=[raw_events_contract, training_set_contract, fraud_model_gate],
    jobs=[land_raw_events, fraud_model_lifecycle, fraud_model_retrain],
    sensors=[fraud_model_drift_sensor],
    resources={
        "lake": ShipwayHomeResource(path=EnvVar("SHIPWAY_HOME")),
        # The dbt of this environment, whether or not its bin/ is on PATH.
        "dbt": DbtCliResource(
            project_dir=dbt_project, dbt_executable=str(Path(sys.executable).with_name("dbt"))
        ),
        "mlflow": MlflowResource(tracking_uri=EnvVar("MLFLOW_TRACKING_URI")),
        "serving": ServingResource(url=EnvVar("SHIPWAY_SERVING_URL")),
        "prometheus": PrometheusResource(url=EnvVar("SHIPWAY_PROMETHEUS_URL")),
    },
)
