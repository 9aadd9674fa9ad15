"""Serving, six ways in one run on the same XGBoost model: Shipway's front door (Envoy →
MLServer with Shipway's runtime and its prediction log, as `shipway up` serves: each request
with a caller's API key, checked, and held to the caller's rate) to a version with one replica
and to one with `--replicas`, the same front door open (no keys, no rate limits: what they
cost), the first replica's MLServer direct, a second MLServer without the prediction log, and
`mlflow models serve`. With `--protocols`: instead, the Open Inference Protocol over REST and
over gRPC through the same keyed front door to the same version, 1 and 64 rows per request.

    .venv/bin/python bench/serving_latency.py                      # 50 req/s, 2000 requests
    .venv/bin/python bench/serving_latency.py --rate 100 --seconds 15 --replicas 3
    .venv/bin/python bench/serving_latency.py --protocols          # REST vs gRPC

Latency: single-row requests paced at `--rate` (open loop; a late request is sent late, not
skipped), the three targets interleaved request by request so they share the machine's state;
p50 / p99 / mean per target. Throughput: `--connections` concurrent connections for
`--seconds` per target, requests per second, with `wrk` when it is on PATH (Debian's `wrk`: the
client then costs little CPU), else an aiohttp client (which then is part of what is measured).
The one-replica front door and "direct" hit the same MLServer process, so their difference is
the proxy; the two direct targets differ only by the prediction log (the spool's cost on the
hot path). The replicated version is the same bundle with `replicas` set, as the control plane
serves it: Envoy's least-request balancer over the replicas' ports.

REST against gRPC (`--protocols`): both clients are Python (httpx and tritonclient's gRPC client
for the paced latencies, aiohttp and tritonclient's asyncio gRPC client for saturation), so the
two protocols pay a client of the same kind; wrk speaks no gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import mlflow.xgboost
import numpy as np
import pandas as pd
import xgboost as xgb

from shipway import callers
from shipway.processes import LOOPBACK, ManagedProcess, free_port, free_ports
from shipway.serving.bundle import Bundle, write_bundle
from shipway.serving.dataplane import MODEL_HEADER, VERSION_HEADER, DataPlane, Endpoint, Route
from shipway.serving.protocol import features_request
from shipway.serving.runtime import start_mlserver, start_replicas
from shipway.stats.drift import DriftRules, build_reference

FEATURES = [f"f{i}" for i in range(16)]


def train(dest: Path) -> tuple[xgb.XGBClassifier, pd.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(20_000, len(FEATURES))), columns=FEATURES)
    label = frame["f0"] + frame["f1"] * frame["f2"] + rng.normal(size=len(frame)) > 1.5
    model = xgb.XGBClassifier(n_estimators=150, max_depth=5, learning_rate=0.1)
    model.fit(frame.to_numpy(), label.astype(int).to_numpy())
    model.save_model(dest / "model.ubj")
    return model, frame


def bench_bundle(root: Path, frame: pd.DataFrame) -> Bundle:
    """The served bundle of the model `train` wrote to `root`."""
    return write_bundle(
        root / "bundle" / "1",
        "bench_model",
        "1",
        root / "model.ubj",
        build_reference(frame, FEATURES, 10),
        "binary_classification",
        DriftRules(max_rows=1000),
    )


def load_arguments(doc: str | None) -> argparse.ArgumentParser:
    """The load both serving benchmarks put on their targets."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (50)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per target (2000)")
    parser.add_argument("--seconds", type=int, default=10, help="saturation seconds (10)")
    parser.add_argument("--connections", type=int, default=16, help="saturation clients (16)")
    return parser


Target = tuple[str, str, Callable[[np.ndarray], dict[str, object]], dict[str, str]]


def paced(
    http: httpx.Client, targets: list[Target], rows: np.ndarray, rate: float
) -> dict[str, np.ndarray]:
    latencies: dict[str, list[float]] = {name: [] for name, _, _, _ in targets}
    interval = 1.0 / rate
    start = time.perf_counter()
    for i, row in enumerate(rows):
        for j, (name, url, body, headers) in enumerate(targets):
            due = start + (i * len(targets) + j) * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            began = time.perf_counter()
            http.post(url, json=body(row[None, :]), headers=headers).raise_for_status()
            latencies[name].append(time.perf_counter() - began)
    return {name: np.asarray(values) * 1000 for name, values in latencies.items()}


