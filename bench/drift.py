"""Drift at scale: Shipway's drift statistics beside Evidently's DataDriftPreset, same data.

    .venv/bin/python bench/drift.py                       # 100k and 1M rows x 20 columns
    .venv/bin/python bench/drift.py --rows 100000 --skip-default

The data: a reference and a current frame of `--rows` rows each, 15 numeric columns (normal,
lognormal, counts) and 5 categorical codes; the current frame shifts 5 numeric columns (from
negligible to large) and moves traffic between categories of 2 categorical ones.

Each side is timed on the same frames. Shipway: the reference profile (once per trained
version; every value kept, so KS is exact), then the comparison (PSI plus KS or chi² per
column). Evidently 0.7.23 in `bench/evidently/` (its own environment: it needs pandas < 3):
`DataDriftPreset()` with its default methods (the issue's 151 s at 1M rows), with
`num_method="ks", cat_method="chisquare"` (the tests Shipway shares), and with `method="psi"`.
Decisions are compared per column for each statistic: the tests' p-values must agree (scipy
underneath both); PSI bins differ (Shipway bins by training quantiles, once, so serving never
holds training data; Evidently bins the reference and current together by Sturges' rule), so
the PSI decisions are reported as an agreement count, not required to match.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shipway.stats.drift import CATEGORICAL, DriftRule, DriftRules, build_reference, compare

PEER = Path(__file__).parent / "evidently"
UV = Path(__file__).parents[1] / ".tools" / "bin" / "uv"
NUMERIC = [f"n{i}" for i in range(15)]
CATEGORIES = [f"c{i}" for i in range(5)]
P_VALUE = 0.05  # Evidently's default for ks and chisquare
PSI = 0.1  # Evidently's default for psi


def frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def one(shift: bool) -> pd.DataFrame:
        data: dict[str, np.ndarray] = {}
        for i, name in enumerate(NUMERIC):
            moved = {0: 0.005, 1: 0.05, 2: 0.2, 3: 0.5, 4: 1.0}.get(i, 0.0) if shift else 0.0
            if i % 3 == 0:
                data[name] = rng.normal(moved, 1.0, rows)
            elif i % 3 == 1:
                data[name] = rng.lognormal(1.0 + moved, 0.6, rows)
            else:
                data[name] = rng.poisson(4.0 * (1 + moved), rows).astype(float)
        for i, name in enumerate(CATEGORIES):
            weights = np.linspace(1.0, 3.0, 4 + 4 * i)
            if shift and i in (0, 1):
                weights[1] *= 3.0 if i == 0 else 1.1
            data[name] = rng.choice(len(weights), rows, p=weights / weights.sum()).astype(float)
        return pd.DataFrame(data)

    return one(False), one(True)


def shipway_side(
    reference: pd.DataFrame, current: pd.DataFrame
) -> tuple[float, float, dict[str, tuple[float, float]]]:
    columns = NUMERIC + CATEGORIES
    started = time.perf_counter()
    profile = build_reference(
        reference, columns, 10, {c: CATEGORICAL for c in CATEGORIES}, sketch=None
    )
    profiled = time.perf_counter() - started
    rules = DriftRules(default=DriftRule(PSI, P_VALUE), min_rows=1, max_rows=len(current))
    started = time.perf_counter()
    found = compare(profile, current, rules)
    compared = time.perf_counter() - started
    return profiled, compared, {d.name: (d.psi, d.p_value) for d in found}


def evidently_side(data: Path, methods: list[str]) -> dict[str, dict[str, object]]:
    python = PEER / ".venv" / "bin" / "python"
    if not python.exists():
        print("syncing Evidently's environment from bench/evidently/uv.lock ...", flush=True)
        subprocess.run([str(UV), "sync", "--frozen", "--quiet", "--project", str(PEER)], check=True)
    done = subprocess.run(
        [str(python), str(PEER / "peer.py"), str(data), *methods],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="rows per frame (100k, 1M)")
    parser.add_argument(
        "--skip-default", action="store_true", help="skip Evidently's default-method run"
    )
    args = parser.parse_args()
    methods = ["ks+chisquare", "psi"] if args.skip_default else ["default", "ks+chisquare", "psi"]
    print(
        f"{len(NUMERIC)} numeric + {len(CATEGORIES)} categorical columns; thresholds: "
        f"p < {P_VALUE}, PSI >= {PSI}",
        flush=True,
    )
    for rows in args.rows or [100_000, 1_000_000]:
        reference, current = frames(rows)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            reference.to_parquet(data / "reference.parquet")
            current.to_parquet(data / "current.parquet")
            (data / "columns.json").write_text(
                json.dumps({"numeric": NUMERIC, "categorical": CATEGORIES, "psi_threshold": PSI})
            )
            print(f"\n{rows:,} rows: Shipway ...", flush=True)
            profiled, compared, ours = shipway_side(reference, current)
            print(f"{rows:,} rows: Evidently {', '.join(methods)} ...", flush=True)
            theirs = evidently_side(data, methods)
        tests = theirs["ks+chisquare"]["values"]
        psis = theirs["psi"]["values"]
        assert isinstance(tests, dict) and isinstance(psis, dict)
        same_test = sum((ours[c][1] < P_VALUE) == (tests[c] < P_VALUE) for c in ours)
        same_psi = sum((ours[c][0] >= PSI) == (psis[c] >= PSI) for c in ours)
        worst_p = max(abs(ours[c][1] - tests[c]) for c in ours)
        print(f"{'side':<34} {'seconds':>8} {'x':>7}")
        print(f"{'Shipway compare':<34} {compared:>8.2f} {'':>7}")
        print(f"{'Shipway profile + compare':<34} {profiled + compared:>8.2f} {'':>7}")
        for method in methods:
            seconds = float(theirs[method]["seconds"])  # type: ignore[arg-type]
            print(f"{'Evidently ' + method:<34} {seconds:>8.2f} {seconds / compared:>6.0f}x")
        print(
            f"decisions: tests (KS / chi²) agree on {same_test}/{len(ours)} columns, largest "
            f"p-value difference {worst_p:.2g}; PSI agrees on {same_psi}/{len(ours)}"
        )
        for column in ours:
            print(
                f"  {column:<4} PSI {ours[column][0]:8.4f} vs {psis[column]:8.4f}   "
                f"p {ours[column][1]:10.3g} vs {tests[column]:10.3g}"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
