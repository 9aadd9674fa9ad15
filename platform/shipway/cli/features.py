"""`shipway features serve`: the feature service for serving teams (`shipway.features.server`),
with one-call scoring through serving's front door (`shipway.serving.scoring`)."""

from __future__ import annotations

import argparse
import logging

from shipway.paths import ShipwayHome


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The group's commands, each with its handler as `run`."""
    features = sub.add_parser("features", help="the feature service for serving teams")
    features_sub = features.add_subparsers(dest="features_command", required=True, metavar="ACTION")
    features_serve = features_sub.add_parser(
        "serve",
        help="run the feature service (started by `up`): Feast's /get-online-features, "
        "/score/<model>, /metrics on 127.0.0.1",
        description="Looks features up in the online store of $SHIPWAY_HOME's Feast "
        "registry, re-read after `feast apply`. With --serving-url, /score/<model> looks a "
        "model's features up and scores them through that front door.",
    )
    features_serve.add_argument("--port", type=int, default=6566, help="port (6566)")
    features_serve.add_argument(
        "--serving-url",
        help="the data plane's front door, for /score (e.g. http://127.0.0.1:8000)",
    )

    features_serve.set_defaults(run=_features)


def _features(args: argparse.Namespace) -> int:
    import uvicorn

    from shipway.features.server import MAX_CONCURRENT, FeatureServer
    from shipway.processes import LOOPBACK
    from shipway.serving.scoring import OneCallScorer

    logging.getLogger().setLevel(logging.INFO)
    home = ShipwayHome.from_env()
    scorer = OneCallScorer(home.served, args.serving_url) if args.serving_url else None
    uvicorn.run(
        FeatureServer(home, scorer),
        host=LOOPBACK,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        limit_concurrency=MAX_CONCURRENT,
    )
    return 0
