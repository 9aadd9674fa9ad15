"""The control plane's own rules, without model servers or Envoy: one control plane per serving
home, and changes checked and applied under one lock.

Envoy stands in here as `_UnstartedEnvoy`: the real data plane's files are written, and it
reports every configuration as applied at once (the integration tests in test_serving.py
run the real Envoy). Model servers are `_Process`es that run until stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shipway.callers import Caller
from shipway.errors import BadRequest, ShipwayError
from shipway.serving.bundle import Bundle
from shipway.serving.control_plane import ControlPlane, Replica, ServedModel, ServedVersion
from shipway.serving.dataplane import DataPlane, Route, Running
from shipway.stats.drift import DriftRules

PLATFORM = Path(__file__).resolve().parents[1] / "platform"


class _UnstartedEnvoy(DataPlane):
    """Writes Envoy's files; reports each generation as running (no Envoy process)."""

    def publish(self, routes: list[Route], callers: dict[str, Caller] | None) -> str:
        self.generation = super().publish(routes, callers)
        return self.generation

    def running(self) -> Running:
        return Running((self.generation,) * 3, rejected=0)


class _Process:
    def __init__(self) -> None:
        self.alive = True

    def running(self) -> bool:
        return self.alive

    def stop(self, timeout: float = 15.0) -> None:
        self.alive = False


def _plane(root: Path) -> ControlPlane:
    return ControlPlane(root, _UnstartedEnvoy(root / "envoy"), root / "logs", None)


def _served(root: Path, model: str, version: str) -> ServedVersion:
    bundle = Bundle(root / model / version, model, version, "classification", DriftRules())
    socket = root / f"{version}.sock"
    return ServedVersion(bundle, [Replica(0, socket, 0, 0, _Process())])


def test_a_traffic_change_and_an_undeploy_at_once_never_leave_a_model_without_traffic(
    tmp_path: Path,
) -> None:
    """v1 serves everything, v2 nothing. While a slow change (a deploy starting its model
    servers) holds the lock, one caller moves all traffic to v2 and another undeploys v2: each
    was valid when sent. Whichever runs second must be refused, never applied blindly."""
    plane = _plane(tmp_path)
    plane.models["m"] = ServedModel(
        "m", {"1": _served(tmp_path, "m", "1"), "2": _served(tmp_path, "m", "2")}, {"1": 100}
    )

    async def race() -> list[object]:
        await plane.lock.acquire()
        changes = [
            asyncio.ensure_future(plane.set_traffic("m", {"1": 0, "2": 100})),
            asyncio.ensure_future(plane.undeploy("m", "2")),
        ]
        await asyncio.sleep(0.05)
        plane.lock.release()
        return list(await asyncio.gather(*changes, return_exceptions=True))

    outcomes = asyncio.run(race())
    refused = [o for o in outcomes if isinstance(o, BadRequest)]
    assert len(refused) == 1, outcomes
    weights = plane.models["m"].weights
    assert sum(weights.values()) == 100, weights
    assert set(weights) <= set(plane.models["m"].versions)


def test_one_control_plane_per_serving_home_and_a_killed_one_leaves_no_lock(
    tmp_path: Path,
) -> None:
    first, second = _plane(tmp_path), _plane(tmp_path)
    first.claim()
    with pytest.raises(ShipwayError, match=rf"already has a control plane \(pid {os.getpid()}\)"):
        second.claim()
    asyncio.run(first.shutdown())
    second.claim()
    asyncio.run(second.shutdown())

    # A control plane killed with -9 holds nothing afterwards: the next one starts.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from shipway.files import Holder; "
            "Holder(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)",
            str(first.home.control_lock),
        ],
        env={**os.environ, "PYTHONPATH": str(PLATFORM)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(ShipwayError, match=rf"pid {holder.pid}"):
        _plane(tmp_path).claim()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    deadline = time.monotonic() + 5
    third = _plane(tmp_path)
    while True:
        try:
            third.claim()
            break
        except ShipwayError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    asyncio.run(third.shutdown())


def test_a_run_waits_out_a_restarting_control_plane_and_a_person_is_told_at_once() -> None:
    """A deployment step failed when the control plane restarted under it (the chaos soak
    kills it with -9). Runs and sensors now try again for their patience; the CLI's client
    has none and names the unreachable service at once."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from shipway.processes import free_port
    from shipway.serving.client import ServingClient

    class Status(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"m": {"weights": {"1": 100}}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ShipwayError, match="unreachable"):
        ServingClient(url, url, "token").status()

    def restart() -> None:
        time.sleep(1.0)
        server = HTTPServer(("127.0.0.1", port), Status)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    threading.Thread(target=restart, daemon=True).start()
    assert ServingClient(url, url, "token", patience=20).status() == {"m": {"weights": {"1": 100}}}
