"""Feast operations: the store on the repository, its CLI, point-in-time joins, online lookups.

Which features a model sees is its feature service's business (`shipway.features.service`);
this module only runs Feast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from shipway.errors import ShipwayError
from shipway.features.service import ServiceSpec, entity_rows, feature_frame
from shipway.paths import FEATURE_REPO_DIR, ShipwayHome


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


def feast_cli(home: ShipwayHome, *args: str) -> str:
    """Run the Feast CLI against the repository, with Shipway's paths in its environment."""
    home.feast.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **home.environment()}
    feast = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast), "--chdir", str(FEATURE_REPO_DIR), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise ShipwayError(f"feast {' '.join(args)} failed: {tail}")
    return result.stdout


def feature_store(home: ShipwayHome):  # type: ignore[no-untyped-def]  # feast is untyped
    """A FeatureStore on the repository; the registry holds where each source lives."""
    from feast import FeatureStore

    ensure_delta_extension()
    # feature_store.yaml reads the home's paths from the environment when the store is made.
    environment = home.environment()
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        return FeatureStore(repo_path=str(FEATURE_REPO_DIR))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def historical_features(store, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Point-in-time join: for each row, the feature values known at its event_timestamp.

    One column per name: a request field an on-demand view passes through (`amount`) comes back
    twice, the entity row's column and then the view's output, and the output is the feature.
    """
    job = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(service)
    )
    joined: pd.DataFrame = job.to_df()
    return joined.loc[:, ~joined.columns.duplicated(keep="last")]


def online_features(store, rows: pd.DataFrame, spec: ServiceSpec) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The feature vector of each row from the online store: join keys and request fields in,
    the service's features out, in order, with the feature views' defaults for unknown entities."""
    found = store.get_online_features(
        features=store.get_feature_service(spec.name), entity_rows=entity_rows(rows, spec)
    ).to_dict()
    return feature_frame(pd.DataFrame(dict(found), index=rows.index), spec)


def materialize_online(store, start: datetime, end: datetime) -> None:  # type: ignore[no-untyped-def]
    """Load the latest feature rows stamped in [start, end] into the online store.

    The range is explicit (the data's own time span) rather than "the last ttl before now":
    simulated or backfilled history is older than the wall clock.
    """
    store.materialize(start_date=start, end_date=end)
