"""Operational figures of a model file: single-row predict latency in-process, and its size."""

from __future__ import annotations

import time

import numpy as np
import xgboost as xgb

from shipway.release.evaluation import Candidate
from shipway.release.report import Operational

WARMUP_ROWS = 20
ROUNDS = 3


def measure(version: Candidate, matrix: np.ndarray, rows: int = 300) -> Operational:
    """Predict one row at a time, as the serving runtime answers a single request
    (`Booster.inplace_predict`, `shipway.serving.mlserver_runtime`); percentiles of the wall
    time per call. The model's latency is the same in every round while the machine's noise
    (another process taking the CPU) is not: of `ROUNDS` rounds, the quietest counts."""
    booster = xgb.Booster()
    booster.load_model(str(version.model_file))
    sample = matrix[: max(1, min(rows + WARMUP_ROWS, len(matrix)))]
    rounds = []
    for _ in range(ROUNDS):
        timings = []
        for i in range(len(sample)):
            row = sample[i : i + 1]
            start = time.perf_counter()
            booster.inplace_predict(row)
            timings.append((time.perf_counter() - start) * 1000.0)
        rounds.append(np.array(timings[WARMUP_ROWS:] or timings))
    quietest = min(rounds, key=lambda r: float(np.percentile(r, 99)))
    return Operational(
        latency_p50_ms=float(np.percentile(quietest, 50)),
        latency_p99_ms=float(np.percentile(quietest, 99)),
        model_mb=version.model_file.stat().st_size / 1e6,
    )
