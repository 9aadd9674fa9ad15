"""The prediction log: every row a model version scored, in the Delta table
`<model>_predictions`, partitioned by day (UTC).

Columns: `request_id`, `model`, `version`, `served` (false: a mirrored shadow request),
`caller` (who asked: the caller the front door authenticated; empty when keys are not
required, for batch scoring's rows, and for rows logged before it was recorded),
`rollout` (where the version stood when its rows were logged, e.g. `canary: v2 at 10%`,
`shadow: v2 mirrored`; empty outside a rollout; `batch` for batch scoring's rows), `at` (UTC),
`day`, `row_key` (which
prediction point: `DeclaredModel.prediction_keys`), `features` and `vector` (the exact
feature vector scored), `score`, `batch` (the spool file it came from) and `feature_version`
(the digest of what computed the vector, `shipway.features.versions`; empty for rows logged
before it was recorded). An LLM application's
log has one row per answer instead (`ANSWER_SCHEMA`), and its callers' ratings land in
`<model>_feedback` (`FEEDBACK_SCHEMA`).

`ingest` moves the model servers' spool files (`shipway.serving.prediction_spool`) into the
tables: under a per-model lock, each file is claimed by renaming it, every claimed file is
appended in one commit per table, and only then deleted. A file left claimed by a pass that died is
appended again only if its batch is not in the table yet, so a crash anywhere neither loses a
committed row nor writes one twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from shipway.data.lake import table_exists
from shipway.files import locked
from shipway.serving.prediction_spool import (
    ANSWERS,
    FEEDBACK,
    SCORES,
    SUFFIX,
    read_spool_file,
)

log = logging.getLogger(__name__)

CLAIMED = ".ingesting"
ADDED_LATER = ("caller", "feature_version")
"""Columns a table logged before them lacks (`merge` adds them): read as empty strings."""
REJECTED = ".rejected"
# What every logged row says: which request, which version, where it stood, when.
_LOGGED = [
    ("request_id", pa.string()),
    ("model", pa.string()),
    ("version", pa.string()),
    ("served", pa.bool_()),
    ("caller", pa.string()),
    ("rollout", pa.string()),
    ("at", pa.timestamp("us", tz="UTC")),
    ("day", pa.string()),
]
SCHEMA = pa.schema(
    [
        *_LOGGED,
        ("row_key", pa.string()),
        ("features", pa.list_(pa.string())),
        ("vector", pa.list_(pa.float64())),
        ("score", pa.float64()),
        ("batch", pa.string()),
        ("feature_version", pa.string()),
    ]
)


# An LLM application's prediction log: one row per answer, with what the release gate judges
# (`shipway.serving.assistant.answer_record`).
ANSWER_SCHEMA = pa.schema(
    [
        *_LOGGED,
        ("question", pa.string()),
        ("acl", pa.string()),
        ("prompt", pa.string()),
        ("retrieved", pa.list_(pa.string())),
        ("top_score", pa.float64()),
        ("topic", pa.string()),
        ("tokens", pa.int64()),
        ("guard_in", pa.string()),
        ("guard_out", pa.string()),
        ("pii", pa.list_(pa.string())),
        ("refused", pa.bool_()),
        ("fell_back", pa.bool_()),
        ("seconds", pa.float64()),
        ("batch", pa.string()),
    ]
)
# Callers' ratings of answers (`<model>_feedback`): the application's delayed labels.
FEEDBACK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("model", pa.string()),
        ("caller", pa.string()),
        ("rating", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("day", pa.string()),
        ("batch", pa.string()),
    ]
)


def table_name(model: str) -> str:
    return f"{model}_predictions"


def feedback_table(model: str) -> str:
    return f"{model}_feedback"


def _stamps(at: list[float]) -> pd.Series:
    return pd.to_datetime(pd.Series(at, dtype=float), unit="s", utc=True).dt.floor("us")


def _frame(path: Path, batch: str, rollout: str) -> tuple[str, pa.Table]:
    """A spool file's rows, and the table they go to."""
    spool = read_spool_file(path)
    model, kind = spool["model"], spool.get("kind", SCORES)
    if kind == SCORES:
        n = len(spool["score"])
        at = _stamps(spool["at"])
        return table_name(model), pa.table(
            {
                "request_id": spool["request_id"],
                "model": [model] * n,
                "version": [spool["version"]] * n,
                "served": spool["served"],
                # A spool file an older runtime wrote names no caller.
                "caller": spool.get("caller", [""] * n),
                "rollout": [rollout] * n,
                "at": at,
                "day": at.dt.strftime("%Y-%m-%d"),
                "row_key": spool["row_key"],
                "features": [spool["features"]] * n,
                "vector": spool["vector"],
                "score": spool["score"],
                "batch": [batch] * n,
                # A spool file an older runtime (or a bundle from before) names no version.
                "feature_version": [spool.get("feature_version") or ""] * n,
            },
            schema=SCHEMA,
        )
    if kind not in (ANSWERS, FEEDBACK):
        raise ValueError(f"kind {kind!r}: expected {SCORES}, {ANSWERS} or {FEEDBACK}")
    schema = ANSWER_SCHEMA if kind == ANSWERS else FEEDBACK_SCHEMA
    table = table_name(model) if kind == ANSWERS else feedback_table(model)
    n = len(spool["request_id"])
    at = _stamps(spool["at"])
    given = {
        "caller": spool.get("caller", [""] * n),
        "model": [model] * n,
        "version": [spool["version"]] * n,
        "rollout": [rollout] * n,
        "at": at,
        "day": at.dt.strftime("%Y-%m-%d"),
        "batch": [batch] * n,
    }
    return table, pa.table(
        {f.name: given[f.name] if f.name in given else spool[f.name] for f in schema},
        schema=schema,
    )


