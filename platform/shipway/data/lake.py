"""Delta Lake tables through delta-rs (`deltalake`): land by day, publish, time travel."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from shipway.errors import ShipwayError

# Keys Shipway writes into a commit's metadata; Delta adds its own (operation, timestamp...).
_LINEAGE_PREFIX = "shipway."
# Which call wrote a version (`overwrite_table` finds its own among concurrent writers).
_WRITE_ID = f"{_LINEAGE_PREFIX}write_id"
# Retention of old versions unless a contract says otherwise: the Delta log and the files a
# newer version replaced stay this long, so time travel to any version a model, a training set
# or a quarantine entry names keeps working. Shipway never vacuums on its own.
DEFAULT_RETENTION_DAYS = 365


@dataclass(frozen=True)
class TableInfo:
    path: str
    version: int
    row_count: int
    columns: list[tuple[str, str]]
    commit_metadata: dict[str, str] = field(default_factory=dict)
    content_digest: str | None = None

    @property
    def schema_hash(self) -> str:
        return schema_hash(self.columns)

    def metadata(self) -> dict[str, int | str]:
        """Plain values for a Dagster materialization."""
        values: dict[str, int | str] = {
            "delta_version": self.version,
            "row_count": self.row_count,
            "path": self.path,
            "schema": ", ".join(f"{name}: {dtype}" for name, dtype in self.columns),
            "schema_hash": self.schema_hash,
        }
        if self.content_digest is not None:
            values["content_digest"] = self.content_digest
        return values


def schema_hash(columns: list[tuple[str, str]]) -> str:
    """Names and types in order: equal hashes mean the same schema."""
    text = ";".join(f"{name}:{dtype}" for name, dtype in columns)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_digest(frame: pd.DataFrame) -> str:
    """A digest of the rows as a multiset: independent of row and column order, sensitive to
    any changed, added, removed or duplicated row. Cells pandas cannot hash (lists, maps: a
    landed file's nested column) are hashed by their text, so such a batch still gets a
    version its contract can reject by name."""
    try:
        header, hashes = _row_hashes(frame, as_text=False)
    except TypeError:
        header, hashes = _row_hashes(frame, as_text=True)
    return _digest(header, hashes)


def _row_hashes(frame: pd.DataFrame, as_text: bool) -> tuple[bytes, np.ndarray]:
    ordered = frame[sorted(frame.columns)]
    if as_text:
        ordered = ordered.map(_as_text)
    hashes = pd.util.hash_pandas_object(ordered, index=False)
    header = ";".join(f"{c}:{ordered[c].dtype}" for c in ordered.columns).encode()
    return header, hashes.to_numpy()


def _digest(header: bytes, hashes: np.ndarray) -> str:
    return hashlib.sha256(header + np.sort(hashes).tobytes()).hexdigest()[:32]


DIGEST_BATCH_ROWS = 500_000


def table_digest(table: DeltaTable, batch_rows: int = DIGEST_BATCH_ROWS) -> str:
    """`content_digest` of the whole table, read `batch_rows` at a time: at 10M rows, the table
    is never in pandas at once. A batch is typed as the whole table would be (an integer or
    boolean column with a null anywhere is float or object in every batch), so the digest is
    the one `content_digest(table.to_pandas())` gives."""
    dataset = table.to_pyarrow_dataset()
    nullable = {
        f.name: "float64" if pa.types.is_integer(f.type) else "object"
        for f in dataset.schema
        if (pa.types.is_integer(f.type) or pa.types.is_boolean(f.type))
        and dataset.to_table(columns=[f.name]).column(f.name).null_count
    }

    def hashed(as_text: bool) -> tuple[bytes | None, list[np.ndarray]]:
        header, parts = None, []
        for batch in dataset.to_batches(batch_size=batch_rows):
            frame = batch.to_pandas()
            for name, dtype in nullable.items():
                frame[name] = frame[name].astype(dtype)
            header, hashes = _row_hashes(frame, as_text)
            parts.append(hashes)
        return header, parts

    try:
        header, parts = hashed(as_text=False)
    except TypeError:  # cells pandas cannot hash, in some batch: as `content_digest` does
        header, parts = hashed(as_text=True)
    if header is None:
        return content_digest(dataset.schema.empty_table().to_pandas())
    return _digest(header, np.concatenate(parts))


def _as_text(value: object) -> object:
    if isinstance(value, np.ndarray):
        return repr(value.tolist())
    return repr(value) if isinstance(value, list | dict | tuple | set) else value


def table_exists(path: Path | str) -> bool:
    try:
        DeltaTable(str(path))
    except TableNotFoundError:
        return False
    return True


def _open(path: Path | str, version: int | None = None) -> DeltaTable:
    try:
        return DeltaTable(str(path), version=version)
    except TableNotFoundError:
        raise ShipwayError(
            f"no Delta table at {path}: materialize the asset that writes `{Path(path).name}` first"
        ) from None


def _schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def arrow_schema(path: Path | str, version: int | None = None) -> pa.Schema:
    return _schema(_open(path, version))


def table_info(path: Path | str, version: int | None = None, digest: bool = False) -> TableInfo:
    """Version, size, schema and Shipway's commit metadata; `digest` reads the rows too."""
    table = _open(path, version)
    schema = _schema(table)
    rows = _row_count(table)
    lineage = {
        k.removeprefix(_LINEAGE_PREFIX): str(v)
        for k, v in _commit(table, table if version is None else _open(path)).items()
        if k.startswith(_LINEAGE_PREFIX) and k != _WRITE_ID
    }
    return TableInfo(
        path=str(path),
        version=int(table.version()),
        row_count=rows,
        columns=[(f.name, str(f.type)) for f in schema],
        commit_metadata=lineage,
        content_digest=table_digest(table) if digest else None,
    )


def version_with(path: Path | str, key: str, value: str, limit: int = 200) -> int | None:
    """The newest of the last `limit` versions whose commit metadata says `key` is `value`
    (e.g. which version a run wrote, whatever others wrote since)."""
    for commit in _open(path).history(limit):
        if str(commit.get(f"{_LINEAGE_PREFIX}{key}")) == value:
            return int(commit["version"])
    return None


def committed_values(path: Path | str, key: str) -> list[tuple[int, str]]:
    """(version, value) of every commit whose metadata holds `key`, oldest first."""
    if not table_exists(path):
        return []
    found = [
        (int(c["version"]), str(c[f"{_LINEAGE_PREFIX}{key}"]))
        for c in _open(path).history()
        if f"{_LINEAGE_PREFIX}{key}" in c
    ]
    return sorted(found)


def _commit(table: DeltaTable, newest: DeltaTable) -> dict[str, object]:
    """The commit that made `table`'s version. delta-rs's `history` on a table loaded at an
    older version lists the newest commits numbered as if they were that version's (measured
    with deltalake 1.x), so it is read from the newest table and matched by number."""
    version = int(table.version())
    back = int(newest.version()) - version + 1
    return next((dict(c) for c in newest.history(back) if c["version"] == version), {})


def _row_count(table: DeltaTable) -> int:
    actions = pa.table(table.get_add_actions(flatten=True))
    return int(pa.compute.sum(actions.column("num_records")).as_py() or 0)


def read_table(
    path: Path | str, version: int | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    frame: pd.DataFrame = _open(path, version).to_pandas(columns=columns)
    return frame


def read_arrow(
    path: Path | str, version: int | None = None, columns: list[str] | None = None
) -> pa.Table:
    """A version's columns as Arrow, in the order `read_table` gives its rows: text stays in
    Arrow's buffers, not one Python object per value (a tenth of the memory at 10M rows)."""
    return _open(path, version).to_pyarrow_table(columns=columns)


Rows: TypeAlias = pd.DataFrame | pa.Table
"""What a table is written from: pandas, or Arrow as it was read or built."""


def _arrow(frame: Rows) -> pa.Table:
    """The rows only: a shuffled or filtered frame's index must not become a column. An empty
    text column has no inferable type; Delta needs one, so it is stored as string."""
    table = (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    for i, column in enumerate(table.schema):
        if pa.types.is_null(column.type):
            table = table.set_column(i, column.name, table.column(i).cast(pa.string()))
    return table


def _retention(days: int) -> dict[str, str | None]:
    interval = f"interval {days} days"
    return {"delta.logRetentionDuration": interval, "delta.deletedFileRetentionDuration": interval}


def _properties(commit_metadata: dict[str, str] | None) -> CommitProperties:
    return CommitProperties(
        custom_metadata={f"{_LINEAGE_PREFIX}{k}": v for k, v in (commit_metadata or {}).items()}
    )


def land_days(
    path: Path | str,
    events: Rows,
    commit_metadata: dict[str, str] | None = None,
    retention_days: int = DEFAULT_RETENTION_DAYS,
) -> TableInfo:
    """Write events so each day present replaces that day's rows: one commit, no duplicates."""
    dates = (
        pc.unique(events["event_date"]).to_pylist()
        if isinstance(events, pa.Table)
        else events["event_date"].unique()
    )
    days = sorted({str(d) for d in dates})
    if not table_exists(path):
        # Partitioned by day: re-landing a day rewrites only that day's files.
        write_deltalake(
            str(path),
            _arrow(events),
            partition_by=["event_date"],
            configuration=_retention(retention_days),
            commit_properties=_properties(commit_metadata),
        )
    else:
        predicate = "event_date IN ({})".format(", ".join(f"'{d}'" for d in days))
        write_deltalake(
            str(path),
            _arrow(events),
            mode="overwrite",
            predicate=predicate,
            commit_properties=_properties(commit_metadata),
        )
    return table_info(path, digest=True)


def overwrite_table(
    path: Path | str,
    frame: Rows,
    commit_metadata: dict[str, str] | None = None,
    retention_days: int = DEFAULT_RETENTION_DAYS,
) -> TableInfo:
    """Replace a table's contents and schema in one new version; older versions stay readable.
    The answer is about the version this call wrote, even when another writer committed one
    right after it."""
    write_id = uuid.uuid4().hex
    write_deltalake(
        str(path),
        _arrow(frame),
        mode="overwrite",
        schema_mode="overwrite",
        configuration=_retention(retention_days),
        commit_properties=_properties({**(commit_metadata or {}), "write_id": write_id}),
    )
    return table_info(path, version_with(path, "write_id", write_id), digest=True)


def table_properties(path: Path | str) -> dict[str, str]:
    return dict(_open(path).metadata().configuration)
