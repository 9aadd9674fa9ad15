"""Port probes agree with the servers: a listener blocks a port, a TIME_WAIT leftover does
not. A supervised process that dies is started again, later each time it keeps dying."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shipway.errors import ServiceError
from shipway.processes import (
    ManagedProcess,
    ServiceGroup,
    Supervisor,
    ensure_port_free,
    free_ports,
)
from shipway.stack import Ports, preflight


def _port_left_in_time_wait() -> int:
    """Close a served connection from the server side, which leaves its port in TIME_WAIT."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()
        client.recv(1)
        client.close()
    return port


def test_a_port_in_time_wait_is_free_for_a_server() -> None:
    port = _port_left_in_time_wait()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    ensure_port_free(port, "probe")


def test_a_listening_port_is_reported_with_the_service_name() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceError, match=f"probe: port 127.0.0.1:{port} is already in use"):
            ensure_port_free(port, "probe")


def test_free_ports_are_all_different() -> None:
    for _ in range(50):
        ports = free_ports(4)
        assert len(set(ports)) == 4


def test_two_services_on_one_port_are_refused_before_anything_starts() -> None:
    port = free_ports(1)[0]
    others = free_ports(3)
    with pytest.raises(
        ServiceError, match=f"MLflow server and Envoy front door are both given port {port}"
    ):
        preflight(
            Ports(
                mlflow=port,
                prometheus=others[0],
                serving=port,
                control=others[1],
                serving_stats=others[2],
            ),
            False,
        )


# --- supervision ------------------------------------------------------------------------------


def _sleeper(tmp_path: Path, name: str, argv: list[str] | None = None) -> ManagedProcess:
    return ManagedProcess(name, argv or ["sleep", "600"], tmp_path / f"{name}.log")


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def test_a_supervised_process_killed_with_9_is_started_again_reported_and_counted(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    restarts = tmp_path / "restarts.json"
    with ServiceGroup() as group:
        worker = group.start(_sleeper(tmp_path, "worker"))
        idle = group.start(_sleeper(tmp_path, "idle"))
        supervisor = group.supervise(said.append, restarts)
        assert json.loads(restarts.read_text()) == {"restarts": {}}
        first = worker.pid
        os.kill(first, signal.SIGKILL)
        _until(lambda: worker.running() and worker.pid != first)
        assert json.loads(restarts.read_text()) == {"restarts": {"worker": 1}}
        assert said[0].startswith("worker was killed by SIGKILL; starting it again in 1 s")
        assert said[1] == f"worker started again (pid {worker.pid})"
        # A process stopped on purpose stays stopped.
        idle.stop()
        time.sleep(3 * supervisor.poll)
        assert not idle.running() and supervisor.restarts["idle"] == 0
    # Stopping the group stops the supervisor first: nothing is started again after.
    assert not worker.running()
    time.sleep(2.0)
    assert not worker.running()


def test_a_process_that_keeps_dying_is_started_again_later_each_time(tmp_path: Path) -> None:
    said: list[str] = []
    crashing = _sleeper(tmp_path, "crashing", ["sh", "-c", "exit 3"])
    crashing.start(wait=False)
    supervisor = Supervisor([crashing], said.append, poll=0.02, backoff=(0.1, 0.4)).start()
    try:
        _until(lambda: supervisor.restarts["crashing"] >= 4)
    finally:
        supervisor.stop()
    waits = [float(x) for x in re.findall(r"again in ([\d.]+) s", " ".join(said))]
    assert waits[:4] == [0.1, 0.2, 0.4, 0.4], said
    assert "crashing exited with code 3" in said[0]