def _committed_batches(path: Path, batches: list[str]) -> set[str]:
    if not batches or not table_exists(path):
        return set()
    found = (
        DeltaTable(str(path))
        .to_pyarrow_dataset()
        .to_table(columns=["batch"], filter=pc.field("batch").isin(batches))
    )
    return set(found.column("batch").to_pylist())


def ingest(
    spool_root: Path, lake: Path, rollout_of: Callable[[str, str], str] = lambda m, v: ""
) -> dict[str, int]:
    """Move every spooled file into its model's table (an application's feedback into its
    feedback table, in a commit of its own); prediction log rows written per model.
    `rollout_of(model, version)` says where the version stands in a rollout now."""
    written: dict[str, int] = {}
    if not spool_root.exists():
        return written
    for folder in sorted(p for p in spool_root.iterdir() if p.is_dir()):
        model = folder.name
        with locked(folder / ".lock"):
            leftover = sorted(folder.glob(f"*{CLAIMED}"))
            claimed = []
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                target = path.with_name(path.name + CLAIMED)
                with contextlib.suppress(FileNotFoundError):
                    path.rename(target)
                    claimed.append(target)
            parts: dict[str, list[tuple[Path, pa.Table]]] = {}
            for path in [*leftover, *claimed]:
                version = path.name.split("-", 1)[0]
                try:
                    table, rows = _frame(path, _batch(path), rollout_of(model, version))
                except (ValueError, KeyError, TypeError, pa.ArrowException) as exc:
                    # Kept, never deleted, and out of the way of the files after it.
                    aside = path.with_name(_batch(path) + REJECTED)
                    path.rename(aside)
                    log.error(
                        "%s: spool file %s is unreadable (%s); kept as %s", model, path, exc, aside
                    )
                    continue
                parts.setdefault(table, []).append((path, rows))
            earlier = set(leftover)
            for table, found in parts.items():
                done = _committed_batches(
                    lake / table, [_batch(p) for p, _ in found if p in earlier]
                )
                pending = []
                for path, rows in found:
                    if _batch(path) in done:
                        log.info(
                            "%s: batch %s was committed before; not written again", model, path
                        )
                        path.unlink()
                    else:
                        pending.append((path, rows))
                if not pending:
                    continue
                appended = pa.concat_tables([rows for _, rows in pending])
                # `merge`: a table logged before a column was added (`caller`) gains it.
                write_deltalake(
                    str(lake / table),
                    appended,
                    mode="append",
                    partition_by=["day"],
                    schema_mode="merge",
                )
                for path, _ in pending:
                    path.unlink()
                if table == table_name(model):
                    written[model] = appended.num_rows
                else:
                    log.info("%s: %d rows written to %s", model, appended.num_rows, table)
    return written


