"""Prometheus: the server Shipway runs, its scrape targets, and a PromQL client.

The committed config (`deploy/prometheus/prometheus.yml`) discovers targets from files, so no
port is hard-coded: Shipway copies config and rules into `$SHIPWAY_HOME/prometheus/config` and
writes `targets/<job>.json` as services come and go.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from shipway.errors import ServiceError, ShipwayError
from shipway.files import write_atomic
from shipway.paths import DEPLOY_DIR, ShipwayHome
from shipway.processes import (
    LOOPBACK,
    ManagedProcess,
    ensure_port_free,
    require_binary,
    safe_environment,
)

PROMETHEUS_CONFIG_DIR = DEPLOY_DIR / "prometheus"
INSTALL_HINT = "run deploy/setup.sh, which installs Debian's prometheus package"


def write_targets(config_dir: Path, job: str, targets: list[str]) -> None:
    """Atomically replace the file_sd targets of `job`: Prometheus never reads half a file."""
    write_atomic(
        config_dir / "targets" / f"{job}.json",
        json.dumps([{"targets": targets, "labels": {}}]),
    )


class PrometheusServer:
    def __init__(self, home: ShipwayHome, port: int, binary: str = "prometheus") -> None:
        self.home = home
        self.port = port
        self.binary = binary
        self.config_dir = home.prometheus / "config"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def prepare(self) -> ManagedProcess:
        """Check, copy the config, and build the process; nothing is started yet."""
        binary = require_binary(self.binary, "Prometheus", INSTALL_HINT)
        ensure_port_free(self.port, "Prometheus")
        if self.config_dir.exists():
            shutil.rmtree(self.config_dir)
        self.config_dir.mkdir(parents=True)
        shutil.copy(PROMETHEUS_CONFIG_DIR / "prometheus.yml", self.config_dir)
        shutil.copytree(PROMETHEUS_CONFIG_DIR / "rules", self.config_dir / "rules")
        for job in ("shipway_serving", "envoy", "mlserver", "shipway_features"):
            write_targets(self.config_dir, job, [])
        write_targets(self.config_dir, "prometheus", [f"{LOOPBACK}:{self.port}"])
        self.process = ManagedProcess(
            name="prometheus",
            argv=[
                binary,
                f"--config.file={self.config_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.home.prometheus / 'data'}",
                # No --web.enable-lifecycle: an unauthenticated POST /-/quit would remove a
                # rollout's only evidence. Nothing here reloads or stops it over HTTP.
                f"--web.listen-address={LOOPBACK}:{self.port}",
            ],
            env=safe_environment(),
            inherit_environment=False,
            log_path=self.home.logs / "prometheus.log",
            ready_url=f"{self.url}/-/ready",
        )
        return self.process

    def start(self) -> PrometheusServer:
        self.prepare().start()
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class PrometheusClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> list[Sample]:
        try:
            response = httpx.get(
                f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"Prometheus at {self.url} unreachable for {promql!r}: {exc}"
            ) from None
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if response.status_code != 200 or body.get("status") != "success":
            error = body.get("error", response.text[:200])
            raise ServiceError(f"Prometheus at {self.url} rejected {promql!r}: {error}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[Sample]], bool],
        timeout: float = 60.0,
        interval: float = 1.0,
    ) -> list[Sample]:
        deadline = time.monotonic() + timeout
        samples: list[Sample] = []
        while time.monotonic() < deadline:
            samples = self.query(promql)
            if predicate(samples):
                return samples
            time.sleep(interval)
        seen = [(s.labels, s.value) for s in samples][:5]
        raise ServiceError(
            f"timed out after {timeout:.0f}s waiting on {promql!r}; last seen {seen}"
        )


def check_config(config: Path, promtool: str = "promtool") -> None:
    binary = require_binary(promtool, "promtool", INSTALL_HINT)
    result = subprocess.run(
        [binary, "check", "config", str(config)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ShipwayError(
            f"promtool check config {config}: {result.stderr.strip() or result.stdout.strip()}"
        )
