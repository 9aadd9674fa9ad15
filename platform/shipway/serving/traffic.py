"""Live traffic as a serving team sends it: look the model's feature vector up in Feast (its
feature service: online features plus on-demand ones from the request), call the model
through the splitter."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shipway.features.service import ServiceSpec
from shipway.features.store import online_features
from shipway.serving.client import ServingClient


@dataclass(frozen=True)
class TrafficReport:
    requests: int
    rows: int
    by_version: dict[str, int]
    mean_score: float
    p50_ms: float
    p99_ms: float


def send_rows(
    client: ServingClient,
    store: object,
    rows: pd.DataFrame,
    model: str,
    spec: ServiceSpec,
    batch_size: int = 20,
    progress: Callable[[int, int], None] | None = None,
    row_keys: list[str] | None = None,
) -> TrafficReport:
    """Score `rows` (join keys and request fields) in batches; each batch is one V2 request,
    with its rows' `row_keys` when given (`DeclaredModel.prediction_keys`)."""
    vectors = online_features(store, rows, spec).to_numpy()
    versions: Counter[str] = Counter()
    scores: list[float] = []
    latencies: list[float] = []
    batches = range(0, len(vectors), batch_size)
    for i, start in enumerate(batches, 1):
        batch = vectors[start : start + batch_size]
        began = time.perf_counter()
        keys = row_keys[start : start + batch_size] if row_keys is not None else None
        version, batch_scores = client.infer(model, batch, spec.feature_names, keys)
        latencies.append(time.perf_counter() - began)
        versions[version] += 1
        scores.extend(float(s) for s in batch_scores)
        if progress:
            progress(i, len(batches))
    return TrafficReport(
        requests=len(latencies),
        rows=len(vectors),
        by_version=dict(versions),
        mean_score=float(np.mean(scores)) if scores else 0.0,
        p50_ms=float(np.percentile(latencies, 50) * 1000) if latencies else 0.0,
        p99_ms=float(np.percentile(latencies, 99) * 1000) if latencies else 0.0,
    )
