"""`shipway rollout`: a model's rollout for people, through the controller the sensor runs."""

from __future__ import annotations

import argparse

from shipway.cli.catalog import model_named
from shipway.paths import ShipwayHome


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
    rollout = sub.add_parser(
        "rollout",
        help="a model's rollout: status, pause, resume, promote now, abort (roll back now)",
        description="The rollout sensor (<model>_rollout_sensor) moves a released version "
        "through shadow and canary steps on Prometheus' analysis. These commands act through "
        "the same controller, under the same lock, and append to the release audit. They find "
        "serving through $SHIPWAY_CONTROL_URL / $SHIPWAY_SERVING_TOKEN or the endpoint file "
        "`shipway up` writes in $SHIPWAY_HOME.",
    )
    rollout_sub = rollout.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    rollout_status = rollout_sub.add_parser("status", help="phase, weights, latest decisions")
    rollout_status.add_argument("model")
    for action, text in (
        ("pause", "stop at the current step (traffic stays as it is)"),
        ("resume", "continue a paused rollout"),
        ("promote", "make the challenger the champion now, skipping the remaining steps"),
        ("abort", "roll back now: the champion takes all traffic, the challenger stops"),
    ):
        acting = rollout_sub.add_parser(action, help=text)
        acting.add_argument("model")
        acting.add_argument("--reason", required=True, help="why, for the audit trail")

    rollout.set_defaults(run=_rollout)


def _rollout(args: argparse.Namespace) -> int:
    from shipway.models.tracking import use_platform_credentials
    from shipway.rollout import commands

    home = ShipwayHome.from_env()
    use_platform_credentials(home)
    declared = model_named(args.model)
    if args.rollout_command != "status":
        state = commands.command(home, declared, args.rollout_command, args.reason)
        print(f"{args.model} v{state.challenger}: {state.decisions[-1]['reason']}")
    print("\n".join(commands.status_lines(home, declared)))
    return 0
