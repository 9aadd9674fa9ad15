"""Append-only Delta tables of records, read back oldest first: the admission ledger
(`shipway.data.admission`) and the release audit (`shipway.release.audit`).

Shipway only ever appends one row at a time; Delta keeps every version, so an edit or a delete
by anyone else would show in the table's history too. Records are plain columns; a caller
that keeps structured values stores them as JSON text.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from deltalake import write_deltalake

from shipway.data.lake import read_table, table_exists


class DeltaLedger:
    """One append-only Delta table at `path`, its records ordered by `time_column` (UTC)."""

    def __init__(self, path: Path, time_column: str) -> None:
        self.path = path
        self.time_column = time_column

    def append(self, record: Mapping[str, Any]) -> None:
        row = pd.DataFrame({name: [value] for name, value in record.items()})
        stamps = pd.to_datetime(row[self.time_column], utc=True)
        row[self.time_column] = stamps.astype("datetime64[us, UTC]")
        write_deltalake(str(self.path), row, mode="append")

    def records(self, **equal: str) -> list[dict[str, Any]]:
        """Every record whose columns equal the given values, oldest first (none before the
        first append)."""
        if not table_exists(self.path):
            return []
        frame = read_table(self.path).sort_values(self.time_column, kind="stable")
        for column, value in equal.items():
            frame = frame[frame[column] == value]
        return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]
