"""`shipway demo`: one declared model's whole loop, headless (`shipway.demo`)."""

from __future__ import annotations

import argparse

from shipway.cli.catalog import DEFAULT_MODEL
from shipway.paths import ShipwayHome


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
    demo = sub.add_parser(
        "demo",
        help="run the whole loop once: train v1, deploy, drift, sensor, retrain v2, roll it out",
        description="Runs headless on embedded defaults and exits 0 once the loop has closed. "
        "Starts from a clean $SHIPWAY_HOME unless --keep is given.",
    )
    demo.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a declared model or LLM application (assets/*/model.yaml), default {DEFAULT_MODEL}",
    )
    demo.add_argument("--days", type=int, default=75, help="baseline days to land (75)")
    demo.add_argument("--drift-days", type=int, default=20, help="drifted days to land (20)")
    demo.add_argument("--events-per-day", type=int, default=2000, help="events per day (2000)")
    demo.add_argument("--traffic-rows", type=int, default=1200, help="rows per traffic phase")
    demo.add_argument("--keep", action="store_true", help="keep existing state in $SHIPWAY_HOME")
    demo.add_argument(
        "--bad-challenger",
        action="store_true",
        help="serve v2 with injected errors and latency, and watch its rollout roll it back",
    )

    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from shipway.demo import DemoConfig, run_demo

    config = DemoConfig(
        days=args.days,
        drift_days=args.drift_days,
        events_per_day=args.events_per_day,
        traffic_rows=args.traffic_rows,
        bad_challenger=args.bad_challenger,
    )
    run_demo(ShipwayHome.from_env(), config, args.model, keep=args.keep)
    return 0
