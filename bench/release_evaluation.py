"""Release evaluation at scale: seconds to judge a challenger against a champion on 100k and 1M
evaluation rows, paired bootstrap included, beside the textbook loop it replaces.

    .venv/bin/python bench/release_evaluation.py                  # 100k and 1M rows
    .venv/bin/python bench/release_evaluation.py --rows 100000 --samples 1000

Shipway: `Judge.report` with fraud_model's policy (ROC-AUC and PR-AUC change rules, absolute
gates, calibration, channel and merchant-category slices), `bootstrap_samples` replicates.
Peer: the usual hand-written paired bootstrap, resampling rows and calling scikit-learn's
`roc_auc_score` and `average_precision_score` for both models on each replicate; it is timed
on `--peer-samples` replicates and scaled to the same count (it is linear in replicates).
Scores are synthetic (calibrated by construction, 2% positives, continuous and tied), so both
sides do the same statistical work; a real model only changes the scoring, timed apart.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from shipway.data.events import CATEGORIES
from shipway.models.declaration import load_declaration
from shipway.paths import ASSETS_DIR
from shipway.release.judge import Judge


def _data(rows: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    champion = 1 / (1 + np.exp(-(1.6 * signal - 4.6)))
    labels = (rng.random(rows) < champion).astype(float)
    challenger = 1 / (1 + np.exp(-(1.6 * (signal + rng.normal(0, 0.2, rows)) - 4.6)))
    slices = pd.DataFrame(
        {
            "channel": rng.choice(["online", "card_present"], rows),
            "merchant_category": rng.choice(list(CATEGORIES), rows),
        }
    )
    # Rounded like float32 tree outputs: ties exist, as in real scores.
    return labels, np.round(challenger, 5), np.round(champion, 5), slices


def _peer(labels: np.ndarray, a: np.ndarray, b: np.ndarray, samples: int) -> float:
    rng = np.random.default_rng(7)
    start = time.perf_counter()
    for _ in range(samples):
        idx = rng.integers(0, len(labels), len(labels))
        y = labels[idx]
        roc_auc_score(y, a[idx]) - roc_auc_score(y, b[idx])
        average_precision_score(y, a[idx]) - average_precision_score(y, b[idx])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap replicates (1000)")
    parser.add_argument("--peer-samples", type=int, default=20, help="peer replicates timed (20)")
    args = parser.parse_args()
    declaration = load_declaration(ASSETS_DIR / "fraud" / "model.yaml")
    release = declaration.release.model_copy(update={"bootstrap_samples": args.samples})
    declaration = declaration.model_copy(update={"release": release})
    print(f"{'rows':>10} {'replicates':>10} {'shipway s':>10} {'peer s (scaled)':>16} {'ratio':>6}")
    for rows in args.rows:
        labels, a, b, slices = _data(rows)
        judge = Judge(
            declaration,
            labels,
            a,
            b,
            None,
            {str(column): slices[column] for column in slices.columns},
        )
        start = time.perf_counter()
        report = judge.report("2", "1", [])
        ours = time.perf_counter() - start
        peer = _peer(labels, a, b, args.peer_samples) * args.samples / args.peer_samples
        print(f"{rows:>10} {args.samples:>10} {ours:>10.1f} {peer:>16.1f} {peer / ours:>6.1f}x")
        print(
            f"{'':>10} verdict {report.verdict}; "
            + "; ".join(
                f"{i.metric} {i.delta:+.4f} [{i.low:+.4f}, {i.high:+.4f}]" for i in report.intervals
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
