"""Full graph materialization at scale: seconds and peak memory per asset.

    .venv/bin/python bench/materialize.py --events 1000000

Lands `--events` card transactions over `--days` days, then materializes each model's whole
lineage (dbt → Feast → training set → model → gate → deployment; fraud_model, then
customer_spend) in-process against a real MLflow server and serving controller. Peak memory is
the resident set of this process and the children it runs in its own session (dbt, the Feast
CLI), sampled every 50 ms and attributed to the step running; the long-running services
(MLflow, Prometheus, serving, MLServer) run in sessions of their own and are reported once,
separately.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from dagster import DagsterInstance

from shipway.paths import ShipwayHome
from shipway.stack import Ports, running_stack


def pipeline_rss() -> tuple[int, int]:
    """(this session's RSS, the services' RSS), over this process and its descendants."""
    me = psutil.Process()
    session = os.getsid(0)
    ours = services = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            rss = proc.memory_info().rss
            if os.getsid(proc.pid) == session:
                ours += rss
            else:
                services += rss
        except (psutil.Error, ProcessLookupError):
            continue
    return ours, services


class MemorySampler:
    def __init__(self, interval: float = 0.05) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), pipeline_rss()[0]))
            time.sleep(interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> float:
        window = [rss for t, rss in self.samples if start <= t <= end]
        return max(window, default=0) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=75)
    parser.add_argument(
        "--model",
        action="append",
        help="a declared model, repeatable (default: fraud_model and customer_spend)",
    )
    args = parser.parse_args()

    home = ShipwayHome(Path(tempfile.mkdtemp(prefix="shipway-bench-")))
    per_day = args.events // args.days
    ports = Ports.free()
    print(f"{per_day * args.days} events over {args.days} days; state in {home.root}", flush=True)
    with running_stack(home, ports) as stack:
        os.environ.update(stack.environment())
        from assets.definitions import defs

        instance = DagsterInstance.from_config(str(home.dagster))
        landing = {
            "ops": {
                "raw_events_batch": {
                    "config": {
                        "start_date": "2026-09-01",
                        "days": args.days,
                        "events_per_day": per_day,
                        "as_of": (
                            datetime(2026, 9, 1, tzinfo=UTC) + timedelta(days=args.days, hours=1)
                        ).isoformat(),
                    }
                }
            }
        }
        rows, failed = [], []
        models = args.model or ["fraud_model", "customer_spend"]
        jobs = [("land_raw_events", landing), *((f"{m}_lifecycle", None) for m in models)]
        with MemorySampler() as memory:
            for job_name, run_config in jobs:
                result = defs.resolve_job_def(job_name).execute_in_process(
                    instance=instance, run_config=run_config, raise_on_error=False
                )
                for stat in instance.get_run_step_stats(result.run_id):
                    start, end = stat.start_time or 0.0, stat.end_time or 0.0
                    rows.append((stat.step_key, end - start, memory.peak(start, end)))
                if not result.success:
                    # A gate that blocks stops its model's run; the figures so far still count.
                    print(f"{job_name} failed; see {home.root}", file=sys.stderr, flush=True)
                    failed.append(job_name)
        services = pipeline_rss()[1] / 2**20
    print(f"\n{'step':<40} {'seconds':>8} {'peak MiB':>9}")
    for step, seconds, peak in rows:
        print(f"{step:<40} {seconds:8.1f} {peak:9.0f}")
    print(f"{'total':<40} {sum(r[1] for r in rows):8.1f} {max(r[2] for r in rows):9.0f}")
    print(f"services (MLflow, Prometheus, serving, MLServer) at the end: {services:.0f} MiB")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
