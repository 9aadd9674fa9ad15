"""Data gates at scale: seconds per gate and peak memory for 1M and 10M raw events.

    .venv/bin/python bench/gates.py                 # 1M and 10M rows
    .venv/bin/python bench/gates.py --rows 1000000  # one size

Each size runs in a child process of its own, so its peak resident memory (ru_maxrss) is the
batch, the accepted reference (the last 14 days) and the gates, nothing left from another size.
The batch is the generator's output tiled to the size (fresh transaction ids and days), and
the reference is 14 accepted days, as in `raw_events_batch`'s contract check. Gate work only:
reading and writing Delta is measured by bench/materialize.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import pandas as pd

from shipway.data.contracts import load_contract
from shipway.data.events import generate_events
from shipway.data.gates import Batch, Reference, evaluate
from shipway.paths import RAW_EVENTS_CONTRACT

CONTRACT = RAW_EVENTS_CONTRACT
PER_DAY = 20_000
START = date(2026, 1, 1)


def _batch(rows: int) -> pd.DataFrame:
    """`rows` events: 50 generated days tiled forward in time until the size is reached."""
    base = generate_events(START, 50, "baseline", 7, PER_DAY)
    copies = -(-rows // len(base))
    frames = []
    for copy in range(copies):
        shifted = base.copy()
        offset = pd.Timedelta(days=50 * copy)
        for column in ("event_timestamp", "label_available_at"):
            shifted[column] = shifted[column] + offset
        shifted["event_date"] = shifted["event_timestamp"].dt.date
        shifted["transaction_id"] = f"c{copy}-" + shifted["transaction_id"]
        frames.append(shifted)
    return pd.concat(frames, ignore_index=True).head(rows)


def measure(rows: int) -> dict[str, object]:
    contract = load_contract(CONTRACT)
    started = time.perf_counter()
    frame = _batch(rows)
    reference_frame = generate_events(START - timedelta(days=14), 14, "baseline", 7, PER_DAY)
    built = time.perf_counter() - started
    reference = Reference(
        "bench reference",
        reference_frame,
        reference_frame.groupby("event_date").size(),
    )
    newest = frame["event_timestamp"].max().to_pydatetime()
    started = time.perf_counter()
    results = evaluate(contract, Batch.of(frame), newest + timedelta(hours=1), reference)
    total = time.perf_counter() - started
    return {
        "rows": len(frame),
        "frame_mib": frame.memory_usage(deep=True).sum() / 2**20,
        "build_seconds": built,
        "gates": {r.gate: r.seconds for r in results},
        "failed": [r.gate for r in results if not r.passed],
        "total_seconds": total,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="batch size (repeatable)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.rows or [1_000_000, 10_000_000]
    if args.child:
        print(json.dumps(measure(sizes[0])))
        return 0
    reports = []
    for rows in sizes:
        print(f"{datetime.now(UTC):%H:%M:%S} gating {rows:,} rows ...", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--rows", str(rows)],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            print(child.stderr[-2000:], file=sys.stderr)
            return 1
        reports.append(json.loads(child.stdout.strip().splitlines()[-1]))
    gates = list(reports[0]["gates"])
    print(f"\n{'gate':<12}" + "".join(f"{r['rows']:>14,}" for r in reports))
    for gate in gates:
        print(f"{gate:<12}" + "".join(f"{r['gates'][gate]:>13.2f}s" for r in reports))
    print(f"{'all gates':<12}" + "".join(f"{r['total_seconds']:>13.2f}s" for r in reports))
    print(f"{'peak RSS':<12}" + "".join(f"{r['peak_mib']:>10.0f} MiB" for r in reports))
    print(f"{'frame size':<12}" + "".join(f"{r['frame_mib']:>10.0f} MiB" for r in reports))
    for report in reports:
        if report["failed"]:
            print(f"note: {report['rows']:,} rows failed {report['failed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