def saturate_wrk(
    url: str, body: dict[str, object], headers: dict[str, str], seconds: int, connections: int
) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
            + f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} failed requests under load")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert found, out
    return float(found.group(1))


async def _saturate_aiohttp(
    url: str, body: dict[str, object], extra: dict[str, str], seconds: int, connections: int
) -> float:
    done = 0
    stop = time.perf_counter() + seconds
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **extra}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    response.raise_for_status()
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.perf_counter() - began)


def saturate(
    url: str, body: dict[str, object], headers: dict[str, str], seconds: int, connections: int
) -> float:
    if shutil.which("wrk"):
        return saturate_wrk(url, body, headers, seconds, connections)
    return asyncio.run(_saturate_aiohttp(url, body, headers, seconds, connections))


def _grpc_inputs(rows: np.ndarray) -> list[Any]:
    import tritonclient.grpc as grpc_oip

    matrix = grpc_oip.InferInput("features", list(rows.shape), "FP64")
    matrix.set_data_from_numpy(np.ascontiguousarray(rows))
    return [matrix]


async def _saturate_grpc(
    host: str, headers: dict[str, str], rows: np.ndarray, seconds: int, connections: int
) -> float:
    import tritonclient.grpc.aio as grpc_aio

    client = grpc_aio.InferenceServerClient(host)
    inputs = _grpc_inputs(rows)
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await client.infer("bench_model", inputs, headers=headers)
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    await client.close()
    return done / elapsed


def compare_protocols(
    url: str, keyed: dict[str, str], rows: np.ndarray, args: argparse.Namespace
) -> None:
    """REST and gRPC through the same keyed front door to the same version, interleaved
    request by request at `--rate`, then each saturated; 1 and 64 rows per request."""
    import tritonclient.grpc as grpc_oip

    host = url.removeprefix("http://")
    grpc_headers = {"authorization": keyed["Authorization"], MODEL_HEADER: "bench_model"}
    grpc = grpc_oip.InferenceServerClient(host)
    infer = f"{url}/v2/models/bench_model/infer"
    print(f"{'protocol':<10} {'rows':>5} {'p50 ms':>7} {'p99 ms':>7} {'req/s sat.':>11}")
    with httpx.Client(timeout=30.0, headers=keyed) as http:
        for size in (1, 64):
            batches = [rows[(i * size) % (len(rows) - size) :][:size] for i in range(args.requests)]
            latencies: dict[str, list[float]] = {"REST": [], "gRPC": []}
            interval = 1.0 / args.rate
            start = time.perf_counter()
            for i, batch in enumerate(batches):
                for j, name in enumerate(latencies):
                    wait = start + (2 * i + j) * interval - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    began = time.perf_counter()
                    if name == "REST":
                        http.post(infer, json=features_request(batch, FEATURES)).raise_for_status()
                    else:
                        grpc.infer("bench_model", _grpc_inputs(batch), headers=grpc_headers)
                    latencies[name].append(time.perf_counter() - began)
            saturated = {
                "REST": asyncio.run(
                    _saturate_aiohttp(
                        infer,
                        features_request(batches[0], FEATURES),
                        keyed,
                        args.seconds,
                        args.connections,
                    )
                ),
                "gRPC": asyncio.run(
                    _saturate_grpc(host, grpc_headers, batches[0], args.seconds, args.connections)
                ),
            }
            for name, found in latencies.items():
                ms = np.asarray(found[50:]) * 1000  # the first 50 warm up
                print(
                    f"{name:<10} {size:>5} {np.percentile(ms, 50):7.2f} "
                    f"{np.percentile(ms, 99):7.2f} {saturated[name]:11.0f}",
                    flush=True,
                )
    grpc.close()


