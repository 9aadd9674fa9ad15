"""The local platform: MLflow, Prometheus, serving's two planes (Envoy and the control plane),
the feature service (and Redis, when it is the online store) and, for `shipway up`, Dagster.

All on 127.0.0.1. Binaries and ports are checked before anything starts, and a failure at any
step stops what was already started, so a failed start leaves nothing running. Once up, every
service is supervised: one that dies is started again, with backoff, and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shipway import callers
from shipway.errors import ServiceError
from shipway.features.online_state import ONLINE_STORE_ENV, REDIS_ENV, online_store_kind
from shipway.features.process import (
    FEATURES_ENV,
    feature_server_process,
    redis_binary,
    redis_process,
)
from shipway.models.tracking import credentials, ensure_viewer, mlflow_server_process
from shipway.monitoring.prometheus import INSTALL_HINT as PROMETHEUS_HINT
from shipway.monitoring.prometheus import PrometheusServer, write_targets
from shipway.paths import REPO_ROOT, ShipwayHome
from shipway.processes import (
    LOOPBACK,
    ManagedProcess,
    Report,
    ServiceGroup,
    ensure_port_free,
    free_ports,
    require_binary,
)
from shipway.serving.client import (
    CONTROL_ENV,
    SERVING_ENV,
    TOKEN_ENV,
    ServingClient,
    control_plane_process,
    write_endpoint,
)
from shipway.serving.dataplane import DataPlane, envoy_binary
from shipway.serving.runtime import mlserver_binary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ports:
    mlflow: int = 5000
    prometheus: int = 9090
    serving: int = 8000
    dagster: int = 3000
    control: int = 8100
    serving_stats: int = 8001
    features: int = 6566
    redis: int = 6379

    @classmethod
    def free(cls) -> Ports:
        """Eight different free ports (tests, the demo, benchmarks)."""
        return cls(*free_ports(8))


def serving_token() -> str:
    """The token changes to serving need: $SHIPWAY_SERVING_TOKEN, or a fresh one per start."""
    return os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)


PLATFORM_CALLER = "shipway"
"""The caller the platform itself calls the front door as (the demo's traffic, tests): a key
made per start, like the admin token, and kept only in the owner-only endpoint file."""
PLATFORM_RATE = 100_000


@dataclass
class Stack:
    home: ShipwayHome
    ports: Ports
    token: str = field(default_factory=serving_token)
    key: str = field(default_factory=callers.new_key)
    group: ServiceGroup = field(default_factory=ServiceGroup)

    @property
    def api_key(self) -> str:
        """`<caller>:<key>`: what the platform presents to the front door."""
        return f"{PLATFORM_CALLER}:{self.key}"

    @property
    def dataplane(self) -> DataPlane:
        return DataPlane(self.home.served.dataplane, self.ports.serving, self.ports.serving_stats)

    @property
    def mlflow_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.mlflow}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.prometheus}"

    @property
    def serving_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.serving}"

    @property
    def control_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.control}"

    @property
    def features_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.features}"

    @property
    def dagster_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.dagster}"

    def environment(self) -> dict[str, str]:
        """What resources read (assets/definitions.py) to find the running services."""
        return {
            **self.home.environment(),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            **credentials(self.home).environment(),
            SERVING_ENV: self.serving_url,
            CONTROL_ENV: self.control_url,
            TOKEN_ENV: self.token,
            "SHIPWAY_PROMETHEUS_URL": self.prometheus_url,
            FEATURES_ENV: self.features_url,
            ONLINE_STORE_ENV: online_store_kind(),
            **(
                {REDIS_ENV: f"{LOOPBACK}:{self.ports.redis}"}
                if online_store_kind() == "redis"
                else {}
            ),
            "DAGSTER_HOME": str(self.home.dagster),
        }

    def serving(self) -> ServingClient:
        return ServingClient(self.control_url, self.serving_url, self.token, self.api_key)


def prometheus_binary() -> str:
    return require_binary(
        os.environ.get("SHIPWAY_PROMETHEUS", "prometheus"), "Prometheus", PROMETHEUS_HINT
    )


def preflight(ports: Ports, with_dagster: bool) -> None:
    """Everything that can be known to fail before starting anything."""
    prometheus_binary()
    mlserver_binary()
    envoy_binary()
    checks = [
        ("MLflow server", ports.mlflow),
        ("Prometheus", ports.prometheus),
        ("Envoy front door", ports.serving),
        ("Envoy stats", ports.serving_stats),
        ("serving control plane", ports.control),
    ]
    checks.append(("feature service", ports.features))
    if online_store_kind() == "redis":
        redis_binary()
        checks.append(("Redis online store", ports.redis))
    if with_dagster:
        checks.append(("Dagster webserver", ports.dagster))
    taken: dict[int, str] = {}
    for service, port in checks:
        if port in taken:
            raise ServiceError(
                f"{taken[port]} and {service} are both given port {port}; give each its own"
            )
        taken[port] = service
    for service, port in checks:
        ensure_port_free(port, service)


@contextlib.contextmanager
def running_stack(
    home: ShipwayHome,
    ports: Ports,
    with_dagster: bool = False,
    with_mlflow: bool = True,
    report: Report = log.warning,
) -> Iterator[Stack]:
    """The platform on loopback; without MLflow it is serving and its metrics alone. Once up,
    a service that dies is started again (`ServiceGroup.supervise`), each restart told to
    `report` and counted for Prometheus."""
    preflight(ports, with_dagster)
    stack = Stack(home, ports)
    home.prepare_dagster()
    with stack.group as group:
        # MLflow is the slowest to come up (~20 s on 2 cores): launch it first, wait last.
        if with_mlflow:
            group.start(mlflow_server_process(home, ports.mlflow), wait=False)
        prometheus = PrometheusServer(home, ports.prometheus, binary=prometheus_binary())
        group.start(prometheus.prepare())
        targets = prometheus.config_dir / "targets"
        dataplane = stack.dataplane
        group.start(dataplane.process(home.logs), wait=False)
        control = control_plane_process(
            home.serving, dataplane, home.logs, targets, ports.control, lake=home.lake
        )
        control.env[TOKEN_ENV] = stack.token
        # The platform's own caller, with this start's key, before anyone can call.
        platform = callers.Caller(
            PLATFORM_CALLER, callers.digest(stack.key), PLATFORM_RATE, PLATFORM_RATE
        )
        callers.update(home.served.callers, lambda known: known.update({PLATFORM_CALLER: platform}))
        group.start(control)
        write_endpoint(
            home.serving, stack.control_url, stack.serving_url, stack.token, stack.api_key
        )
        write_targets(prometheus.config_dir, "shipway_serving", [f"{LOOPBACK}:{ports.control}"])
        write_targets(prometheus.config_dir, "envoy", [dataplane.metrics_target])
        write_targets(prometheus.config_dir, "shipway_features", [f"{LOOPBACK}:{ports.features}"])
        if online_store_kind() == "redis":
            group.start(redis_process(home, ports.redis))
        features = feature_server_process(home, ports.features, stack.serving_url)
        features.env.update(
            {k: v for k, v in stack.environment().items() if k in (ONLINE_STORE_ENV, REDIS_ENV)}
        )
        group.start(features, wait=False)
        if with_dagster:
            group.start(dagster_process(stack), wait=False)
        group.wait_ready()
        if with_mlflow:
            ensure_viewer(stack.mlflow_url, home)
        group.supervise(report, home.served.service_restarts)
        yield stack


def dagster_process(stack: Stack) -> ManagedProcess:
    dagster = Path(sys.executable).with_name("dagster")
    return ManagedProcess(
        name="dagster dev",
        argv=[
            str(dagster),
            "dev",
            "--workspace",
            str(REPO_ROOT / "workspace.yaml"),
            "--host",
            LOOPBACK,
            "--port",
            str(stack.ports.dagster),
        ],
        log_path=stack.home.logs / "dagster.log",
        ready_url=f"{stack.dagster_url}/server_info",
        # dagster-dbt's dev-mode `dbt parse` looks for `dbt` on PATH.
        env={**stack.environment(), "PATH": f"{dagster.parent}:{os.environ.get('PATH', '')}"},
        cwd=REPO_ROOT,
        ready_timeout=240.0,
    )
