"""What the online store holds, per feature view: the window last materialized, its newest row.

Materialization is incremental: a view's next run reads only the rows stamped after the newest
row it already loaded (Feast's `materialize` over [that row, the table's newest]), so a day of
new features costs a day, not the whole history. A restatement of old days (a dbt backfill) is
not "new": `full=True` (`shipway features materialize --full`) reloads everything.

The online store is `$SHIPWAY_ONLINE_STORE`'s: SQLite (the embedded default) or Redis. The
state (`<feast dir>/online_state_<store>.json`, one per online store kind) is written after
Feast has written the rows, so a run killed halfway is simply redone. Freshness compares it with
the Delta tables' own newest row (from the transaction log's file statistics, nothing is
scanned): the feature service exports both, and the `online_store` asset shows them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from shipway.errors import ShipwayError
from shipway.files import write_atomic
from shipway.names import EVENT_TIMESTAMP
from shipway.paths import ShipwayHome

ONLINE_STORE_ENV = "SHIPWAY_ONLINE_STORE"
REDIS_ENV = "SHIPWAY_REDIS"
ONLINE_STORES = ("sqlite", "redis")


def online_store_kind() -> str:
    """`sqlite` (the embedded default) or `redis`: $SHIPWAY_ONLINE_STORE."""
    kind = os.environ.get(ONLINE_STORE_ENV, "sqlite")
    if kind not in ONLINE_STORES:
        raise ShipwayError(f"{ONLINE_STORE_ENV}={kind!r}: choose one of {list(ONLINE_STORES)}")
    return kind


@dataclass(frozen=True)
class ViewState:
    table: str
    window_start: float
    window_end: float
    """The newest row loaded so far: the next run starts here."""
    table_version: int
    materialized_at: float


@dataclass(frozen=True)
class Freshness:
    online_newest: float
    offline_newest: float

    @property
    def lag_seconds(self) -> float:
        return max(0.0, self.offline_newest - self.online_newest)


@dataclass(frozen=True)
class TableSpan:
    """A Delta table's oldest and newest event_timestamp (epoch seconds) and its version."""

    oldest: float
    newest: float
    version: int


def table_span(path: Path) -> TableSpan | None:
    """The table's time span from its log's file statistics (nothing is scanned); None for a
    table with no rows or no statistics."""
    from deltalake import DeltaTable

    if not (path / "_delta_log").exists():
        return None
    table = DeltaTable(str(path))
    actions = table.get_add_actions(flatten=True)
    bounds = []
    for column in (f"min.{EVENT_TIMESTAMP}", f"max.{EVENT_TIMESTAMP}"):
        if column not in actions.schema.names:
            return None
        values = [v for v in actions.column(column).to_pylist() if v is not None]
        if not values:
            return None
        bounds.append(values)
    oldest, newest = (
        (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
        for v in (min(bounds[0]), max(bounds[1]))
    )
    return TableSpan(oldest, newest, table.version())


@dataclass
class OnlineState:
    views: dict[str, ViewState] = field(default_factory=dict)

    @classmethod
    def path(cls, home: ShipwayHome) -> Path:
        return home.feast / f"online_state_{online_store_kind()}.json"

    @classmethod
    def load(cls, home: ShipwayHome) -> OnlineState:
        """The state as saved; an empty one when there is none or it cannot be read (the next
        materialization loads every view again)."""
        path = cls.path(home)
        if not path.exists():
            return cls()
        try:
            return cls.read(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls()

    @classmethod
    def read(cls, path: Path) -> OnlineState:
        """The state in `path`, or the error reading it raised."""
        raw = json.loads(path.read_text())
        return cls({name: ViewState(**view) for name, view in raw["views"].items()})

    def save(self, home: ShipwayHome) -> None:
        views = {k: asdict(v) for k, v in self.views.items()}
        write_atomic(self.path(home), json.dumps({"views": views}))

    def freshness(self, home: ShipwayHome) -> dict[str, Freshness]:
        out: dict[str, Freshness] = {}
        for name, view in self.views.items():
            span = table_span(home.table(view.table))
            offline = span.newest if span else view.window_end
            out[name] = Freshness(view.window_end, offline)
        return out


@dataclass(frozen=True)
class Window:
    view: str
    table: str
    start: datetime
    end: datetime
    table_version: int

    def describe(self) -> str:
        return f"{self.view}: {self.start:%Y-%m-%d %H:%M} → {self.end:%Y-%m-%d %H:%M}"


def windows(
    home: ShipwayHome, views: dict[str, str], state: OnlineState, full: bool
) -> tuple[list[Window], list[str]]:
    """Per view (name → its Delta table): the window to load, or why there is none."""
    todo: list[Window] = []
    skipped: list[str] = []
    for view, table in sorted(views.items()):
        span = table_span(home.table(table))
        if span is None:
            skipped.append(f"{view}: table {table} has no rows yet")
            continue
        end = span.newest
        known = state.views.get(view)
        if known is not None and not full and known.table == table and known.window_end >= end:
            skipped.append(f"{view}: up to date (newest row {_iso(end)})")
            continue
        incremental = known is not None and not full and known.table == table
        start = known.window_end if known is not None and incremental else span.oldest
        todo.append(Window(view, table, _dt(start), _dt(end), span.version))
    return todo, skipped


def _dt(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, tz=UTC)


def _iso(stamp: float) -> str:
    return _dt(stamp).strftime("%Y-%m-%d %H:%M")
