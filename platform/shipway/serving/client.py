"""Client of serving: changes go to the control plane (with the serving token), requests go
through the data plane's front door, as a serving team's would."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from shipway.callers import DEFAULT_ACL, KEY_ENV, credentials
from shipway.errors import ServiceError, ShipwayError
from shipway.files import write_atomic
from shipway.names import SCORE
from shipway.paths import ServingHome
from shipway.processes import LOOPBACK, ManagedProcess, ensure_port_free
from shipway.serving.dataplane import DataPlane
from shipway.serving.protocol import features_request

log = logging.getLogger(__name__)

CONTROL_ENV = "SHIPWAY_CONTROL_URL"
SERVING_ENV = "SHIPWAY_SERVING_URL"
TOKEN_ENV = "SHIPWAY_SERVING_TOKEN"


class ServingClient:
    def __init__(
        self,
        control_url: str,
        url: str,
        token: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        patience: float = 0.0,
    ) -> None:
        """`api_key` (`<caller>:<key>`) is what requests to the front door present. With
        `patience`, a control plane that cannot be reached (restarting: a crash, kill -9, a
        deploy of its own) is tried again for that many seconds; every admin call is
        idempotent, so a retried one does what one call would (an undeploy whose first try
        took effect finds the version gone, which is what it asked for)."""
        self.patience = patience
        self.control_url = control_url.rstrip("/")
        self.url = url.rstrip("/")
        self._control = httpx.Client(
            base_url=self.control_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}"},
        )
        caller, _, key = (api_key or "").partition(":")
        self.api_headers = {"Authorization": credentials(caller, key)} if api_key else {}
        self._data = httpx.Client(base_url=self.url, timeout=timeout, headers=self.api_headers)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        http = self._data if path.startswith("/v2/") else self._control
        deadline = time.monotonic() + self.patience
        pause, retried = 0.25, False
        while True:
            try:
                response = http.request(method, path, json=body)
                break
            except httpx.TransportError as exc:
                if http is self._data or time.monotonic() + pause > deadline:
                    raise ServiceError(f"serving at {http.base_url} unreachable: {exc}") from None
                log.warning("serving at %s unreachable (%s); trying again", http.base_url, exc)
                time.sleep(pause)
                pause, retried = min(pause * 2, 4.0), True
            except httpx.HTTPError as exc:
                raise ServiceError(f"serving at {http.base_url} unreachable: {exc}") from None
        if retried and method == "DELETE" and response.status_code == 404:
            return {}
        if response.status_code >= 400:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError):
                message = response.text
            raise ShipwayError(f"serving {method} {path} -> {response.status_code}: {message}")
        return response.json()

    def deploy(self, model: str, version: str, bundle: Path) -> dict[str, Any]:
        body = {"bundle": str(bundle)}
        result: dict[str, Any] = self._call(
            "PUT", f"/admin/models/{model}/versions/{version}", body
        )
        return result

    def set_traffic(
        self, model: str, weights: dict[str, int], shadow: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PUT", f"/admin/models/{model}/traffic", {"weights": weights, "shadow": shadow}
        )
        return result

    def undeploy(self, model: str, version: str) -> None:
        self._call("DELETE", f"/admin/models/{model}/versions/{version}")

    def set_caller(
        self, caller: str, digest: str, rate: int, burst: int, acl: str = DEFAULT_ACL
    ) -> dict[str, Any]:
        """Let `caller` call with the key whose digest this is, at `rate` per second, with
        the access `acl`. The answer's `applied` says whether the front door runs it (and
        `reason`, why not)."""
        body = {"digest": digest, "rate": rate, "burst": burst, "acl": acl}
        result: dict[str, Any] = self._call("PUT", f"/admin/callers/{caller}", body)
        return result

    def remove_caller(self, caller: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/admin/callers/{caller}")
        return result

    def callers(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/admin/callers")["callers"]
        return found

    def endpoint(self, model: str) -> str:
        """Where callers score `model`: the front door's infer URL."""
        return f"{self.url}/v2/models/{model}/infer"

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/admin/models")
        return result

    def dataplane(self) -> dict[str, Any]:
        """Whether Envoy runs the configuration last published, and if not, why."""
        result: dict[str, Any] = self._call("GET", "/admin/dataplane")
        return result

    @classmethod
    def for_home(cls, home_serving: Path) -> ServingClient:
        """Serving as `shipway up` left it for people: $SHIPWAY_CONTROL_URL,
        $SHIPWAY_SERVING_URL, $SHIPWAY_SERVING_TOKEN and $SHIPWAY_API_KEY, else the owner-only
        endpoint file."""
        env = {k: os.environ.get(k) for k in (CONTROL_ENV, SERVING_ENV, TOKEN_ENV)}
        if all(env.values()):
            return cls(
                str(env[CONTROL_ENV]),
                str(env[SERVING_ENV]),
                str(env[TOKEN_ENV]),
                os.environ.get(KEY_ENV),
            )
        path = ServingHome(home_serving).endpoint
        if not path.exists():
            raise ServiceError(
                f"serving is not running for this home ({path} is missing): start `shipway up`,"
                f" or set {CONTROL_ENV}, {SERVING_ENV} and {TOKEN_ENV}"
            )
        saved = json.loads(path.read_text())
        return cls(saved["control_url"], saved["url"], saved["token"], saved.get("api_key"))

    def version_metrics(self, model: str, version: str, replica: int = 0) -> str:
        """The Prometheus text one of a version's model servers exports (scores, MLServer's;
        drift from replica 0, the one that judges it)."""
        port = self.status()[model]["versions"][version]["replicas"][replica]["metrics_port"]
        return httpx.get(f"http://{LOOPBACK}:{port}/metrics", timeout=10.0).text

    def infer(
        self,
        model: str,
        rows: np.ndarray,
        feature_names: list[str],
        row_keys: list[str] | None = None,
    ) -> tuple[str, Any]:
        """Scores for `rows` and the version that answered; `row_keys` (one per row) let the
        prediction log be joined with labels later."""
        answer = self._call(
            "POST", f"/v2/models/{model}/infer", features_request(rows, feature_names, row_keys)
        )
        output = next(o for o in answer["outputs"] if o["name"] == SCORE)
        return str(answer["model_version"]), np.asarray(output["data"])


