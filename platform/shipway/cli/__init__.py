"""`shipway`: run the demo, bring the platform up, serve models and features, land data, release
and roll out models, render what runs outside Python, check the installation.

One module per command group, as Feast's CLI has: each `register`s its commands on the one
parser, with its handler as `run`, and imports what a command needs only when it runs, so
`shipway --help` and the long-running services start quickly.
The top layer, an entry point: may import every package, `shipway.demo`, `shipway.ci` and the
code location (`assets.definitions`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from shipway.cli import (
    callers,
    ci,
    data,
    demo,
    features,
    keys,
    models,
    render,
    rollout,
    services,
)
from shipway.errors import ShipwayError

GROUPS = (demo, services, features, callers, data, models, ci, keys, rollout, render)
EPILOG = """examples:
  shipway demo                 the whole loop once, headless (about 3 minutes)
  shipway demo --model customer_spend
                               the same loop for another declared model
  shipway up                   Dagster, MLflow, Prometheus and serving until Ctrl-C
  shipway doctor               check what deploy/setup.sh installs
  shipway callers add scoring-team --rate 50
                               an API key (printed once) for the front door and features
  shipway data quarantine      batches a data contract rejected, and why
  shipway data readmit raw_events@v3 --from fixed.parquet
                               land a fixed batch in place of a rejected one
  shipway models pending       releases waiting for a named approver
  shipway models approve fraud_model 4 --reason "reviewed the slice table"
                               approve one (identity: $SHIPWAY_IDENTITY or the OS user)
  shipway models lineage fraud_model 4
                               commit -> data -> features -> parameters -> gate -> approval
  shipway ci --changed-since origin/main
                               a change's checks, for the models it touches
  shipway models package fraud_model 4 --out dist
                               the signed package: bundle, runtime, lock, SBOM, lineage
  shipway rollout status fraud_model
                               phase, intended vs served weights, latest decisions
  shipway render seldon fraud_model
                               Seldon Core v2 Model + Experiment for what is served now
  shipway render alerts        Prometheus alert rules + tests from every model.yaml
state lives in $SHIPWAY_HOME (default: .shipway/ in the repository)"""


def build_parser() -> argparse.ArgumentParser:
    """Every command and option of `shipway` (tests parse the CI recipes' commands with it)."""
    parser = argparse.ArgumentParser(
        prog="shipway",
        description="Shipway: ML CI/CD on Dagster, from raw events to a monitored deployment.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except ShipwayError as exc:
        print(f"shipway {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shipway {args.command}: interrupted; services stopped", file=sys.stderr)
        return 130
    return code
