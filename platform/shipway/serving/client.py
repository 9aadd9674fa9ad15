"""Client of the serving controller: what assets, the demo and tests use to deploy and call."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from shipway.errors import ServiceError, ShipwayError
from shipway.processes import LOOPBACK, ManagedProcess, ensure_port_free
from shipway.serving.protocol import SCORE_OUTPUT, features_request


class ServingClient:
    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ServiceError(f"serving controller at {self.url} unreachable: {exc}") from None
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

    def set_traffic(self, model: str, weights: dict[str, int]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PUT", f"/admin/models/{model}/traffic", {"weights": weights}
        )
        return result

    def undeploy(self, model: str, version: str) -> None:
        self._call("DELETE", f"/admin/models/{model}/versions/{version}")

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/admin/models")
        return result

    def infer(self, model: str, rows: np.ndarray, feature_names: list[str]) -> tuple[str, Any]:
        """Scores for `rows` and the version that answered."""
        answer = self._call(
            "POST", f"/v2/models/{model}/infer", features_request(rows, feature_names)
        )
        output = next(o for o in answer["outputs"] if o["name"] == SCORE_OUTPUT)
        return str(answer["model_version"]), np.asarray(output["data"])


def serving_process(port: int, log_dir: Path, targets_dir: Path | None) -> ManagedProcess:
    """The serving controller as its own process (what `shipway serve` runs)."""
    ensure_port_free(port, "serving controller")
    argv = [
        sys.executable,
        "-m",
        "shipway.cli",
        "serve",
        "--port",
        str(port),
        "--log-dir",
        str(log_dir),
    ]
    if targets_dir is not None:
        argv += ["--targets-dir", str(targets_dir)]
    return ManagedProcess(
        name="serving controller",
        argv=argv,
        log_path=log_dir / "serving-controller.log",
        ready_url=f"http://{LOOPBACK}:{port}/health",
    )
