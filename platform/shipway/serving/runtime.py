"""Seldon's inference server, MLServer, as a local process serving one model version.

MLServer runs from its own virtual environment (`deploy/serving/.venv`, built by
`deploy/setup.sh`): it pins a FastAPI/Starlette that cannot share an environment with Feast.
Processes per version mirror Seldon Core, where each version is its own `Model` with its
`replicas`: one MLServer process uses one core, so a version that must answer more than one
core's worth of requests runs several, and Envoy spreads its requests over them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shipway.paths import DEPLOY_DIR, PLATFORM_DIR
from shipway.processes import LOOPBACK, ManagedProcess, free_ports, require_binary
from shipway.serving.bundle import REPLICA_ENV, Bundle
from shipway.serving.prediction_spool import SPOOL_ENV

DEFAULT_MLSERVER = DEPLOY_DIR / "serving" / ".venv" / "bin" / "mlserver"


def mlserver_binary() -> str:
    return require_binary(
        os.environ.get("SHIPWAY_MLSERVER", str(DEFAULT_MLSERVER)),
        "MLServer",
        "run deploy/setup.sh, which builds the serving runtime in deploy/serving/.venv "
        "(or point SHIPWAY_MLSERVER at an mlserver executable)",
    )


@dataclass
class VersionRuntime:
    bundle: Bundle
    replica: int
    http_port: int
    metrics_port: int
    process: ManagedProcess

    @property
    def infer_url(self) -> str:
        b = self.bundle
        return f"http://{LOOPBACK}:{self.http_port}/v2/models/{b.model}/versions/{b.version}/infer"

    @property
    def metrics_target(self) -> str:
        return f"{LOOPBACK}:{self.metrics_port}"


def version_ready_url(bundle: Bundle, http_port: int) -> str:
    b = bundle
    return f"http://{LOOPBACK}:{http_port}/v2/models/{b.model}/versions/{b.version}/ready"


def start_mlserver(
    bundle: Bundle,
    log_dir: Path,
    own_group: bool = False,
    spool_dir: Path | None = None,
    replica: int = 0,
    ports: Sequence[int] | None = None,
    wait: bool = True,
) -> VersionRuntime:
    """Start MLServer on `ports` (HTTP, gRPC, metrics; free loopback ones by default), with
    `wait` until the version is ready; with `spool_dir`, every scored row goes to the
    prediction spool there."""
    http_port, grpc_port, metrics_port = free_ports(3) if ports is None else ports
    metrics_dir = bundle.path / ".metrics" / str(replica)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "MLSERVER_HOST": LOOPBACK,
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
        # Inference in the server process: one worker per version is plenty for one
        # machine, and it halves memory and start-up time.
        "MLSERVER_PARALLEL_WORKERS": "0",
        "MLSERVER_METRICS_DIR": str(metrics_dir),
        # MLServer's defaults are for development: debug (an access-log line per request, at
        # DEBUG level) and gzip. Single-row answers are a few hundred bytes, and Envoy counts
        # every request per version already.
        "MLSERVER_DEBUG": "false",
        "MLSERVER_GZIP_ENABLED": "false",
        # Shipway's runtime (shipway.serving.mlserver_runtime) and the numpy-only modules it
        # uses come from the source tree; nothing else of the platform is imported there.
        "PYTHONPATH": str(PLATFORM_DIR),
        REPLICA_ENV: str(replica),
    }
    if spool_dir is not None:
        env[SPOOL_ENV] = str(spool_dir)
    ready = version_ready_url(bundle, http_port)
    process = ManagedProcess(
        name=f"mlserver {bundle.model} v{bundle.version} replica {replica}",
        argv=[mlserver_binary(), "start", str(bundle.path)],
        log_path=log_dir / f"mlserver-{bundle.model}-{bundle.version}-{replica}.log",
        ready_url=ready,
        env=env,
        own_group=own_group,
    )
    process.start(wait=wait)
    return VersionRuntime(bundle, replica, http_port, metrics_port, process)


def start_replicas(
    bundle: Bundle, log_dir: Path, replicas: Sequence[int], spool_dir: Path | None = None
) -> list[VersionRuntime]:
    """Start these replicas of a version side by side and wait until all are ready; if one
    never is, none is left running."""
    ports = free_ports(3 * len(replicas))
    started: list[VersionRuntime] = []
    try:
        for i, replica in enumerate(replicas):
            started.append(
                start_mlserver(
                    bundle,
                    log_dir,
                    spool_dir=spool_dir,
                    replica=replica,
                    ports=ports[3 * i : 3 * i + 3],
                    wait=False,
                )
            )
        for runtime in started:
            runtime.process.wait_ready()
    except BaseException:
        for runtime in started:
            runtime.process.stop()
        raise
    return started
