"""NannyML's side of `bench/estimation.py`, run in this folder's environment.

    python peer.py <data folder>

Reads `config.json`, `reference.parquet` and `analysis.parquet` from the folder, fits CBPE
(classification) or DLE (regression) on the reference, estimates the analysis in chunks of
`chunk_size` rows, and prints JSON: the estimate per chunk and metric, and the seconds spent
fitting and estimating.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import nannyml as nml
import pandas as pd


def main() -> None:
    folder = Path(sys.argv[1])
    config = json.loads((folder / "config.json").read_text())
    reference = pd.read_parquet(folder / "reference.parquet")
    analysis = pd.read_parquet(folder / "analysis.parquet").drop(columns=["label"])
    if config["problem"] == "classification":
        estimator = nml.CBPE(
            y_pred_proba="score",
            y_pred="decision",
            y_true="label",
            metrics=config["metrics"],
            chunk_size=config["chunk_size"],
            problem_type="classification_binary",
        )
    else:
        estimator = nml.DLE(
            feature_column_names=config["features"],
            y_pred="score",
            y_true="label",
            metrics=config["metrics"],
            chunk_size=config["chunk_size"],
        )
    began = time.perf_counter()
    estimator.fit(reference)
    fitted = time.perf_counter()
    results = estimator.estimate(analysis).filter(period="analysis").to_df()
    done = time.perf_counter()
    estimates = {
        metric: [float(v) for v in results[(metric, "value")]] for metric in config["metrics"]
    }
    print(json.dumps({"fit": fitted - began, "estimate": done - fitted, "values": estimates}))


if __name__ == "__main__":
    main()
