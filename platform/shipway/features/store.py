"""Feast operations: the store on the repository, its CLI, point-in-time joins, online lookups.

Which features a model sees is its feature service's business (`shipway.features.service`);
this module only runs Feast.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from shipway.errors import ShipwayError
from shipway.features.online_state import (
    REDIS_ENV,
    OnlineState,
    ViewState,
    Window,
    online_store_kind,
    windows,
)
from shipway.features.service import ServiceSpec, entity_rows, feature_frame
from shipway.files import write_atomic
from shipway.names import EVENT_TIMESTAMP
from shipway.paths import ShipwayHome
from shipway.processes import LOOPBACK, environment


def ensure_delta_extension() -> None:
    """Install DuckDB's delta extension from its PyPI wheel (nothing is downloaded).

    Feast's duckdb offline store reads Delta through it; DuckDB would otherwise try to fetch
    it from the internet on first use.
    """
    import duckdb
    import duckdb_extension_delta

    con = duckdb.connect()
    try:
        installed = con.execute(
            "select installed from duckdb_extensions() where extension_name = 'delta'"
        ).fetchone()
        if installed and installed[0]:
            return
        ext = Path(duckdb_extension_delta.__file__).parent / "extensions"
        files = sorted(ext.glob(f"v{duckdb.__version__}/delta.duckdb_extension"))
        if not files:
            raise ShipwayError(
                f"duckdb-extension-delta has no build for DuckDB {duckdb.__version__}; "
                "reinstall with deploy/setup.sh"
            )
        con.install_extension(str(files[0]))
    finally:
        con.close()


def store_yaml(home: ShipwayHome) -> Path:
    """The repository's feature_store.yaml with the chosen online store, in the home.

    A feature version's home names its own Feast project (`shipway_<digest>`): Redis keys
    carry the project, so two versions' rows for one entity never meet. SQLite is the
    repository's own setting; with $SHIPWAY_ONLINE_STORE=redis the online store is
    Redis at $SHIPWAY_REDIS (127.0.0.1:6379 by default), everything else unchanged. Feast's CLI
    and SDK both read this one file, so `feast apply`, materialization and lookups agree.
    """
    import yaml

    config = yaml.safe_load((home.feature_repo / "feature_store.yaml").read_text())
    if home.feast_project is not None:
        config["project"] = home.feast_project
    if online_store_kind() == "redis":
        config["online_store"] = {
            "type": "redis",
            "connection_string": os.environ.get(REDIS_ENV, f"{LOOPBACK}:6379"),
        }
    path = home.feast / "feature_store.yaml"
    text = yaml.safe_dump(config, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        write_atomic(path, text)
    return path


def feast_cli(home: ShipwayHome, *args: str) -> str:
    """Run the Feast CLI against the repository, with Shipway's paths in its environment."""
    config = store_yaml(home)
    env = {**os.environ, **home.environment()}
    feast = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast), "--chdir", str(home.feature_repo), "--feature-store-yaml", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise ShipwayError(f"feast {' '.join(args)} failed: {tail}")
    return result.stdout


@dataclass(frozen=True)
class Applied:
    """One `feast apply` of the repository, or its skip: nothing it reads had changed."""

    digest: str
    output: str | None  # the CLI's output; None when skipped

    @property
    def skipped(self) -> bool:
        return self.output is None


def repository_digest(home: ShipwayHome) -> str:
    """What `feast apply` reads: the repository's files, the effective feature_store.yaml and
    the paths it resolves. The views declare their schemas, so table contents do not count."""
    sha = hashlib.sha256()
    for path in sorted(home.feature_repo.glob("*.py")):
        sha.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    sha.update(store_yaml(home).read_bytes())
    sha.update(json.dumps(home.environment(), sort_keys=True).encode())
    return sha.hexdigest()[:16]


