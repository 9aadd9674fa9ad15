"""Seldon's inference server, MLServer, as a local process serving one model version.

MLServer runs from its own virtual environment (`deploy/serving/.venv`, built by
`deploy/setup.sh`): it pins a FastAPI/Starlette that cannot share an environment with Feast.
Processes per version mirror Seldon Core, where each version is its own `Model` with its
`replicas`: one MLServer process uses one core, so a version that must answer more than one
core's worth of requests runs several, and Envoy spreads its requests over them.

A model server the control plane starts answers on Unix sockets in a folder only this user can
enter (`shipway.serving.model_server`): nothing but Envoy and the control plane reaches its API.
Its metrics port (read-only, for Prometheus) stays on 127.0.0.1. It gets only the environment
it needs: never the serving token, a signing key or another credential of its parent. A
benchmark's standalone server may listen on a loopback port instead (`sockets=None`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from shipway.errors import ServiceError
from shipway.paths import DEPLOY_DIR, PLATFORM_DIR, ServingHome
from shipway.processes import LOOPBACK, ManagedProcess, free_ports, require_binary, safe_environment
from shipway.serving.access import ACCESS_ENV, ANSWERS_ENV
from shipway.serving.bundle import REPLICA_ENV, Bundle
from shipway.serving.prediction_spool import SPOOL_ENV

DEFAULT_MLSERVER = DEPLOY_DIR / "serving" / ".venv" / "bin" / "mlserver"
# Named here, read by `shipway.serving.model_server` in the serving environment.
HTTP_SOCKET_ENV = "SHIPWAY_HTTP_SOCKET"
GRPC_SOCKET_ENV = "SHIPWAY_GRPC_SOCKET"


HTTP_SOCKET = "-http.sock"


def grpc_socket(http_socket: Path) -> Path:
    """The gRPC server's socket of the model server whose REST API is on `http_socket`."""
    return http_socket.with_name(http_socket.name.removesuffix(HTTP_SOCKET) + "-grpc.sock")


def mlserver_binary() -> str:
    return require_binary(
        os.environ.get("SHIPWAY_MLSERVER", str(DEFAULT_MLSERVER)),
        "MLServer",
        "run deploy/setup.sh, which builds the serving runtime in deploy/serving/.venv "
        "(or point SHIPWAY_MLSERVER at an mlserver executable)",
    )


def socket_folder(serving_root: Path) -> Path:
    """The private folder of a serving home's model-server sockets (mode 0700, this user's).

    Under the system's temporary folder, not the serving home: a socket's path must stay under
    108 bytes. Named by the serving home, so a restarted control plane finds its servers."""
    digest = hashlib.sha256(str(serving_root.resolve()).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"shipway-{os.getuid()}-{digest}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    found = folder.lstat()
    if (
        not stat.S_ISDIR(found.st_mode)
        or found.st_uid != os.getuid()
        or stat.S_IMODE(found.st_mode) != 0o700
    ):
        raise ServiceError(
            f"model-server socket folder {folder} is not a folder of this user with mode 0700; "
            "someone else made it: remove it and start again"
        )
    return folder


Listen = Path | int
"""Where a model server's HTTP API answers: a Unix socket, or a loopback port (benchmarks)."""


@dataclass
class VersionRuntime:
    bundle: Bundle
    replica: int
    http: Listen
    metrics_port: int
    process: ManagedProcess
    grpc: Listen
    """Where its gRPC server answers: the socket beside `http`'s, or its own loopback port."""

    @property
    def metrics_target(self) -> str:
        return f"{LOOPBACK}:{self.metrics_port}"

    @property
    def port(self) -> int:
        """The loopback port it answers on (a benchmark's standalone server)."""
        if not isinstance(self.http, int):
            raise ServiceError(f"{self.process.name} listens on {self.http}, not a port")
        return self.http

    @property
    def socket(self) -> Path:
        """The Unix socket it answers on (what the control plane starts)."""
        if not isinstance(self.http, Path):
            raise ServiceError(f"{self.process.name} listens on port {self.http}, not a socket")
        return self.http


def client(listen: Listen, timeout: float = 2.0) -> httpx.Client:
    """An HTTP client of a model server's API, on its socket or its port."""
    if isinstance(listen, Path):
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(listen)), base_url="http://model", timeout=timeout
        )
    return httpx.Client(base_url=f"http://{LOOPBACK}:{listen}", timeout=timeout)