def write_endpoint(
    home_serving: Path, control_url: str, url: str, token: str, api_key: str
) -> Path:
    """Where `shipway rollout` and people find serving: readable by the owner only (it holds
    the admin token and the platform caller's key)."""
    document = {"control_url": control_url, "url": url, "token": token, "api_key": api_key}
    return write_atomic(ServingHome(home_serving).endpoint, json.dumps(document), mode=0o600)


def control_plane_process(
    root: Path,
    dataplane: DataPlane,
    log_dir: Path,
    targets_dir: Path | None,
    port: int,
    lake: Path | None = None,
) -> ManagedProcess:
    """The serving control plane as its own process (what `shipway serve` runs)."""
    # A control plane is restarted right after one was killed (kill -9, a crash): its port
    # may take a moment to come free.
    ensure_port_free(port, "serving control plane", wait=10.0)
    argv = [
        sys.executable,
        "-m",
        "shipway.cli",
        "serve",
        "--port",
        str(port),
        "--root",
        str(root),
        "--dataplane-dir",
        str(dataplane.config_dir),
        "--log-dir",
        str(log_dir),
    ]
    if targets_dir is not None:
        argv += ["--targets-dir", str(targets_dir)]
    if lake is not None:
        argv += ["--lake-dir", str(lake)]
    return ManagedProcess(
        name="serving control plane",
        argv=argv,
        log_path=log_dir / "serving-control-plane.log",
        ready_url=f"http://{LOOPBACK}:{port}/health",
    )
