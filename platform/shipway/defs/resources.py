"""Dagster resources: typed, configured at the edge (`resources()`, from EnvVar).

Each wraps one backend behind the interface assets use; the embedded default and a scale-out
deployment differ only in configuration (a URL, a folder), not in asset code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster import ConfigurableResource, EnvVar
from dagster_dbt import DbtCliResource, DbtProject

from shipway.models.distributed import SCHEDULER_ENV, DaskCluster
from shipway.monitoring.prometheus import PrometheusClient
from shipway.paths import DBT_PROJECT_DIR, ShipwayHome
from shipway.serving.client import ServingClient
from shipway.serving.seldon import SeldonServing

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
"""The dbt project, loaded once: its manifest makes the dbt assets, its CLI builds them."""


class ShipwayHomeResource(ConfigurableResource):
    """The folder holding the lake (Delta tables), the dbt warehouse and Feast's stores."""

    path: str

    @property
    def home(self) -> ShipwayHome:
        return ShipwayHome(Path(self.path).resolve())


class MlflowResource(ConfigurableResource):
    tracking_uri: str


RESTART_PATIENCE = 30.0
"""Seconds a deployment or a sensor tick waits for an unreachable control plane."""


class ServingResource(ConfigurableResource):
    """Serving: Shipway's control plane, its token and the data plane's front door; or, with
    `seldon_api_url` set, Seldon Core v2 on that Kubernetes API (a `Model` per version, an
    `Experiment` per model), driven by the same deployment and rollout code."""

    control_url: str
    url: str
    token: str
    seldon_api_url: str = ""
    seldon_token: str = ""
    seldon_namespace: str = "default"
    seldon_storage: str = "s3://shipway-models/{model}/{version}"
    """Where each version's bundle is uploaded for Seldon to load ({model}, {version})."""

    def client(self) -> ServingClient | SeldonServing:
        if self.seldon_api_url:
            return SeldonServing(
                self.seldon_api_url, self.seldon_token, self.seldon_namespace, self.seldon_storage
            )
        # Runs and sensors wait out a control plane's restart rather than fail on it.
        return ServingClient(self.control_url, self.url, self.token, patience=RESTART_PATIENCE)


class DaskResource(ConfigurableResource):
    """The Dask cluster training runs on; empty: in the run's own process."""

    scheduler: str = ""

    def cluster(self) -> DaskCluster | None:
        return DaskCluster(self.scheduler) if self.scheduler else None


class PrometheusResource(ConfigurableResource):
    url: str

    def client(self) -> PrometheusClient:
        return PrometheusClient(self.url)


SELDON_TOKEN_ENV = "SHIPWAY_SELDON_TOKEN"


def resources() -> dict[str, object]:
    """Every resource, from the environment `shipway up`, the demo and tests set."""
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
        # Optional: a Dask scheduler (`tcp://host:port`) to train and batch-score on.
        "dask": DaskResource(scheduler=os.environ.get(SCHEDULER_ENV, "").strip()),
    }
