"""Port probes agree with the servers: a listener blocks a port, a TIME_WAIT leftover does not."""

from __future__ import annotations

import socket

import pytest

from shipway.errors import ServiceError
from shipway.processes import ensure_port_free, free_ports
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