BATCH_ROLLOUT = "batch"
"""The `rollout` of rows batch scoring logged (`shipway.models.batch`), not a caller's."""


def log_batch(
    lake: Path,
    model: str,
    version: str,
    batch: str,
    features: list[str],
    row_keys: list[str],
    vectors: np.ndarray,
    scores: np.ndarray,
    at: datetime,
    feature_version: str = "",
) -> int:
    """Append a batch scoring run's rows (`rollout` "batch", served) to the prediction log in
    one commit, once: a `batch` id already in the table is not written again. Returns the rows
    written."""
    path = lake / table_name(model)
    with locked(lake / f".{table_name(model)}.batch.lock"):
        if _committed_batches(path, [batch]):
            log.info("%s: batch %s is in the prediction log already", model, batch)
            return 0
        n = len(scores)
        stamp = pd.Timestamp(at).tz_convert("UTC").floor("us")
        rows = pa.table(
            {
                "request_id": [batch] * n,
                "model": [model] * n,
                "version": [version] * n,
                "served": [True] * n,
                "caller": [""] * n,
                "rollout": [BATCH_ROLLOUT] * n,
                "at": [stamp] * n,
                "day": [stamp.strftime("%Y-%m-%d")] * n,
                "row_key": row_keys,
                "features": [features] * n,
                "vector": vectors.tolist(),
                "score": scores.tolist(),
                "batch": [batch] * n,
                "feature_version": [feature_version] * n,
            },
            schema=SCHEMA,
        )
        write_deltalake(str(path), rows, mode="append", partition_by=["day"], schema_mode="merge")
    return n


def _batch(path: Path) -> str:
    return path.name.removesuffix(CLAIMED).removesuffix(SUFFIX)


def read_predictions(
    lake: Path,
    model: str,
    since: datetime | None = None,
    table: str = "",
    schema: pa.Schema = SCHEMA,
) -> pd.DataFrame:
    """The model's logged rows (all, or from `since` on), oldest first; `table` and `schema`:
    an application's (`ANSWER_SCHEMA`) or its feedback (`feedback_table`, `FEEDBACK_SCHEMA`)."""
    path = lake / (table or table_name(model))
    if not table_exists(path):
        return schema.empty_table().to_pandas()
    dataset = DeltaTable(str(path)).to_pyarrow_dataset()
    predicate = None
    if since is not None:
        predicate = pc.field("day") >= since.strftime("%Y-%m-%d")
    frame = dataset.to_table(filter=predicate).to_pandas()
    for name in ADDED_LATER:
        if name in schema.names:  # rows logged before the column was added: no value
            frame[name] = frame[name].fillna("") if name in frame.columns else ""
    if since is not None:
        frame = frame[frame["at"] >= pd.Timestamp(since)]
    return frame.sort_values(["at", "request_id"], kind="stable").reset_index(drop=True)


def maintain(
    lake: Path, model: str, retention_days: int, now: datetime | None = None
) -> dict[str, int]:
    """Delete the days older than `retention_days`, then compact the small files the 5-second
    appends leave and checkpoint the log. Old table versions keep deleted rows until a vacuum,
    under the table's own retention."""
    path = lake / table_name(model)
    if not table_exists(path):
        return {"deleted_rows": 0, "files_removed": 0, "files_added": 0}
    cutoff = ((now or datetime.now(UTC)) - timedelta(days=retention_days)).strftime("%Y-%m-%d")
    table = DeltaTable(str(path))
    deleted = table.delete(f"day < '{cutoff}'")
    compacted = table.optimize.compact()
    table.create_checkpoint()
    return {
        "deleted_rows": int(deleted.get("num_deleted_rows", 0) or 0),
        "files_removed": int(compacted.get("numFilesRemoved", 0) or 0),
        "files_added": int(compacted.get("numFilesAdded", 0) or 0),
    }