def apply_repository(home: ShipwayHome) -> Applied:
    """`feast apply`, unless the registry already holds this repository as it is: a re-apply of
    unchanged definitions takes seconds and changes nothing. The digest of the last apply is
    kept beside the registry; a missing registry or SQLite online store applies again."""
    digest = repository_digest(home)
    marker = home.feast / "applied.json"
    needed = [home.feast / "registry.db"]
    if online_store_kind() == "sqlite":
        needed.append(home.feast / "online_store.db")
    if marker.exists() and all(p.exists() for p in needed):
        with contextlib.suppress(ValueError, KeyError):
            if json.loads(marker.read_text())["digest"] == digest:
                return Applied(digest, None)
    marker.unlink(missing_ok=True)
    output = feast_cli(home, "apply")
    write_atomic(marker, json.dumps({"digest": digest, "applied_at": time.time()}))
    return Applied(digest, output)


def feature_store(home: ShipwayHome):  # type: ignore[no-untyped-def]  # feast is untyped
    """A FeatureStore on the repository; the registry holds where each source lives."""
    from feast import FeatureStore

    ensure_delta_extension()
    # feature_store.yaml reads the home's paths from the environment when the store is made.
    with environment(home.environment()):
        return FeatureStore(repo_path=str(home.feature_repo), fs_yaml_file=store_yaml(home))


# Entity rows joined per call: Feast's file offline store holds every row of a call, and the
# feature rows in its time range, in memory several times over (4.1M rows took over 21 GB).
JOIN_CHUNK_ROWS = 200_000


def historical_features(  # type: ignore[no-untyped-def]
    store, entity_df: pd.DataFrame, service: str, chunk_rows: int = JOIN_CHUNK_ROWS
) -> pd.DataFrame:
    """Point-in-time join: for each row, the feature values known at its event_timestamp.

    Rows are joined `chunk_rows` at a time, in time order: each row's values depend only on the
    feature rows stamped before it, so the chunks give the same values as one call, and Feast
    reads for each chunk only the feature rows its time range needs. Rows come back in no set
    order, as from Feast.

    One column per name: a request field an on-demand view passes through (`amount`) comes back
    twice, the entity row's column and then the view's output, and the output is the feature.
    """
    features = store.get_feature_service(service)
    ordered = entity_df.sort_values(EVENT_TIMESTAMP, kind="stable")
    parts = []
    for start in range(0, max(len(ordered), 1), chunk_rows):
        chunk = ordered.iloc[start : start + chunk_rows]
        joined = store.get_historical_features(entity_df=chunk, features=features).to_df()
        parts.append(joined.loc[:, ~joined.columns.duplicated(keep="last")])
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def online_features(store, rows: pd.DataFrame, spec: ServiceSpec) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The feature vector of each row from the online store: join keys and request fields in,
    the service's features out, in order, with the feature views' defaults for unknown entities."""
    found = store.get_online_features(
        features=store.get_feature_service(spec.name), entity_rows=entity_rows(rows, spec)
    ).to_dict()
    return feature_frame(pd.DataFrame(dict(found), index=rows.index), spec)


def materialize_online(  # type: ignore[no-untyped-def]  # feast is untyped
    store, start: datetime, end: datetime, views: list[str] | None = None
) -> None:
    """Load the latest feature rows stamped in [start, end] into the online store.

    The range is explicit (the data's own time span) rather than "the last ttl before now":
    simulated or backfilled history is older than the wall clock.
    """
    store.materialize(start_date=start, end_date=end, feature_views=views)


@dataclass(frozen=True)
class Materialized:
    loaded: list[Window]
    skipped: list[str]


def materialize_incremental(home: ShipwayHome, full: bool = False, store=None) -> Materialized:  # type: ignore[no-untyped-def]
    """Load each feature view's rows newer than what the online store holds (all with `full`).

    One `materialize` per view over its own window, and the view's state is saved right after,
    so a run that dies halfway redoes only the views it had not finished.
    """
    store = store or feature_store(home)
    views = {
        v.name: Path(str(v.batch_source.path)).name
        for v in store.list_feature_views()
        if home.serves_table(Path(str(v.batch_source.path)).name)
    }
    state = OnlineState.load(home)
    todo, skipped = windows(home, views, state, full)
    for window in todo:
        materialize_online(store, window.start, window.end, [window.view])
        state.views[window.view] = ViewState(
            window.table,
            window.start.timestamp(),
            window.end.timestamp(),
            window.table_version,
            time.time(),
        )
        state.save(home)
    for gone in set(state.views) - set(views):
        del state.views[gone]
    state.save(home)
    return Materialized(todo, skipped)