def main() -> int:
    parser = load_arguments(__doc__)
    parser.add_argument(
        "--replicas", type=int, default=2, help="replicas of the replicated version (2)"
    )
    parser.add_argument(
        "--protocols", action="store_true", help="REST against gRPC through the front door"
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="shipway-bench-"))
    model, frame = train(root)
    rows = frame.sample(args.requests, random_state=1, replace=True).to_numpy()
    bundle = bench_bundle(root, frame)
    print(
        f"model: 150 trees, depth 5, {len(FEATURES)} features; {args.requests} single-row "
        f"requests per target at {args.rate:.0f} req/s overall; saturation: "
        f"{args.connections} connections x {args.seconds}s; {args.replicas} replicas "
        f"({'wrk' if shutil.which('wrk') else 'aiohttp client'})",
        flush=True,
    )

    processes: list[ManagedProcess] = []
    try:
        # Loopback ports, not sockets: wrk measures MLServer direct too, and speaks only TCP.
        replicas = start_replicas(
            bundle,
            root / "logs",
            root / "metrics",
            list(range(args.replicas)),
            spool_dir=root / "predictions",
        )
        processes += [r.process for r in replicas]
        server = replicas[0]
        unlogged = start_mlserver(
            bundle, root / "logs-unlogged", root / "metrics-unlogged", own_group=True
        )
        processes.append(unlogged.process)
        front, stats, open_front, open_stats = free_ports(4)
        dataplane = DataPlane(root / "dataplane", front, stats)
        open_door = DataPlane(root / "dataplane-open", open_front, open_stats)
        processes.append(dataplane.process(root / "logs").start())
        processes.append(open_door.process(root / "logs-open").start())
        # One bundle, two served versions: "1" on the first replica alone, "n" on all of them
        # (picked with the version header, as a pinned caller would).
        ports: dict[str, list[Endpoint]] = {"1": [server.port], "n": [r.port for r in replicas]}
        grpc: dict[str, list[Endpoint]] = {"1": [server.grpc], "n": [r.grpc for r in replicas]}
        routes = [Route("bench_model", ports, {"1": 100}, grpc=grpc)]
        key = callers.new_key()
        # A rate no run reaches: every request pays the check, none is refused.
        bench = callers.Caller("bench", callers.digest(key), 1_000_000, 1_000_000)
        dataplane.publish(routes, callers={"bench": bench})
        open_door.publish(routes, callers=None)
        time.sleep(1.0)
        keyed = {"Authorization": callers.credentials("bench", key)}
        if args.protocols:
            compare_protocols(dataplane.url, keyed, rows, args)
            return 0

        mlflow_dir = root / "mlflow_model"
        mlflow.xgboost.save_model(
            model,
            str(mlflow_dir),
            model_format="ubj",
            pip_requirements=[f"xgboost=={xgb.__version__}"],
        )
        mlflow_port = free_port()
        mlflow_serve = ManagedProcess(
            "mlflow models serve",
            [
                str(Path(sys.executable).with_name("mlflow")),
                "models",
                "serve",
                "-m",
                str(mlflow_dir),
                "--env-manager",
                "local",
                "-h",
                LOOPBACK,
                "-p",
                str(mlflow_port),
            ],
            root / "logs" / "mlflow-serve.log",
            ready_url=f"http://{LOOPBACK}:{mlflow_port}/ping",
            # mlflow execs `uvicorn` by name: the environment's bin must be on PATH.
            env={"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        )
        processes.append(mlflow_serve.start())

        def oip(row: np.ndarray) -> dict[str, object]:
            return features_request(row, FEATURES)

        def mlflow_body(row: np.ndarray) -> dict[str, object]:
            return {"dataframe_split": {"columns": list(range(row.shape[1])), "data": row.tolist()}}

        infer = "/v2/models/bench_model/infer"
        pinned = {**keyed, VERSION_HEADER: "n"}
        direct = f"http://{LOOPBACK}:{server.port}{infer}"
        unlogged_url = f"http://{LOOPBACK}:{unlogged.port}{infer}"
        mlflow_url = f"http://{LOOPBACK}:{mlflow_port}/invocations"
        targets: list[Target] = [
            ("front door, 1 replica", f"{dataplane.url}{infer}", oip, keyed),
            (f"front door, {args.replicas} replicas", f"{dataplane.url}{infer}", oip, pinned),
            ("front door open, 1 replica", f"{open_door.url}{infer}", oip, {}),
            ("MLServer direct", direct, oip, {}),
            ("MLServer, no prediction log", unlogged_url, oip, {}),
            ("mlflow models serve", mlflow_url, mlflow_body, {}),
        ]
        with httpx.Client(timeout=30.0) as http:
            paced(http, targets, rows[:50], args.rate)  # warm-up
            results = paced(http, targets, rows, args.rate)
        print(f"{'target':<32} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} {'req/s sat.':>11}")
        for name, url, body, headers in targets:
            ms = results[name]
            throughput = saturate(url, body(rows[:1]), headers, args.seconds, args.connections)
            print(
                f"{name:<32} {np.percentile(ms, 50):7.2f} {np.percentile(ms, 99):7.2f} "
                f"{ms.mean():8.2f} {throughput:11.0f}",
                flush=True,
            )
    finally:
        for process in reversed(processes):
            process.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
