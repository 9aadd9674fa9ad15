"""Who asked, and what they may see, as a model server knows it.

The front door authenticates every caller and names it to the model servers in a header it sets
itself (`shipway.serving.protocol.CALLER_HEADER`). What a name may do is the caller's record,
never the request: the control plane writes each caller's access level (`ServingHome.access`,
no digests) and a model server reads it here, again whenever the file changes. A name the file
does not hold, a missing or unreadable file, or no name at all (keys not required) gets the
narrowest access: a fault never opens more.

An LLM application's answers are recorded as they are given (`AnswerLedger`: model, request id,
the caller who received it), so a rating is taken only for an answer that was given, and only
from its caller. The ledger is one SQLite file every replica of every version shares, since a
rating may reach any of them.

Runs in the serving environment: imports only the standard library and `shipway.callers`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from shipway.callers import ACLS, DEFAULT_ACL

log = logging.getLogger(__name__)

ACCESS_ENV = "SHIPWAY_ACCESS_FILE"
"""Where a model server reads callers' access levels (`ServingHome.access`)."""
ANSWERS_ENV = "SHIPWAY_ANSWERS_FILE"
"""Where an application's model servers record the answers they gave (`ServingHome.answers`)."""
RATING_WINDOW_SECONDS = 7 * 86_400.0
"""How long an answer can be rated: older records are pruned, and their ratings refused."""
_PRUNE_EVERY = 1_000


class AccessFile:
    """Callers' access levels from the control plane's projection, re-read on change."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._levels: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None

    @classmethod
    def from_env(cls) -> AccessFile:
        given = os.environ.get(ACCESS_ENV)
        return cls(Path(given) if given else None)

    def acl_of(self, caller: str | None) -> str:
        """The access level of `caller`; the narrowest for nobody, a stranger or a bad file."""
        if caller is None or self.path is None:
            return DEFAULT_ACL
        self._refresh(self.path)
        return self._levels.get(caller, DEFAULT_ACL)

    def _refresh(self, path: Path) -> None:
        try:
            found = path.stat()
        except OSError:
            self._levels, self._stamp = {}, None
            return
        stamp = (found.st_mtime_ns, found.st_ino)
        if stamp == self._stamp:
            return
        try:
            levels = json.loads(path.read_text())
            if not isinstance(levels, dict) or not all(
                isinstance(k, str) and v in ACLS for k, v in levels.items()
            ):
                raise ValueError(f"expected {{caller: one of {list(ACLS)}}}")
        except (OSError, ValueError) as exc:
            log.error("access file %s is unreadable (%s): every caller gets %s", path, exc, ACLS[0])
            levels = {}
        self._levels, self._stamp = levels, stamp


class AnswerLedger:
    """The answers an application gave, by model, request id and caller: at `path` (shared
    by every replica), or in this process's memory without one (a standalone server)."""

    def __init__(self, path: Path | None, window: float = RATING_WINDOW_SECONDS) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._writes = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path is not None else ":memory:",
            timeout=10.0,
            isolation_level=None,
            check_same_thread=False,
        )
        with self._lock:
            if path is not None:
                # Readers never wait for writers; a commit survives the process's death.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS given (model TEXT NOT NULL, request_id TEXT NOT NULL,"
                " caller TEXT NOT NULL, version TEXT NOT NULL, at REAL NOT NULL,"
                " PRIMARY KEY (model, request_id, caller))"
            )

    @classmethod
    def from_env(cls) -> AnswerLedger:
        given = os.environ.get(ANSWERS_ENV)
        return cls(Path(given) if given else None)

    def give(
        self, model: str, version: str, request_ids: list[str], caller: str, at: float
    ) -> None:
        """Record answers `request_ids` as given to `caller` (`""`: nobody named)."""
        rows = [(model, request_id, caller, version, at) for request_id in request_ids]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO given VALUES (?, ?, ?, ?, ?)", rows)
            self._writes += 1
            if self._writes % _PRUNE_EVERY == 0:
                self._db.execute("DELETE FROM given WHERE at < ?", (time.time() - self.window,))

    def given_to(self, model: str, request_id: str, caller: str) -> str | None:
        """The version that gave `caller` the answer `request_id` within the rating window, or
        None (never answered, answered to another caller, only mirrored, or too old)."""
        with self._lock:
            found = self._db.execute(
                "SELECT version FROM given WHERE model = ? AND request_id = ? AND caller = ?"
                " AND at >= ?",
                (model, request_id, caller, time.time() - self.window),
            ).fetchone()
        return None if found is None else str(found[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
