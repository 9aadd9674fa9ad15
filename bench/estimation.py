"""Quality estimated before labels: Shipway's CBPE and DLE beside NannyML's, on the same data.

    .venv/bin/python bench/estimation.py                      # 2,000 events a day
    .venv/bin/python bench/estimation.py --events-per-day 10000

The data is the platform's own event generator. Two XGBoost models are trained on the first 30
baseline days, on the request features (amount, hour, night, online, merchant category; the
regressor forecasts the amount from the others and the customer and merchant): a fraud
classifier (`is_fraud`) and an amount regressor. The next 10 days are the reference: the
models' validation rows, where both sides fit their estimators (Shipway's
`shipway.models.estimation`, NannyML 0.13.1's CBPE and DLE in `bench/nannyml/`, its own
environment: it needs pandas < 3 and xgboost < 3). The analysis is 20 more baseline days, then
20 days of the `drift` scenario (amounts x2.2, more online, night, electronics and travel).
Each side estimates every chunk of 5 days without its labels; the labels then give the
realized value. Printed per problem: each side's mean absolute estimation error per metric,
on baseline and drifted chunks apart, how far the two sides' estimates are from each other,
and the seconds each spent fitting and estimating.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from shipway.data.events import CATEGORIES, generate_events
from shipway.models.estimation import fit_estimator
from shipway.stats.metrics import metric_functions, point_values

PEER = Path(__file__).parent / "nannyml"
UV = Path(__file__).parents[1] / ".tools" / "bin" / "uv"
START = date(2026, 6, 1)
CHUNK_DAYS = 5
DECISION_THRESHOLD = 0.1  # fraud_model's: NannyML's CBPE needs a decision column
# Shipway's metric names, NannyML's beside them.
METRICS = {
    "classification": {"roc_auc": "roc_auc", "pr_auc": "average_precision"},
    "regression": {"mae": "mae", "rmse": "rmse"},
}


def features(events: pd.DataFrame, problem: str) -> pd.DataFrame:
    hour = events["event_timestamp"].dt.hour
    found = pd.DataFrame(
        {
            "hour": hour.astype(float),
            "night": (hour < 6).astype(float),
            "online": (events["channel"] == "online").astype(float),
            "category": events["merchant_category"].map(CATEGORIES.index).astype(float),
        }
    )
    if problem == "classification":
        return found.assign(amount=events["amount"].astype(float))
    return found.assign(
        customer=events["customer_id"].astype(float),
        merchant=events["merchant_id"].astype(float),
    )


def label(events: pd.DataFrame, problem: str) -> np.ndarray:
    column = "is_fraud" if problem == "classification" else "amount"
    return events[column].to_numpy(float)


def trained(problem: str, train: pd.DataFrame) -> tuple[xgb.XGBModel, list[str]]:
    x = features(train, problem)
    model: xgb.XGBModel = (
        xgb.XGBClassifier(n_estimators=150, max_depth=5, random_state=7)
        if problem == "classification"
        else xgb.XGBRegressor(n_estimators=150, max_depth=5, random_state=7)
    )
    model.fit(x.to_numpy(), label(train, problem))
    return model, list(x.columns)


def scored(model: xgb.XGBModel, problem: str, events: pd.DataFrame) -> pd.DataFrame:
    """The events' features, the model's score and decision, and the label."""
    frame = features(events, problem).reset_index(drop=True)
    x = frame.to_numpy()
    if isinstance(model, xgb.XGBClassifier):
        frame["score"] = model.predict_proba(x)[:, 1]
    else:
        frame["score"] = model.predict(x)
    frame["label"] = label(events, problem)
    frame["decision"] = (frame["score"] >= DECISION_THRESHOLD).astype(int)
    return frame


def shipway_side(
    problem: str, reference: pd.DataFrame, chunks: list[pd.DataFrame], names: list[str]
) -> tuple[dict[str, list[float]], float, float]:
    kind = "binary_classification" if problem == "classification" else "regression"
    began = time.perf_counter()
    estimator = fit_estimator(
        kind,
        reference[names].to_numpy(),
        reference["score"].to_numpy(),
        reference["label"].to_numpy(),
        seed=7,
    )
    fitted = time.perf_counter()
    found: dict[str, list[float]] = {m: [] for m in METRICS[problem]}
    for chunk in chunks:
        values = estimator.estimate(chunk[names].to_numpy(), chunk["score"].to_numpy())
        for metric in found:
            found[metric].append(values[metric])
    return found, fitted - began, time.perf_counter() - fitted


def nannyml_side(folder: Path) -> dict[str, object]:
    python = PEER / ".venv" / "bin" / "python"
    if not python.exists():
        print("syncing NannyML's environment from bench/nannyml/uv.lock ...", flush=True)
        subprocess.run([str(UV), "sync", "--frozen", "--quiet", "--project", str(PEER)], check=True)
    done = subprocess.run(
        [str(python), str(PEER / "peer.py"), str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events-per-day", type=int, default=2000)
    args = parser.parse_args()
    per_day = args.events_per_day
    print(f"generating 80 days of {per_day:,} events ...", flush=True)
    baseline = generate_events(START, 60, events_per_day=per_day)
    drifted = generate_events(START + timedelta(days=60), 20, "drift", events_per_day=per_day)
    train, reference_events = (
        baseline.iloc[: 30 * per_day],
        baseline.iloc[30 * per_day : 40 * per_day],
    )
    analysis_events = pd.concat([baseline.iloc[40 * per_day :], drifted], ignore_index=True)
    chunk_rows = CHUNK_DAYS * per_day
    for problem, metrics in METRICS.items():
        model, names = trained(problem, train)
        frames = {
            "reference": scored(model, problem, reference_events),
            "analysis": scored(model, problem, analysis_events),
        }
        analysis = frames["analysis"]
        chunks = [analysis.iloc[i : i + chunk_rows] for i in range(0, len(analysis), chunk_rows)]
        kind = "binary_classification" if problem == "classification" else "regression"
        realized = {
            m: [
                point_values(
                    metric_functions(kind, c["label"].to_numpy(), c["score"].to_numpy(), None),
                    len(c),
                )[m]
                for c in chunks
            ]
            for m in metrics
        }
        print(f"\n{problem}: {len(chunks)} chunks of {chunk_rows:,} rows ...", flush=True)
        ours, our_fit, our_estimate = shipway_side(problem, frames["reference"], chunks, names)
        with tempfile.TemporaryDirectory(prefix="shipway-bench-estimation-") as tmp:
            folder = Path(tmp)
            frames["reference"].to_parquet(folder / "reference.parquet")
            analysis.to_parquet(folder / "analysis.parquet")
            config = {
                "problem": problem,
                "metrics": list(metrics.values()),
                "chunk_size": chunk_rows,
                "features": names,
            }
            (folder / "config.json").write_text(json.dumps(config))
            peer = nannyml_side(folder)
        theirs_all = peer["values"]
        assert isinstance(theirs_all, dict)
        half = len(chunks) // 2
        print(
            f"{'metric':<8} {'chunks':<9} {'Shipway |err|':>14} {'NannyML |err|':>14} "
            f"{'|Shipway - NannyML|':>20}"
        )
        for ours_name, their_name in metrics.items():
            mine = np.asarray(ours[ours_name])
            theirs = np.asarray(theirs_all[their_name])
            truth = np.asarray(realized[ours_name])
            stretches = (("baseline", slice(0, half)), ("drift", slice(half, None)))
            for stretch, part in stretches:
                print(
                    f"{ours_name:<8} {stretch:<9} "
                    f"{np.mean(np.abs(mine[part] - truth[part])):>14.4f} "
                    f"{np.mean(np.abs(theirs[part] - truth[part])):>14.4f} "
                    f"{np.mean(np.abs(mine[part] - theirs[part])):>20.4f}"
                )
            print(
                f"{'':<8} {'values':<9} realized {np.round(truth, 3).tolist()}\n"
                f"{'':<8} {'':<9} Shipway  {np.round(mine, 3).tolist()}\n"
                f"{'':<8} {'':<9} NannyML  {np.round(theirs, 3).tolist()}"
            )
        print(
            f"seconds: Shipway fit {our_fit:.2f}, estimate {our_estimate:.2f}; NannyML fit "
            f"{float(peer['fit']):.2f}, estimate {float(peer['estimate']):.2f}"  # type: ignore[arg-type]
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
