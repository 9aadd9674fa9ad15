"""Operational figures of a model file: single-row predict latency in-process, and its size."""

from __future__ import annotations

import time

import numpy as np

from shipway.release.evaluation import Candidate
from shipway.release.report import Operational

WARMUP_ROWS = 20


def measure(version: Candidate, matrix: np.ndarray, rows: int = 300) -> Operational:
    """Predict one row at a time, as a server answering single requests does; percentiles of
    the wall time per call. The model is loaded the way MLServer's XGBoost runtime loads it."""
    model = version.load()
    predict = getattr(model, "predict_proba", model.predict)
    sample = matrix[: max(1, min(rows + WARMUP_ROWS, len(matrix)))]
    timings = []
    for i in range(len(sample)):
        row = sample[i : i + 1]
        start = time.perf_counter()
        predict(row)
        timings.append((time.perf_counter() - start) * 1000.0)
    measured = np.array(timings[WARMUP_ROWS:] or timings)
    return Operational(
        latency_p50_ms=float(np.percentile(measured, 50)),
        latency_p99_ms=float(np.percentile(measured, 99)),
        model_mb=version.model_file.stat().st_size / 1e6,
    )
