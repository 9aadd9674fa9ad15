"""Scoring a request's rows: XGBoost's `Booster.inplace_predict` against Shipway's tree walk
(`shipway.serving.trees`), on the model `bench/serving_latency.py` serves (150 trees, depth 5,
16 features), one XGBoost thread as in the model server.

    .venv/bin/python bench/tree_predict.py
    .venv/bin/python bench/tree_predict.py --trees 400 --depth 8

Prints microseconds per call (median of `--repeat` timings of `--calls` calls) by rows per call,
and the largest difference between the two scores; then what explaining rows costs (TreeSHAP,
`shipway.serving.explanations.contributions`): a request asking for contributions, and the
model server's attribution sample per scrape (`ATTRIBUTION_ROWS_PER_SCRAPE` rows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import xgboost as xgb

from shipway.serving.explanations import ATTRIBUTION_ROWS_PER_SCRAPE, contributions
from shipway.serving.trees import MAX_TREE_ROWS, Scorer


def per_call_us(
    fn: Callable[[np.ndarray], object], rows: np.ndarray, calls: int, repeat: int
) -> float:
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        for _ in range(calls):
            fn(rows)
        timings.append((time.perf_counter() - began) / calls * 1e6)
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=150, help="trees (150)")
    parser.add_argument("--depth", type=int, default=5, help="tree depth (5)")
    parser.add_argument("--calls", type=int, default=1000, help="calls per timing (1000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings per figure (5)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    frame = rng.normal(size=(20_000, 16))
    label = frame[:, 0] + frame[:, 1] * frame[:, 2] + rng.normal(size=len(frame)) > 1.5
    model = xgb.XGBClassifier(n_estimators=args.trees, max_depth=args.depth, learning_rate=0.1)
    model.fit(frame, label.astype(int))
    booster = model.get_booster()
    booster.set_param({"nthread": 1})
    scorer = Scorer(booster)
    trees = scorer.trees
    assert trees is not None, scorer.why
    print(f"{args.trees} trees, depth {args.depth}, 16 features; scorer: {scorer.why}")
    print(f"{'rows':>5} {'xgboost us':>11} {'tree walk us':>13} {'max |diff|':>11}")
    for rows in (1, 2, 4, 8, 16, 32, 64, 256):
        batch = frame[:rows].copy()
        xgb_us = per_call_us(booster.inplace_predict, batch, args.calls, args.repeat)
        walk_us = per_call_us(trees.predict, batch, args.calls, args.repeat)
        diff = float(np.abs(trees.predict(batch) - booster.inplace_predict(batch)).max())
        used = " <- model server" if rows <= MAX_TREE_ROWS else ""
        print(f"{rows:5d} {xgb_us:11.0f} {walk_us:13.0f} {diff:11.1e}{used}")
    print(f"{'rows':>5} {'TreeSHAP us':>12}")
    for rows in (1, 16, ATTRIBUTION_ROWS_PER_SCRAPE):
        batch = frame[:rows].copy()
        calls = max(args.calls // rows, 5)
        shap_us = per_call_us(lambda b: contributions(booster, b), batch, calls, args.repeat)
        per_scrape = (
            " <- attribution sample per scrape" if rows == ATTRIBUTION_ROWS_PER_SCRAPE else ""
        )
        print(f"{rows:5d} {shap_us:12.0f}{per_scrape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
