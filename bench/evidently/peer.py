"""Evidently's DataDriftPreset on the benchmark's data, timed; run by `bench/drift.py` in this
folder's environment. Prints one JSON line: seconds and each column's drift value per method.

    python peer.py DATA_DIR METHOD [METHOD ...]     # METHOD: default, ks+chisquare, psi
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset


def _preset(method: str, psi_threshold: float) -> DataDriftPreset:
    if method == "default":
        return DataDriftPreset()
    if method == "ks+chisquare":
        return DataDriftPreset(num_method="ks", cat_method="chisquare")
    if method == "psi":
        return DataDriftPreset(method="psi", threshold=psi_threshold)
    raise SystemExit(f"unknown method {method!r}: default, ks+chisquare or psi")


def _values(snapshot: Any) -> dict[str, float]:
    """Each column's drift value (p-value or distance) from the snapshot's ValueDrift metrics."""
    found: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            found[str(config["column"])] = float(metric["value"])
    return found


def main() -> None:
    data, methods = Path(sys.argv[1]), sys.argv[2:]
    meta = json.loads((data / "columns.json").read_text())
    reference = pd.read_parquet(data / "reference.parquet")
    current = pd.read_parquet(data / "current.parquet")
    definition = DataDefinition(
        numerical_columns=meta["numeric"], categorical_columns=meta["categorical"]
    )
    out: dict[str, Any] = {}
    for method in methods:
        started = time.perf_counter()
        report = Report([_preset(method, float(meta["psi_threshold"]))])
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        values = _values(snapshot)
        out[method] = {"seconds": time.perf_counter() - started, "values": values}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
