"""Operational figures of a model file: what a single-row predict costs in CPU, and its size.

A release gate's verdict must not depend on the neighbours: a wall-clock p99 of the same model
read 25.9 ms on a quiet machine and 35.9 ms while another process loaded it (a good model
failed a fresh-clone CI run). CPU time of the predicting thread, with XGBoost on one thread
(as serving runs it), counts only the model's own work; each row is predicted `ROUNDS` times
and its cheapest counts (noise only ever adds), which leaves out most cache and frequency
noise too. Wall-clock latency is judged where it is measured for real: in serving, by the
rollout's checks and the alerts (Prometheus).
"""

from __future__ import annotations

import time

import numpy as np
import xgboost as xgb

from shipway.release.evaluation import Candidate
from shipway.release.report import Operational

WARMUP_ROWS = 20
ROUNDS = 5


def measure(version: Candidate, matrix: np.ndarray, rows: int = 300) -> Operational:
    """Predict one row at a time, as the serving runtime answers a single request
    (`Booster.inplace_predict` on one thread, `shipway.serving.mlserver_runtime`); percentiles
    of the thread's CPU time per row, each row's cheapest of `ROUNDS` calls."""
    booster = xgb.Booster()
    booster.load_model(str(version.model_file))
    booster.set_param({"nthread": 1})
    sample = matrix[: max(1, min(rows + WARMUP_ROWS, len(matrix)))]
    timings = np.empty((ROUNDS, len(sample)))
    for r in range(ROUNDS):
        for i in range(len(sample)):
            row = sample[i : i + 1]
            start = time.thread_time()
            booster.inplace_predict(row)
            timings[r, i] = (time.thread_time() - start) * 1000.0
    # A row costs the model the same every time; noise only ever adds: each row's cheapest.
    cost = timings[:, WARMUP_ROWS:].min(axis=0) if len(sample) > WARMUP_ROWS else timings.min(0)
    return Operational(
        predict_cpu_p50_ms=float(np.percentile(cost, 50)),
        predict_cpu_p99_ms=float(np.percentile(cost, 99)),
        model_mb=version.model_file.stat().st_size / 1e6,
    )