def ready_path(bundle: Bundle) -> str:
    return f"/v2/models/{bundle.model}/versions/{bundle.version}/ready"


def is_ready(bundle: Bundle, listen: Listen) -> bool:
    with contextlib.suppress(httpx.HTTPError), client(listen) as http:
        return http.get(ready_path(bundle)).status_code == 200
    return False


def _readiness(bundle: Bundle, listen: Listen) -> Callable[[], bool]:
    return lambda: is_ready(bundle, listen)


def start_mlserver(
    bundle: Bundle,
    log_dir: Path,
    metrics_dir: Path,
    own_group: bool = False,
    spool_dir: Path | None = None,
    replica: int = 0,
    sockets: Path | None = None,
    ports: Sequence[int] | None = None,
    wait: bool = True,
    serving: ServingHome | None = None,
) -> VersionRuntime:
    """Start one model server, with `wait` until the version is ready. With `sockets` (a
    folder from `socket_folder`) it answers there; without, on loopback `ports` (HTTP, gRPC,
    metrics; free ones by default). With `spool_dir`, every scored row goes to the prediction
    spool there. With `serving`, it reads callers' access levels and records the answers it
    gives in that serving home (`shipway.serving.access`). MLServer's metrics database lives in
    `metrics_dir`, never in the bundle."""
    http_port, grpc_port, metrics_port = free_ports(3) if ports is None else ports
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
    if serving is not None:
        env[ACCESS_ENV], env[ANSWERS_ENV] = str(serving.access), str(serving.answers)
    listen: Listen = http_port
    grpc: Listen = grpc_port
    argv = [mlserver_binary(), "start", str(bundle.path)]
    if sockets is not None:
        name = hashlib.sha256(f"{bundle.model}/{bundle.version}".encode()).hexdigest()[:12]
        listen = sockets / f"{name}-{replica}{HTTP_SOCKET}"
        grpc = grpc_socket(listen)
        for stale in (listen, grpc):
            stale.unlink(missing_ok=True)
        env[HTTP_SOCKET_ENV], env[GRPC_SOCKET_ENV] = str(listen), str(grpc)
        python = Path(mlserver_binary()).with_name("python")
        argv = [str(python), "-m", "shipway.serving.model_server", str(bundle.path)]
    process = ManagedProcess(
        name=f"mlserver {bundle.model} v{bundle.version} replica {replica}",
        argv=argv,
        log_path=log_dir / f"mlserver-{bundle.model}-{bundle.version}-{replica}.log",
        ready_probe=_readiness(bundle, listen),
        env={**safe_environment(), **env},
        inherit_environment=False,
        own_group=own_group,
    )
    process.start(wait=wait)
    return VersionRuntime(bundle, replica, listen, metrics_port, process, grpc)


def start_replicas(
    bundle: Bundle,
    log_dir: Path,
    metrics_root: Path,
    replicas: Sequence[int],
    sockets: Path | None = None,
    spool_dir: Path | None = None,
    serving: ServingHome | None = None,
) -> list[VersionRuntime]:
    """Start these replicas of a version side by side and wait until all are ready; if one
    never is, none is left running. Replica i keeps its MLServer metrics in
    `metrics_root/<i>`."""
    ports = free_ports(3 * len(replicas))
    started: list[VersionRuntime] = []
    try:
        for i, replica in enumerate(replicas):
            started.append(
                start_mlserver(
                    bundle,
                    log_dir,
                    metrics_root / str(replica),
                    spool_dir=spool_dir,
                    replica=replica,
                    sockets=sockets,
                    ports=ports[3 * i : 3 * i + 3],
                    wait=False,
                    serving=serving,
                )
            )
        for runtime in started:
            runtime.process.wait_ready()
    except BaseException:
        for runtime in started:
            runtime.process.stop()
        raise
    return started
