"""What the serving control plane serves, saved: `ServingHome.state` (`.control/state.json`).

The control plane writes it at every change and serves it again after a restart; one-call
scoring and `shipway render seldon` read it to know which versions serve and from which
bundles. Only this module reads or writes the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shipway.errors import BadRequest, ServiceError
from shipway.files import write_atomic
from shipway.serving.bundle import Bundle, read_bundle


@dataclass(frozen=True)
class SavedState:
    """Each served model's versions (bundle, replicas' ports and pids), weights and shadow:
    enough to serve the same again after a restart."""

    models: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> SavedState:
        if not path.exists():
            return cls({})
        try:
            return cls(json.loads(path.read_text())["models"])
        except (ValueError, KeyError) as exc:
            raise ServiceError(
                f"serving state {path} is unreadable ({exc!r}); move it away"
            ) from None

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=1, sort_keys=True))

    def bundles(self, model: str) -> dict[str, Bundle | None]:
        """The model's served versions, each with its bundle (None where it is unreadable)."""
        found: dict[str, Bundle | None] = {}
        for version, record in self.models.get(model, {}).get("versions", {}).items():
            try:
                found[version] = read_bundle(Path(record["bundle"]))
            except (BadRequest, KeyError, TypeError):
                found[version] = None
        return found
