"""The feature service and Redis as processes: what `shipway up`, the demo and tests start.

Neither is handed its parent's credentials: each starts from `safe_environment()` and the
variables it reads (the home's paths, which online store)."""

from __future__ import annotations

import os
import socket
import sys

from shipway.features.online_state import ONLINE_STORE_ENV, REDIS_ENV
from shipway.paths import ShipwayHome
from shipway.processes import LOOPBACK, ManagedProcess, require_binary, safe_environment

FEATURES_ENV = "SHIPWAY_FEATURES_URL"
REDIS_HINT = "install Redis: deploy/setup.sh does (Debian's redis-server)"


def feature_server_process(
    home: ShipwayHome, port: int, serving_url: str | None = None
) -> ManagedProcess:
    argv = [sys.executable, "-m", "shipway.cli", "features", "serve", "--port", str(port)]
    if serving_url:
        argv += ["--serving-url", serving_url]
    return ManagedProcess(
        name="feature service",
        argv=argv,
        log_path=home.logs / "feature-service.log",
        ready_url=f"http://{LOOPBACK}:{port}/metrics",
        env={**safe_environment(), **home.environment(), **online_store_environment()},
        inherit_environment=False,
    )


def online_store_environment() -> dict[str, str]:
    """Which online store, and where Redis is: what the feature service reads of the
    environment beyond the home's paths."""
    return {k: os.environ[k] for k in (ONLINE_STORE_ENV, REDIS_ENV) if k in os.environ}


def redis_binary() -> str:
    return require_binary(
        os.environ.get("SHIPWAY_REDIS_SERVER", "redis-server"), "Redis", REDIS_HINT
    )


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_process(home: ShipwayHome, port: int) -> ManagedProcess:
    """Redis on loopback, its data in the home: an append-only file, so a restart (or kill -9)
    keeps what was materialized; no RDB snapshots, no protected-mode surprises."""
    data = home.feast / "redis"
    data.mkdir(parents=True, exist_ok=True)
    return ManagedProcess(
        name="Redis online store",
        argv=[
            redis_binary(),
            "--bind",
            LOOPBACK,
            "--port",
            str(port),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
        ],
        log_path=home.logs / "redis.log",
        env=safe_environment(),
        inherit_environment=False,
        ready_probe=lambda: redis_ping(port),
        ready_timeout=30.0,
    )
