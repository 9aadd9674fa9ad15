"""Live traffic as a serving team sends it: look features up in Feast's online store, call
the model through the splitter."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shipway.features.store import MODEL_FEATURES, model_frame, online_features
from shipway.serving.client import ServingClient


@dataclass(frozen=True)
class TrafficReport:
    requests: int
    rows: int
    by_version: dict[str, int]
    mean_score: float
    p50_ms: float
    p99_ms: float


def send_transactions(
    client: ServingClient,
    store: object,
    transactions: pd.DataFrame,
    model: str,
    feature_service: str,
    batch_size: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> TrafficReport:
    """Score `transactions` in batches; each batch is one V2 request."""
    features = online_features(store, transactions, feature_service)
    rows = model_frame(transactions, features)[MODEL_FEATURES].to_numpy()
    versions: Counter[str] = Counter()
    scores: list[float] = []
    latencies: list[float] = []
    batches = range(0, len(rows), batch_size)
    for i, start in enumerate(batches, 1):
        batch = rows[start : start + batch_size]
        began = time.perf_counter()
        version, batch_scores = client.infer(model, batch, MODEL_FEATURES)
        latencies.append(time.perf_counter() - began)
        versions[version] += 1
        scores.extend(float(s) for s in batch_scores)
        if progress:
            progress(i, len(batches))
    return TrafficReport(
        requests=len(latencies),
        rows=len(rows),
        by_version=dict(versions),
        mean_score=float(np.mean(scores)) if scores else 0.0,
        p50_ms=float(np.percentile(latencies, 50) * 1000) if latencies else 0.0,
        p99_ms=float(np.percentile(latencies, 99) * 1000) if latencies else 0.0,
    )
