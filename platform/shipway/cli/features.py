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
    versions = features_sub.add_parser(
        "versions",
        help="each model's feature versions: digest, what changed, which model versions use it",
        description="A feature version is a digest of everything that computes a model's "
        "features: the dbt models upstream of its feature tables, its Feast definitions and "
        "the raw-events contract's columns (README: A feature change is a release). Lists, "
        "per model, the versions recorded in $SHIPWAY_HOME (oldest first), what changed from "
        "the one before, part by part, the model versions in MLflow trained on each, and "
        "which one the feature tables and registry are built for.",
    )
    versions.add_argument("model", nargs="?", help="one declared model (default: every one)")
    versions.set_defaults(run=_versions)


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


def _versions(args: argparse.Namespace) -> int:
    from shipway.errors import ShipwayError
    from shipway.features.versions import applied_versions, folder_bytes, history
    from shipway.models.catalog import load_models
    from shipway.models.tracking import feature_version_users
    from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT
    from shipway.release.commands import tracking_uri

    home = ShipwayHome.from_env()
    models = {
        m.declaration.name: m.declaration for m in load_models(ASSETS_DIR, RAW_EVENTS_CONTRACT)
    }
    if args.model is not None and args.model not in models:
        raise ShipwayError(f"no declared model {args.model!r}; declared: {sorted(models)}")
    found = history(home)
    applied = applied_versions(home)
    uri = tracking_uri()
    for name in [args.model] if args.model else sorted(models):
        service = models[name].feature_service
        try:
            users = feature_version_users(uri, name)
        except Exception as exc:  # the registry is optional for this listing; say so
            users = {}
            print(f"(MLflow at {uri} not read: {type(exc).__name__}; model versions not shown)")
        recorded = found.services.get(service, [])
        print(f"{name}: feature service {service}, {len(recorded)} feature version(s)")
        for entry in recorded:
            version = entry.version
            built = " (the feature tables and registry are built for it)"
            print(
                f"  {version.digest}  first seen {_iso(entry.first_seen)}"
                + (built if applied.get(service) == version.digest else "")
            )
            changes = (
                version.changes(previous.version) if (previous := found.previous(entry)) else []
            )
            for line in [c.describe() for c in changes] or ["first version recorded"]:
                print(f"      {line}")
            print(f"      model versions: {', '.join(users.get(version.digest, [])) or 'none'}")
            print(
                f"      sources: {entry.folder} ({folder_bytes(entry.folder) / 1024:.0f} KiB); "
                f"tables: {', '.join(version.tables)}"
            )
    for line in found.unreadable:
        print(f"unreadable version record {line}")
    return 0


def _iso(stamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
