"""`shipway features serve`: the feature service for serving teams (`shipway.features.server`),
with one-call scoring through serving's front door (`shipway.serving.scoring`)."""

from __future__ import annotations

import argparse
import logging

from shipway.features.version_store import KEEP_LAST
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
    collect = features_sub.add_parser(
        "collect",
        help="free the tables, warehouse and online rows of feature versions nothing pins",
        description="Keeps every version a model version pins (serving at any weight or as "
        "shadow, MLflow's champion or challenger), the version each service's sources compute "
        "now, and each service's --keep-last newest; frees the built data of the others "
        "(their record and saved sources stay: `refresh_features` can build one again). "
        "Refuses to collect anything when serving's state or the registry cannot be read.",
    )
    collect.add_argument(
        "--keep-last",
        type=int,
        help="newest versions of each service kept whatever pins them (default: as each "
        f"model declares, release.keep_feature_versions; {KEEP_LAST} when none does)",
    )
    collect.add_argument("--dry-run", action="store_true", help="say what would be freed")
    collect.set_defaults(run=_collect)


def _collect(args: argparse.Namespace) -> int:
    from shipway.errors import BadRequest
    from shipway.features.version_store import collect, collectable
    from shipway.release.commands import tracking_uri
    from shipway.release.pins import in_use

    if args.keep_last is not None and args.keep_last < 0:
        raise BadRequest(f"--keep-last must be 0 or more, got {args.keep_last}")
    home = ShipwayHome.from_env()
    keep_last: int | dict[str, int] = args.keep_last
    if keep_last is None:
        from shipway.models.catalog import keep_versions, load_models
        from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT

        keep_last = keep_versions(load_models(ASSETS_DIR, RAW_EVENTS_CONTRACT))
    keep = in_use(home, tracking_uri())
    for digest, why in sorted(keep.items()):
        print(f"keep {digest}: {'; '.join(why)}")
    if args.dry_run:
        for found in collectable(home, keep, keep_last):
            print(f"would free {found.digest} ({found.service}): {found.freed_bytes:,} bytes")
        return 0
    freed = collect(home, keep, keep_last)
    for found in freed:
        print(f"freed {found.digest} ({found.service}): {found.freed_bytes:,} bytes")
    print(f"{len(freed)} version(s) collected, {sum(f.freed_bytes for f in freed):,} bytes freed")
    return 0


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
    from shipway.features.version_store import Built, built_bytes, version_home
    from shipway.features.versions import applied_versions, history
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
            now = " (the sources compute it now: the working tree's store is built for it)"
            print(
                f"  {version.digest}  first seen {_iso(entry.first_seen)}"
                + (now if applied.get(service) == version.digest else "")
            )
            changes = (
                version.changes(previous.version) if (previous := found.previous(entry)) else []
            )
            for line in [c.describe() for c in changes] or ["first version recorded"]:
                print(f"      {line}")
            print(f"      model versions: {', '.join(users.get(version.digest, [])) or 'none'}")
            vh = version_home(home, entry)
            built = Built.load(vh)
            if built is None:
                print("      not built (refresh_features builds the versions in use)")
            else:
                tables = ", ".join(f"{t} v{v}" for t, v in sorted(built.table_versions.items()))
                print(
                    f"      built {_iso(built.built_at)}: {tables}, online rows in "
                    f"project {vh.feast_project}; {built_bytes(vh) / 2**20:.1f} MiB at {vh.folder}"
                )
    for line in found.unreadable:
        print(f"unreadable version record {line}")
    return 0


def _iso(stamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
