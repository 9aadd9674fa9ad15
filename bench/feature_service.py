"""Feature lookups, three ways in one run, on SQLite and on Redis: Shipway's feature service,
`feast serve` (Feast's own HTTP server), and the Feast SDK in-process. Same registry, same
online store, one entity per request, feature service customer_spend_v1 (one view, 7
features). fraud_model_v1 (two views and the on-demand transaction features) is measured too,
for Shipway's service and the SDK: `feast serve` cannot answer it from JSON (the request's
`event_timestamp` reaches the on-demand function as a string: "'str' object has no attribute
'hour'").

    .venv/bin/python bench/feature_service.py                     # 2000 requests, both stores
    .venv/bin/python bench/feature_service.py --stores sqlite --seconds 5

Latency: single-entity requests paced at `--rate` (open loop), the two servers interleaved
request by request, each request one write on a keep-alive connection; p50 / p99 / mean,
client side. The SDK row is
`get_online_features` timed in this process. Throughput: `--connections` connections for
`--seconds` per server, with `wrk` when it is on PATH (Debian's `wrk`), else an aiohttp client.
Both servers run one worker process; `feast serve` with its access log off and without its
every-1000-requests worker restart, so neither is measured doing something the other is not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from deltalake import write_deltalake
from serving_latency import saturate

from shipway import callers
from shipway.features.online_state import ONLINE_STORE_ENV, REDIS_ENV
from shipway.features.process import feature_server_process, redis_process
from shipway.features.store import feast_cli, feature_store, materialize_incremental, store_yaml
from shipway.paths import FEATURE_REPO_DIR, ShipwayHome
from shipway.processes import LOOPBACK, ManagedProcess, free_ports

SERVICE = "customer_spend_v1"
ON_DEMAND_SERVICE = "fraud_model_v1"
DAY = datetime(2026, 11, 1, tzinfo=UTC)


def lake(home: ShipwayHome, customers: int, merchants: int) -> None:
    rng = np.random.default_rng(0)
    write_deltalake(
        home.table("customer_features"),
        pd.DataFrame(
            {
                "customer_id": np.arange(1, customers + 1),
                "feature_date": [DAY.date()] * customers,
                "event_timestamp": [DAY] * customers,
                "customer_txn_count_1d": rng.integers(0, 5, customers),
                "customer_txn_count_7d": rng.integers(0, 30, customers),
                "customer_amount_avg_7d": rng.gamma(2, 20, customers),
                "customer_amount_avg_30d": rng.gamma(2, 20, customers),
                "customer_amount_max_30d": rng.gamma(4, 30, customers),
                "customer_night_share_30d": rng.random(customers),
                "customer_amount_sum_7d": rng.gamma(2, 200, customers),
                "customer_amount_sum_30d": rng.gamma(2, 800, customers),
                "customer_active_days_30d": rng.integers(0, 30, customers),
            }
        ),
    )
    write_deltalake(
        home.table("merchant_features"),
        pd.DataFrame(
            {
                "merchant_id": np.arange(1, merchants + 1),
                "feature_date": [DAY.date()] * merchants,
                "event_timestamp": [DAY] * merchants,
                "merchant_txn_count_7d": rng.integers(0, 500, merchants),
                "merchant_amount_avg_7d": rng.gamma(2, 20, merchants),
                "merchant_distinct_customers_7d": rng.integers(0, 300, merchants),
                "merchant_online_share_7d": rng.random(merchants),
            }
        ),
    )


def body(customer: int) -> dict[str, Any]:
    return {"feature_service": SERVICE, "entities": {"customer_id": [customer]}}


def on_demand_body(customer: int, merchant: int) -> dict[str, Any]:
    return {
        "feature_service": ON_DEMAND_SERVICE,
        "entities": {
            "customer_id": [customer],
            "merchant_id": [merchant],
            "event_timestamp": ["2026-11-01T14:30:00+00:00"],
            "amount": [42.5],
            "channel": ["online"],
            "merchant_category": ["travel"],
        },
    }


def feast_serve(home: ShipwayHome, port: int, log: Path) -> ManagedProcess:
    return ManagedProcess(
        "feast serve",
        [
            str(Path(sys.executable).with_name("feast")),
            "--chdir",
            str(FEATURE_REPO_DIR),
            "--feature-store-yaml",
            str(store_yaml(home)),
            "serve",
            "-h",
            LOOPBACK,
            "-p",
            str(port),
            "--no-access-log",
            "--max-requests",
            "100000000",
        ],
        log,
        ready_url=f"http://{LOOPBACK}:{port}/health",
        env={**home.environment(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )


class Connection:
    """A keep-alive HTTP/1.1 connection that sends each request in one write (as wrk does).

    httpx writes headers and body separately; the server then waits for the second segment,
    and that wait (about a millisecond here) would be measured as the server's."""

    def __init__(self, url: str) -> None:
        address, _, self.path = url.removeprefix("http://").partition("/")
        host, port = address.split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = address

    def post(self, payload: dict[str, Any]) -> bytes:
        body = json.dumps(payload).encode()
        self.sock.sendall(
            f"POST /{self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            rest += self.sock.recv(65536)
        if status != b"200":
            raise RuntimeError(f"{self.host}: {status.decode()} {rest[:200]!r}")
        return rest

    def close(self) -> None:
        self.sock.close()


def paced(urls: dict[str, str], bodies: list[dict[str, Any]], rate: float) -> dict[str, np.ndarray]:
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    connections = {name: Connection(url) for name, url in urls.items()}
    interval = 1.0 / rate
    start = time.perf_counter()
    step = 0
    try:
        for request in bodies:
            for name, connection in connections.items():
                wait = start + step * interval - time.perf_counter()
                step += 1
                if wait > 0:
                    time.sleep(wait)
                began = time.perf_counter()
                connection.post(request)
                latencies[name].append(time.perf_counter() - began)
    finally:
        for connection in connections.values():
            connection.close()
    return {name: np.asarray(v) * 1000 for name, v in latencies.items()}


def sdk_latency(home: ShipwayHome, bodies: list[dict[str, Any]]) -> np.ndarray:
    store = feature_store(home)
    service = store.get_feature_service(bodies[0]["feature_service"])
    out = []
    for request in bodies:
        entities = request["entities"]
        row = {k: v[0] for k, v in entities.items()}
        if "event_timestamp" in row:
            row["event_timestamp"] = datetime.fromisoformat(row["event_timestamp"])
        began = time.perf_counter()
        store.get_online_features(features=service, entity_rows=[row]).to_dict()
        out.append(time.perf_counter() - began)
    return np.asarray(out) * 1000


def run_store(kind: str, args: argparse.Namespace, root: Path) -> None:
    home = ShipwayHome(root / kind)
    os.environ.update(home.environment())
    os.environ[ONLINE_STORE_ENV] = kind
    processes: list[ManagedProcess] = []
    try:
        if kind == "redis":
            (port,) = free_ports(1)
            os.environ[REDIS_ENV] = f"{LOOPBACK}:{port}"
            processes.append(redis_process(home, port).start())
        lake(home, args.customers, args.merchants)
        feast_cli(home, "apply")
        began = time.perf_counter()
        materialize_incremental(home)
        loaded = time.perf_counter() - began
        ours_port, feast_port = free_ports(2)
        ours = feature_server_process(home, ours_port)
        ours.env.update(
            {k: os.environ[k] for k in (ONLINE_STORE_ENV, REDIS_ENV) if k in os.environ}
        )
        # `feast serve` asks for no key: neither does ours here, so both do the same work
        # (bench/serving_latency.py measures what keys and rate limits cost at the front door).
        ours.env[callers.REQUIRE_ENV] = "no"
        processes.append(ours.start())
        processes.append(feast_serve(home, feast_port, home.logs / "feast-serve.log").start())
        urls = {
            "Shipway feature service": f"http://{LOOPBACK}:{ours_port}/get-online-features",
            "feast serve": f"http://{LOOPBACK}:{feast_port}/get-online-features",
        }
        rng = np.random.default_rng(1)
        customers = rng.integers(1, args.customers + 1, args.requests)
        merchants = rng.integers(1, args.merchants + 1, args.requests)
        bodies = [body(int(c)) for c in customers]
        on_demand = [
            on_demand_body(int(c), int(m)) for c, m in zip(customers, merchants, strict=True)
        ]
        ours_on_demand = {f"Shipway, {ON_DEMAND_SERVICE}": urls["Shipway feature service"]}
        with httpx.Client(timeout=30.0) as http:
            answers = [http.post(url, json=bodies[0]).json() for url in urls.values()]
            assert answers[0]["results"], answers[0]
            # Feast orders a view's features as a set does; by name, the answers are equal.
            by_name = [
                dict(zip(a["metadata"]["feature_names"], a["results"], strict=True))
                for a in answers
            ]
            assert by_name[0] == by_name[1], answers
        paced(urls, bodies[:50], args.rate)
        results = paced(urls, bodies, args.rate)
        results.update(paced(ours_on_demand, on_demand, args.rate / 2))
        results["Feast SDK in-process"] = sdk_latency(home, bodies)
        results[f"SDK, {ON_DEMAND_SERVICE}"] = sdk_latency(home, on_demand)
        urls.update(ours_on_demand)
        saturation_body = {
            **dict.fromkeys(urls, bodies[0]),
            **dict.fromkeys(ours_on_demand, on_demand[0]),
        }
        print(
            f"\n{kind}: {args.customers} customers, {args.merchants} merchants, materialized "
            f"in {loaded:.1f}s"
        )
        print(f"{'target':<32} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} {'req/s sat.':>11}")
        for name, ms in results.items():
            rps = f"{'-':>11}"
            if name in urls:
                sat = saturate(urls[name], saturation_body[name], args.seconds, args.connections)
                rps = f"{sat:11.0f}"
            print(
                f"{name:<32} {np.percentile(ms, 50):7.2f} {np.percentile(ms, 99):7.2f} "
                f"{ms.mean():8.2f} {rps}",
                flush=True,
            )
    finally:
        for process in reversed(processes):
            process.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "redis"], help="(both)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (100)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per server (2000)")
    parser.add_argument("--seconds", type=int, default=10, help="saturation seconds (10)")
    parser.add_argument("--connections", type=int, default=16, help="saturation clients (16)")
    parser.add_argument("--customers", type=int, default=20_000, help="(20000)")
    parser.add_argument("--merchants", type=int, default=2_000, help="(2000)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="shipway-bench-features-"))
    print(
        f"{args.requests} single-entity lookups of {SERVICE} per server at {args.rate:.0f} req/s "
        f"overall; saturation {args.connections} connections x {args.seconds}s; state in {root}"
    )
    for kind in args.stores:
        run_store(kind, args, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
