"""Shipway's Dagster code location, built from a folder of model declarations.

Shared upstream assets (raw events and their contract, dbt's tables, the Feast repository and
online store) appear once; each declared model adds its own component's definitions. Resources
are configured here, at the edge, from the environment `shipway up`, the demo and tests set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster import (
    AssetSelection,
    Definitions,
    EnvVar,
    build_defs_for_component,
    define_asset_job,
)
from dagster_dbt import DbtCliResource

from shipway.data.assets import landing_definitions
from shipway.data.dbt import dbt_models, dbt_project
from shipway.features.assets import ONLINE_STORE, feature_definitions
from shipway.models.catalog import DeclaredModel
from shipway.models.component import LANDING, ShipwayModel
from shipway.resources import (
    MlflowResource,
    PrometheusResource,
    ServingResource,
    ShipwayHomeResource,
)


def shared_definitions(raw_events_contract: Path) -> Definitions:
    """What every model builds on: landing, dbt, Feast, and the jobs that run them."""
    raw_events_batch, raw_events, raw_events_checks = landing_definitions(raw_events_contract)
    feature_views, online_store = feature_definitions()
    landing = AssetSelection.assets(*LANDING)
    return Definitions(
        assets=[raw_events_batch, raw_events, dbt_models, feature_views, online_store],
        asset_checks=[raw_events_checks],
        jobs=[
            define_asset_job(
                "land_raw_events",
                selection=landing,
                description="Land a batch of card transactions (days and scenario, or a Parquet "
                "file, in the launchpad); its contract admits it to raw_events or quarantines it.",
            ),
            define_asset_job(
                "refresh_features",
                selection=AssetSelection.assets(ONLINE_STORE).upstream() - landing,
                description="dbt's feature tables, feast apply and the online store: what "
                "serving looks up, fresh after a landing.",
            ),
        ],
    )


SELDON_TOKEN_ENV = "SHIPWAY_SELDON_TOKEN"


def resources() -> dict[str, object]:
    return {
        "lake": ShipwayHomeResource(path=EnvVar("SHIPWAY_HOME")),
        # The dbt of this environment, whether or not its bin/ is on PATH.
        "dbt": DbtCliResource(
            project_dir=dbt_project, dbt_executable=str(Path(sys.executable).with_name("dbt"))
        ),
        "mlflow": MlflowResource(tracking_uri=EnvVar("MLFLOW_TRACKING_URI")),
        "serving": ServingResource(
            control_url=EnvVar("SHIPWAY_CONTROL_URL"),
            url=EnvVar("SHIPWAY_SERVING_URL"),
            token=EnvVar("SHIPWAY_SERVING_TOKEN"),
            # Optional: Seldon Core on a cluster instead of the embedded control plane.
            seldon_api_url=os.environ.get("SHIPWAY_SELDON_API_URL", ""),
            # A secret is configured as EnvVar, so Dagster shows its name, never its value.
            seldon_token=EnvVar(SELDON_TOKEN_ENV) if os.environ.get(SELDON_TOKEN_ENV) else "",
            seldon_namespace=os.environ.get("SHIPWAY_SELDON_NAMESPACE", "default"),
            seldon_storage=os.environ.get(
                "SHIPWAY_SELDON_STORAGE", "s3://shipway-models/{model}/{version}"
            ),
        ),
        "prometheus": PrometheusResource(url=EnvVar("SHIPWAY_PROMETHEUS_URL")),
    }


def code_location(models: list[DeclaredModel], raw_events_contract: Path) -> Definitions:
    return Definitions.merge(
        shared_definitions(raw_events_contract),
        *(build_defs_for_component(ShipwayModel(model)) for model in models),
        Definitions(resources=resources()),
    )
