"""Dagster resources: typed, configured at the edge (assets/definitions.py) from EnvVar.

Each wraps one backend behind the interface assets use; the embedded default and a scale-out
deployment differ only in configuration (a URL, a folder), not in asset code.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from shipway.monitoring.prometheus import PrometheusClient
from shipway.paths import ShipwayHome
from shipway.serving.client import ServingClient
from shipway.serving.seldon import SeldonServing


class ShipwayHomeResource(ConfigurableResource):
    """The folder holding the lake (Delta tables), the dbt warehouse and Feast's stores."""

    path: str

    @property
    def home(self) -> ShipwayHome:
        return ShipwayHome(Path(self.path).resolve())


class MlflowResource(ConfigurableResource):
    tracking_uri: str


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
        return ServingClient(self.control_url, self.url, self.token)


class PrometheusResource(ConfigurableResource):
    url: str

    def client(self) -> PrometheusClient:
        return PrometheusClient(self.url)
