"""Batch scoring: every day, the champion scores a declared population.

A day's population is every entity with a row in the declaration's `batch.population` table in
the `lookback_days` before the day's end; each is scored as of the day's end (its
`event_timestamp`) with the feature service's point-in-time values, the ones training joins.
The scores come from the champion's registered bundle through the serving runtime's own
`Scorer` (the code MLServer runs), in requests of at most `MAX_TREE_ROWS` rows, so a row scores
exactly as a request of its own does online. With a Dask cluster, its workers read the
population table (dask-deltatable) and score the rows, each a contiguous share, with the same
code.

The scores replace the day's partition of `<model>_batch_scores` (Delta, by `event_date`), and
the rows enter the prediction log once per day and version (`rollout` "batch"), so live
drift, live quality and skew see them with the online rows.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from dask_deltatable import read_deltalake

from shipway.data.lake import TableInfo, land_days, read_table
from shipway.errors import ShipwayError
from shipway.features.service import feature_frame, registry_spec
from shipway.features.store import feature_store, historical_features
from shipway.features.version_store import features_home
from shipway.models.catalog import DeclaredModel
from shipway.models.distributed import IN_PROCESS, DaskCluster, engine_name, workers_of
from shipway.models.tracking import champion_version
from shipway.models.training import registered_bundle
from shipway.names import EVENT_TIMESTAMP, SCORE
from shipway.paths import ShipwayHome
from shipway.serving.bundle import MODEL_FILE
from shipway.serving.prediction_log import log_batch
from shipway.serving.trees import Scorer

log = logging.getLogger(__name__)

VERSION_COLUMN = "model_version"
DAY_COLUMN = "event_date"


@dataclass(frozen=True)
class BatchScores:
    day: date
    version: str
    scores: pd.DataFrame
    """Entity keys, `event_timestamp`, the score and the version, in key order."""
    vectors: np.ndarray
    features: list[str]
    engine: str
    table: TableInfo | None
    """The `<model>_batch_scores` version written; None for an empty population."""
    logged_rows: int
    """Rows this run added to the prediction log (0 when the day was logged before)."""


def population(
    home: ShipwayHome, declared: DeclaredModel, day: date, cluster: DaskCluster | None = None
) -> pd.DataFrame:
    """The entities active in the lookback before `day`'s end, stamped at that end. With a
    Dask cluster, its workers read the population table (dask-deltatable) and find them."""
    declaration = declared.declaration
    batch = declaration.batch
    if batch is None:
        raise ShipwayError(f"{declaration.name} declares no batch scoring (`batch:`)")
    keys = declaration.entity_keys
    end = pd.Timestamp(day, tz=UTC) + pd.Timedelta(days=1)
    start = end - pd.Timedelta(days=batch.lookback_days)
    path, columns = home.table(batch.population), [*keys, EVENT_TIMESTAMP]
    if cluster is None:
        rows = read_table(path, columns=columns)
        stamps = pd.to_datetime(rows[EVENT_TIMESTAMP], utc=True)
        active = rows[(stamps >= start) & (stamps < end)][keys].drop_duplicates()
    else:
        with cluster.client():
            found = read_deltalake(str(path), columns=columns)
            stamps = found[EVENT_TIMESTAMP]
            active = found[(stamps >= start) & (stamps < end)][keys].drop_duplicates().compute()
    entities = active.drop_duplicates().sort_values(keys, ignore_index=True)
    entities[EVENT_TIMESTAMP] = end
    return entities


def _score_share(model: bytes, rows: np.ndarray) -> np.ndarray:
    """Runs on a Dask worker: the serving runtime's scorer over its share."""
    booster = xgb.Booster()
    booster.load_model(bytearray(model))
    booster.set_param({"nthread": 1})
    return Scorer(booster).as_requests(rows)


def _score(
    model_file: Path, rows: np.ndarray, cluster: DaskCluster | None
) -> tuple[np.ndarray, str]:
    model = model_file.read_bytes()
    if cluster is None or not len(rows):
        return _score_share(model, rows), IN_PROCESS
    with cluster.client() as client:
        workers = workers_of(client, cluster.scheduler)
        bounds = [len(rows) * i // len(workers) for i in range(len(workers) + 1)]
        shares = [
            client.submit(
                _score_share,
                model,
                rows[start:stop],
                workers=[worker],
                allow_other_workers=False,
                pure=False,
            )
            for worker, start, stop in zip(workers, bounds, bounds[1:], strict=False)
        ]
        scored = client.gather(shares)
    return np.concatenate(scored), engine_name(len(workers))


def score_day(
    home: ShipwayHome,
    tracking_uri: str,
    declared: DeclaredModel,
    day: date,
    cluster: DaskCluster | None,
    say: Callable[[str], None],
    now: datetime | None = None,
) -> BatchScores:
    """Score `day`'s population with the champion, write the day's partition and log it."""
    declaration = declared.declaration
    name = declaration.name
    version = champion_version(tracking_uri, name)
    if version is None:
        raise ShipwayError(
            f"{name} has no champion version to score with: deploy one "
            f"({declaration.deployment}) before {declaration.batch_scores}"
        )
    entities = population(home, declared, day, cluster)
    assert declaration.batch is not None
    say(
        f"{len(entities)} entities of {declaration.batch.population} active in the "
        f"{declaration.batch.lookback_days} days to {day} score with {name} v{version}"
    )
    with tempfile.TemporaryDirectory(prefix="shipway-batch-") as tmp:
        bundle = registered_bundle(tracking_uri, declaration, version, Path(tmp))
        # The champion's own feature version: its tables and registry, as it was trained.
        store = feature_store(features_home(home, bundle.feature_version or ""))
        spec = registry_spec(store, bundle.feature_service or "")
        features = bundle.reference.feature_names
        if list(spec.feature_names) != features:
            raise ShipwayError(
                f"{name} v{version} scores {features}, but feature service {spec.name} now "
                f"gives {list(spec.feature_names)}: retrain before batch scoring"
            )
        if entities.empty:
            joined = entities.reindex(columns=[*entities.columns, *features])
        else:
            joined = historical_features(store, entities, spec.name)
            joined = joined.sort_values(declaration.entity_keys, ignore_index=True)
        vectors = feature_frame(joined, spec).to_numpy(dtype=float)
        scores, engine = _score(bundle.path / MODEL_FILE, vectors, cluster)
        prediction_keys = bundle.prediction_keys
        feature_version = bundle.feature_version
    keys = [*declaration.entity_keys, EVENT_TIMESTAMP]
    frame = joined[keys].copy()
    frame[SCORE] = scores
    frame[VERSION_COLUMN] = version
    if frame.empty:
        say(f"no entity was active in the {declaration.batch.lookback_days} days to {day}")
        return BatchScores(day, version, frame, vectors, features, engine, None, 0)
    written = land_days(
        home.table(declaration.batch_scores),
        frame.assign(**{DAY_COLUMN: day.isoformat()}),
        {"model_version": version, "engine": engine},
    )
    row_keys = prediction_keys.of(frame) if prediction_keys else None
    logged = log_batch(
        home.lake,
        name,
        version,
        f"batch-{day.isoformat()}-v{version}",
        features,
        row_keys or [""] * len(frame),
        vectors,
        scores,
        now or datetime.now(UTC),
        feature_version=feature_version or "",
    )
    say(
        f"{len(frame)} scores written to {declaration.batch_scores} v{written.version} "
        f"({engine}); {logged} rows added to the prediction log"
    )
    return BatchScores(day, version, frame, vectors, features, engine, written, logged)
