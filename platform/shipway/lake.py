"""Delta Lake tables through delta-rs (`deltalake`): land by day, publish, time travel."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from shipway.errors import ShipwayError

# Keys Shipway writes into a commit's metadata; Delta adds its own (operation, timestamp...).
_LINEAGE_PREFIX = "shipway."


@dataclass(frozen=True)
class TableInfo:
    path: str
    version: int
    row_count: int
    columns: list[tuple[str, str]]
    commit_metadata: dict[str, str] = field(default_factory=dict)

    def metadata(self) -> dict[str, int | str]:
        """Plain values for a Dagster materialization."""
        return {
            "delta_version": self.version,
            "row_count": self.row_count,
            "path": self.path,
            "schema": ", ".join(f"{name}: {dtype}" for name, dtype in self.columns),
        }


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


def table_info(path: Path | str, version: int | None = None) -> TableInfo:
    table = _open(path, version)
    arrow_schema = pa.schema(table.schema().to_arrow())
    rows = _row_count(table)
    history = table.history(1)
    lineage = {
        k.removeprefix(_LINEAGE_PREFIX): str(v)
        for k, v in (history[0] if history else {}).items()
        if k.startswith(_LINEAGE_PREFIX)
    }
    return TableInfo(
        path=str(path),
        version=int(table.version()),
        row_count=rows,
        columns=[(f.name, str(f.type)) for f in arrow_schema],
        commit_metadata=lineage,
    )


def _row_count(table: DeltaTable) -> int:
    actions = pa.table(table.get_add_actions(flatten=True))
    return int(pa.compute.sum(actions.column("num_records")).as_py() or 0)


def read_table(
    path: Path | str, version: int | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    frame: pd.DataFrame = _open(path, version).to_pandas(columns=columns)
    return frame


def land_days(path: Path | str, events: pd.DataFrame) -> TableInfo:
    """Write events so each day present replaces that day's rows: one commit, no duplicates."""
    days = sorted({str(d) for d in events["event_date"]})
    if not table_exists(path):
        # Partitioned by day: re-landing a day rewrites only that day's files.
        write_deltalake(str(path), events, partition_by=["event_date"])
    else:
        predicate = "event_date IN ({})".format(", ".join(f"'{d}'" for d in days))
        write_deltalake(str(path), events, mode="overwrite", predicate=predicate)
    return table_info(path)


def overwrite_table(
    path: Path | str, frame: pd.DataFrame, commit_metadata: dict[str, str] | None = None
) -> TableInfo:
    """Replace a table's contents and schema in one new version; older versions stay readable."""
    properties = CommitProperties(
        custom_metadata={f"{_LINEAGE_PREFIX}{k}": v for k, v in (commit_metadata or {}).items()}
    )
    write_deltalake(
        str(path), frame, mode="overwrite", schema_mode="overwrite", commit_properties=properties
    )
    return table_info(path)
