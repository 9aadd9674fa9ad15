"""`shipway data`: batches through their contracts, the quarantine, re-admissions, and a
training set rebuilt from its recorded inputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from shipway.cli.catalog import DEFAULT_MODEL, model_named, training_sets
from shipway.errors import ShipwayError
from shipway.paths import ShipwayHome


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
    data = sub.add_parser(
        "data",
        help="data contracts: land batches, inspect and re-admit quarantined ones, rebuild "
        "training sets",
        description="Every batch is audited by its contract (assets/contracts/ for raw events, "
        "assets/<model>/contracts/ for training sets); a rejected one stays in its Delta "
        "table, quarantined, until a fixed batch re-admits it.",
    )
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    data_sub.add_parser("status", help="latest and accepted version of each dataset")
    data_sub.add_parser("quarantine", help="rejected batches, why, and whether re-admitted")
    show = data_sub.add_parser("show", help="one rejected batch: reasons and first rows")
    show.add_argument("batch", help="batch id, e.g. raw_events@v3")
    show.add_argument("--rows", type=int, default=10, help="rows to print (10)")
    export = data_sub.add_parser("export", help="write a rejected batch to Parquet to fix it")
    export.add_argument("batch", help="batch id, e.g. raw_events@v3")
    export.add_argument("path", type=Path, help="destination .parquet file")
    readmit = data_sub.add_parser(
        "readmit",
        help="land a rejected batch again: fixed (--from) or as it was, under a fixed contract",
    )
    readmit.add_argument("batch", help="batch id, e.g. raw_events@v3")
    readmit.add_argument("--from", dest="fixed", type=Path, help="the fixed batch (.parquet)")
    readmit.add_argument("--as-of", help="landing time for freshness (default: the original)")
    land = data_sub.add_parser("land", help="land a Parquet file of events through the contract")
    land.add_argument("path", type=Path, help="events .parquet (columns as raw_events)")
    land.add_argument("--as-of", default="", help="landing time (ISO, UTC; default: now)")
    rebuild = data_sub.add_parser(
        "rebuild-training-set",
        help="rebuild a training set from its recorded input versions and compare digests",
    )
    rebuild.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"whose training set (default {DEFAULT_MODEL})"
    )
    rebuild.add_argument("--version", type=int, help="its version (default: latest)")

    data.set_defaults(run=_data)


def _data(args: argparse.Namespace) -> int:
    from shipway.data import commands as data

    home = ShipwayHome.from_env()
    action = args.data_command
    if action == "status":
        print("\n".join(data.status_lines(home, training_sets())))
    elif action == "quarantine":
        print("\n".join(data.quarantine_lines(home)))
    elif action == "show":
        print("\n".join(data.show_lines(home, args.batch, args.rows)))
    elif action == "export":
        rows = data.export(home, args.batch, args.path)
        print(f"wrote {rows} rows of {args.batch} to {args.path}")
    elif action in ("readmit", "land"):
        from assets.definitions import defs
        from shipway.defs.data import LANDING_JOB

        job = defs.resolve_job_def(LANDING_JOB)
        if action == "readmit":
            outcome = data.readmit(home, job, args.batch, args.fixed, args.as_of)
        else:
            if not args.path.is_file():
                raise ShipwayError(f"{args.path} not found: give a Parquet file of events")
            outcome = data.land(home, job, {"from_file": str(args.path), "as_of": args.as_of})
        print("\n".join(outcome.gate_lines))
        if outcome.admission is None:
            raise ShipwayError("the contract did not run; see the Dagster run log")
        verdict = "accepted and published to raw_events" if outcome.accepted else "rejected"
        print(f"{outcome.admission.id}: {verdict}")
        return 0 if outcome.accepted else 1
    else:
        return _rebuild(home, args.model, args.version)
    return 0


def _rebuild(home: ShipwayHome, model: str, version: int | None) -> int:
    from shipway.features.training_sets import rebuild

    declared = model_named(model)
    table = declared.declaration.training_set
    result = rebuild(
        home, table, declared.label_rules, version, lambda line: print(f"  {line}", flush=True)
    )
    inputs = ", ".join(f"{t} v{v}" for t, v in result.inputs.versions.items())
    print(f"{table} v{result.version} from {inputs} ({result.inputs.feature_service})")
    print(f"  recorded digest {result.recorded_digest}")
    print(f"  rebuilt digest  {result.rebuilt_digest} ({result.rows} rows)")
    print("identical" if result.identical else "DIFFERENT: the training set is not reproducible")
    return 0 if result.identical else 1
