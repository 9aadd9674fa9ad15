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


class ShipwayHomeResource(ConfigurableResource):
    """The folder holding the lake (Delta tables), the dbt warehouse and Feast's stores."""

    path: str

    @property
    def home(self) -> ShipwayHome:
        return ShipwayHome(Path(self.path).resolve())


class MlflowResource(ConfigurableResource):
    tracking_uri: str


class ServingResource(ConfigurableResource):
    """Serving: the control plane (Shipway's here, Seldon Core on Kubernetes), its token, and
    the data plane's front door."""

    control_url: str
    url: str
    token: str

    def client(self) -> ServingClient:
        return ServingClient(self.control_url, self.url, self.token)


class PrometheusResource(ConfigurableResource):
    url: str

    def client(self) -> PrometheusClient:
        return PrometheusClient(self.url)
