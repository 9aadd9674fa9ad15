"""The cost of feature versions side by side, against today's single store on the same data.

One home, `--days` of generated card transactions (`--events` a day). Three builds of
fraud_model_v1's features, each timed and sized on disk:

- today's single store: dbt build of the feature tables' closure into the home's warehouse,
  published to the home's Delta tables, `feast apply`, materialization (what `dbt_models`,
  `feature_views` and `online_store` do for these tables);
- version A, the same sources, built side by side in its own home (`build_version`);
- version B, the 30-day average over 14 days, beside A.

Then a refresh of A with one more day landed (rebuilt by its own logic, only the new rows
loaded online), and lookup latency: `--lookups` single-entity lookups of fraud_model_v1 through
the feature service's request handler in-process (`FeatureServer.online_features`: version
resolution, plan, online read, on-demand function), today's store against version A pinned and
A as the default, interleaved; p50 / p99 / mean.

    .venv/bin/python bench/feature_versions.py
    .venv/bin/python bench/feature_versions.py --days 60 --events 2000 --lookups 4000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipway.data.events import generate_events
from shipway.data.lake import overwrite_table, read_table
from shipway.data.warehouse import publish_to_delta
from shipway.features.server import FeatureServer
from shipway.features.store import apply_repository, materialize_incremental
from shipway.features.version_store import build_version, built_bytes, version_home
from shipway.features.versions import Sources, copy_sources, record
from shipway.paths import DBT_PROJECT_DIR, ShipwayHome

SERVICE = "fraud_model_v1"
TABLES = {"customer_features": "customer_features", "merchant_features": "merchant_features"}


def size(*paths: Path) -> int:
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return total


def today(home: ShipwayHome) -> float:
    """The single store as the shared assets build it, for fraud_model_v1's tables."""
    started = time.perf_counter()
    dbt = Path(sys.executable).with_name("dbt")
    env = {**os.environ, **home.environment()}
    select = [f"+{model}" for model in TABLES]
    subprocess.run(
        [str(dbt), "build", "--quiet", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
         str(DBT_PROJECT_DIR), "--target-path", str(home.root / "dbt_target"), "--log-path",
         str(home.root / "dbt_target"), "--select", *select],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    for model, table in TABLES.items():
        publish_to_delta(home.warehouse, model, home.table(table))
    apply_repository(home)
    materialize_incremental(home)
    return time.perf_counter() - started


def changed_sources(folder: Path) -> Sources:
    """A copy of the sources with customer_features' 30-day average over 14 days."""
    sources = copy_sources(Sources(), folder)
    sql = sources.dbt_project / "models" / "features" / "customer_features.sql"
    sql.write_text(
        sql.read_text().replace("interval 29 days preceding", "interval 13 days preceding")
    )
    return sources


def lookups(server: Bench, count: int, customers: int, merchants: int) -> dict[str, list[float]]:
    """Per way: latencies of single-entity lookups, the ways interleaved request by request.
    A way is (versions resolved?, the version pinned in the body)."""
    rng = np.random.default_rng(0)
    ways = {
        "today's store": (False, None),
        "version A pinned": (True, server.pinned),
        "version A as default": (True, None),
    }
    out: dict[str, list[float]] = {name: [] for name in ways}

    async def run() -> None:
        for i in range(count + 200):
            body: dict[str, Any] = {
                "feature_service": SERVICE,
                "entities": {
                    "customer_id": [int(rng.integers(1, customers))],
                    "merchant_id": [int(rng.integers(1, merchants))],
                    "event_timestamp": ["2026-11-01T09:30:00+00:00"],
                    "amount": [42.0],
                    "channel": ["online"],
                    "merchant_category": ["travel"],
                },
            }
            for name, (versions, pinned) in ways.items():
                server.use_versions = versions
                request = {**body, "feature_version": pinned} if pinned else body
                started = time.perf_counter()
                await server.online_features(request)
                if i >= 200:  # warm-up: plans made, pages cached
                    out[name].append(time.perf_counter() - started)

    asyncio.run(run())
    return out


class Bench(FeatureServer):
    """The feature service with a switch: today's store (no versions) or versions resolved."""

    pinned = ""
    use_versions = True

    def default_version(self, service: str) -> str | None:
        return super().default_version(service) if self.use_versions else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--events", type=int, default=1500)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shipway-bench-versions-") as tmp:
        home = ShipwayHome(Path(tmp) / "home")
        start = date(2026, 9, 1)
        events = generate_events(start, args.days, events_per_day=args.events)
        overwrite_table(home.table("raw_events"), events)
        print(f"{len(events):,} transactions over {args.days} days")

        single = today(home)
        single_bytes = size(home.warehouse, home.table("customer_features"),
                            home.table("merchant_features"), home.feast)  # fmt: skip
        rows = len(read_table(home.table("customer_features")))
        print(f"today's single store: built in {single:.1f} s, {single_bytes / 2**20:.1f} MiB "
              f"({rows:,} customer_features rows)")  # fmt: skip

        a = record(home, [SERVICE])[SERVICE]
        b = record(home, [SERVICE], changed_sources(Path(tmp) / "b"))[SERVICE]
        for label, recorded in (("A (same sources)", a), ("B (14-day window)", b)):
            started = time.perf_counter()
            build_version(home, recorded, lambda _: None)
            took = time.perf_counter() - started
            vh = version_home(home, recorded)
            print(f"version {label} {recorded.version.digest}: built in {took:.1f} s, "
                  f"{built_bytes(vh) / 2**20:.1f} MiB beside it")  # fmt: skip

        day = generate_events(
            start + timedelta(days=args.days), 1, seed=9, events_per_day=args.events
        )
        overwrite_table(home.table("raw_events"), pd.concat([events, day], ignore_index=True))
        started = time.perf_counter()
        done = build_version(home, a, lambda _: None)
        print(f"refresh of A with one more day: {time.perf_counter() - started:.1f} s "
              f"(online: {'; '.join(done.rows_loaded_online)})")  # fmt: skip

        from shipway.features.versions import mark_applied

        mark_applied(home, {SERVICE: a})
        server = Bench(home, require_keys=False)
        server.pinned = a.version.digest
        customers = int(events["customer_id"].max())
        merchants = int(events["merchant_id"].max())
        found = lookups(server, args.lookups, customers, merchants)
        print(f"lookups of {SERVICE}, one entity, {args.lookups} each, interleaved (ms):")
        for name, values in found.items():
            ms = np.array(values) * 1000
            print(f"  {name:<22} p50 {np.percentile(ms, 50):.3f}  p99 {np.percentile(ms, 99):.3f}  "
                  f"mean {ms.mean():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
