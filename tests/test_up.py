"""`shipway up`: every service answers on 127.0.0.1, Dagster shows the lineage, Ctrl-C stops
everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shipway.features.process import redis_ping
from shipway.paths import REPO_ROOT, ShipwayHome
from shipway.processes import free_ports
from shipway.stack import Ports, running_stack

pytestmark = pytest.mark.integration

LINEAGE_QUERY = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"


def _wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} not printed; got {''.join(seen)!r}")


def test_up_serves_every_component_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    # With Redis as the online store: `up` starts it too, and the feature service reads it.
    names = ("dagster", "mlflow", "prometheus", "serving", "serving-stats", "control", "features")
    *chosen, redis_port = free_ports(len(names) + 1)
    ports = dict(zip(names, chosen, strict=True))
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("shipway")), "up"]
        + [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
        + ["--redis-port", str(redis_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
        env={**_own_environment(tmp_path), "SHIPWAY_ONLINE_STORE": "redis"},
        start_new_session=True,
    )
    try:
        banner = _wait_for_line(proc, "Ctrl-C stops everything", timeout=300)
        for name, port in ports.items():
            assert f"http://127.0.0.1:{port}" in banner, name
        assert httpx.get(f"http://127.0.0.1:{ports['mlflow']}/health").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['prometheus']}/-/ready").status_code == 200
        front_door = f"http://127.0.0.1:{ports['serving']}"
        assert httpx.get(f"{front_door}/v2/health/live").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['control']}/health").status_code == 200
        assert redis_ping(redis_port)
        features = f"http://127.0.0.1:{ports['features']}"
        assert httpx.get(f"{features}/metrics").status_code == 200
        # A caller gets a key from `shipway callers add` (README's recipe); both doors take it
        # at once, and nothing but health and metrics opens without one.
        issued = subprocess.run(
            [str(Path(sys.executable).with_name("shipway")), "callers", "add", "scoring-team"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=_own_environment(tmp_path),
            check=True,
        ).stdout
        assert "serving applied it" in issued, issued
        key = re.search(r"SHIPWAY_API_KEY=(scoring-team):(\S+)", issued)
        assert key is not None, issued
        auth = httpx.BasicAuth(key.group(1), key.group(2))
        lookup = {"feature_service": "x"}
        assert httpx.post(f"{features}/get-online-features", json=lookup).status_code == 401
        infer = f"{front_door}/v2/models/nothing/infer"
        assert httpx.post(infer, json={}).status_code == 401
        assert httpx.post(infer, json={}, auth=auth).status_code == 404
        # Nothing applied yet: lookups say what to do first.
        empty = httpx.post(f"{features}/get-online-features", json=lookup, auth=auth)
        assert empty.status_code == 503 and "feature_views" in empty.json()["error"]
        # Prometheus's lifecycle API is off: nobody can stop the rollout's only evidence.
        quit_ = httpx.post(f"http://127.0.0.1:{ports['prometheus']}/-/quit")
        assert quit_.status_code == 403 and "Lifecycle API is not enabled" in quit_.text
        assert httpx.get(f"http://127.0.0.1:{ports['prometheus']}/-/ready").status_code == 200
        # Only the control plane (and Dagster, which deploys) hold the serving token: no other
        # service `up` starts was handed it.
        for name in ("features", "prometheus", "serving", "mlflow"):
            environ = _environ(_listening_pid(ports[name]))
            assert "SHIPWAY_SERVING_TOKEN" not in environ, name
        assert "SHIPWAY_SERVING_TOKEN" in _environ(_listening_pid(ports["control"]))
        nodes = _lineage(ports["dagster"])
        assert nodes["fraud_model_deployment"] == ("fraud_model", {"fraud_model"})
        assert nodes["fraud_model"] == ("fraud_model", {"fraud_model_training_set"})
        assert nodes["customer_spend"] == ("customer_spend", {"customer_spend_training_set"})
        assert nodes["stg_transactions"] == ("transform", {"raw_events"})
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped." in out
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "every service must stop on Ctrl-C"
    assert not redis_ping(redis_port), "Redis must stop on Ctrl-C"


def _own_environment(home: Path) -> dict[str, str]:
    """This process's environment without another stack's: a session fixture may have exported
    its serving, MLflow and Dagster addresses and credentials here, and `up` and the CLI must
    find this home's."""
    inherited = ("SHIPWAY_", "MLFLOW_", "DAGSTER_")
    kept = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    return {**kept, "SHIPWAY_HOME": str(home)}


def _lineage(port: int) -> dict[str, tuple[str, set[str]]]:
    # The code location loads in the background after the webserver is up.
    deadline = time.monotonic() + 180
    while True:
        body = httpx.post(
            f"http://127.0.0.1:{port}/graphql", json={"query": LINEAGE_QUERY}, timeout=30
        ).json()
        nodes = body.get("data", {}).get("assetNodes") or []
        if nodes or time.monotonic() > deadline:
            break
        time.sleep(2)
    return {
        "/".join(n["assetKey"]["path"]): (
            n["groupName"],
            {"/".join(d["path"]) for d in n["dependencyKeys"]},
        )
        for n in nodes
    }


def _listening_pid(port: int) -> int:
    """The process that listens on 127.0.0.1:`port`."""
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True)
    for line in listening.stdout.splitlines():
        if line.split()[3] == f"127.0.0.1:{port}":
            return int(line.split("pid=", 1)[1].split(",", 1)[0])
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)
    return {k: v for k, v in pairs}


def test_every_service_killed_with_9_comes_back_by_itself_and_is_counted(tmp_path: Path) -> None:
    """As systemd or Kubernetes would: the kernel's OOM killer took the feature service down
    at review and nothing brought it back. Serving and features only (no MLflow, no Dagster)."""
    said: list[str] = []
    home = ShipwayHome(tmp_path / "home")
    with running_stack(home, Ports.free(), with_mlflow=False, report=said.append) as stack:
        features = f"{stack.features_url}/metrics"
        door = f"{stack.serving_url}/v2/health/live"
        control = f"{stack.control_url}/health"
        for name, url in (
            ("feature service", features),
            ("Envoy data plane", door),
            ("serving control plane", control),
        ):
            process = stack.group.named(name)
            killed = process.pid
            os.kill(killed, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while not (process.running() and process.pid != killed and _answers(url)):
                assert time.monotonic() < deadline, f"{name} did not come back: {said}"
                time.sleep(0.25)
            assert f"{name} was killed by SIGKILL; starting it again in 1 s" in said[-2]
        restarts = httpx.get(f"{stack.control_url}/metrics").text
        for name in ("feature service", "Envoy data plane", "serving control plane"):
            assert f'shipway_service_restarts_total{{service="{name}"}} 1.0' in restarts, name
        # The front door came back with its keys: no caller, no entry.
        infer = f"{stack.serving_url}/v2/models/nothing/infer"
        assert httpx.post(infer, json={}).status_code == 401
        assert httpx.post(infer, json={}, headers=stack.serving().api_headers).status_code == 404


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
