"""Serving latency at a fixed request rate: Shipway's splitter vs MLServer direct vs
`mlflow models serve`, on the same XGBoost model (single-row V2 / MLflow requests).

    .venv/bin/python bench/serving_latency.py --rate 50 --requests 1000

Prints p50 / p99 / mean latency per target. Requests are paced (open loop at `--rate`); a
request that cannot keep up is sent late, not skipped, and its latency counts from its send.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import mlflow.xgboost
import numpy as np
import pandas as pd
import xgboost as xgb

from shipway.monitoring.drift import build_reference
from shipway.processes import LOOPBACK, ManagedProcess, free_port
from shipway.serving.bundle import write_bundle
from shipway.serving.client import ServingClient, serving_process
from shipway.serving.protocol import features_request, mlserver_request
from shipway.serving.runtime import start_mlserver

FEATURES = [f"f{i}" for i in range(16)]


def train(dest: Path) -> tuple[xgb.XGBClassifier, pd.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(20_000, len(FEATURES))), columns=FEATURES)
    label = frame["f0"] + frame["f1"] * frame["f2"] + rng.normal(size=len(frame)) > 1.5
    model = xgb.XGBClassifier(n_estimators=150, max_depth=5, learning_rate=0.1)
    model.fit(frame.to_numpy(), label.astype(int).to_numpy())
    model.save_model(dest / "model.ubj")
    return model, frame


def paced(send: Callable[[np.ndarray], None], rows: np.ndarray, rate: float) -> np.ndarray:
    latencies = []
    interval = 1.0 / rate
    start = time.perf_counter()
    for i, row in enumerate(rows):
        due = start + i * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        began = time.perf_counter()
        send(row[None, :])
        latencies.append(time.perf_counter() - began)
    return np.asarray(latencies) * 1000


def report(name: str, ms: np.ndarray) -> None:
    print(
        f"{name:<28} p50 {np.percentile(ms, 50):6.2f} ms   p99 {np.percentile(ms, 99):6.2f} ms"
        f"   mean {ms.mean():6.2f} ms   n={len(ms)}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (50)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per target (1000)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="shipway-bench-"))
    model, frame = train(root)
    rows = frame.sample(args.requests, random_state=1, replace=True).to_numpy()
    bundle = write_bundle(
        root / "bundle" / "1",
        "bench_model",
        "1",
        root / "model.ubj",
        build_reference(frame, FEATURES, 10),
        "binary_classification",
        1000,
    )
    print(
        f"model: 150 trees, depth 5, {len(FEATURES)} features; {args.requests} single-row "
        f"requests per target at {args.rate:.0f} req/s",
        flush=True,
    )

    http = httpx.Client(timeout=30.0)
    processes: list[ManagedProcess] = []
    try:
        port = free_port()
        splitter = serving_process(port, root / "logs", None)
        splitter.start()
        processes.append(splitter)
        client = ServingClient(f"http://{LOOPBACK}:{port}")
        client.deploy("bench_model", "1", bundle.path)
        client.set_traffic("bench_model", {"1": 100})
        direct = start_mlserver(bundle, root / "logs", own_group=True)
        processes.append(direct.process)

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
        mlflow_serve.start()
        processes.append(mlflow_serve)

        def via_splitter(row: np.ndarray) -> None:
            http.post(
                f"{client.url}/v2/models/bench_model/infer", json=features_request(row, FEATURES)
            ).raise_for_status()

        def via_mlserver(row: np.ndarray) -> None:
            http.post(
                direct.infer_url, json=mlserver_request(row, bundle.mlserver_output)
            ).raise_for_status()

        def via_mlflow(row: np.ndarray) -> None:
            body = {"dataframe_split": {"columns": list(range(row.shape[1])), "data": row.tolist()}}
            http.post(f"http://{LOOPBACK}:{mlflow_port}/invocations", json=body).raise_for_status()

        for name, send in (
            ("shipway splitter -> MLServer", via_splitter),
            ("MLServer direct", via_mlserver),
            ("mlflow models serve", via_mlflow),
        ):
            for row in rows[:20]:
                send(row[None, :])
            report(name, paced(send, rows, args.rate))
    finally:
        for process in reversed(processes):
            process.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
