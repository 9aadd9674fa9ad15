"""Feature versions side by side: each version built, stored and served on its own.

A version's home is `<home>/features/<digest>/`, beside its record (`shipway.features.versions`):

- `warehouse.duckdb`: dbt's build of the version's saved project (`source/dbt_project`), only
  the models its feature tables need, reading the shared raw tables;
- `lake/<table>`: its feature tables in Delta, published from that build;
- `feast/`: its own Feast registry and online store, applied from its saved repository under
  the project `shipway_<digest>` (Redis keys carry the project, so versions never share rows);
- `built.json`: what the last build read and wrote (raw table versions, feature table
  versions, when), written last.

So a changed transformation is built as a new version next to the old one, never over it; a
model version is trained and served on its own version's tables and online rows; the old one
stays until nothing pins it (`collect`). Refreshing a version rebuilds its tables from its own
sources when its raw tables moved, then loads only the new rows online (as the working tree's
store does). The working tree's store (`<home>/feast`, `<home>/lake/<table>`) is still built by
the dbt and Feast assets, for dbt's tests as asset checks and for what reads it directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shipway.data.lake import table_info
from shipway.data.warehouse import delta_outputs, publish_to_delta
from shipway.errors import ShipwayError
from shipway.features.online_state import online_store_kind
from shipway.features.store import apply_repository, feast_cli, materialize_incremental
from shipway.features.versions import (
    DIGEST,
    SOURCE_DIR,
    Recorded,
    dbt_manifest,
    folder_bytes,
    history,
    versions_dir,
)
from shipway.files import locked, write_atomic
from shipway.paths import ShipwayHome

Log = Callable[[str], None]
BUILT_FILE = "built.json"
KEEP_LAST = 2
"""Each service's newest versions kept built whether or not anything pins them, unless its
model declares otherwise (`release.keep_feature_versions`)."""
# What a version's home holds besides its record and sources: what `collect` frees.
BUILT_PARTS = ("warehouse.duckdb", "lake", "feast", "dbt_target", BUILT_FILE)


@dataclass(frozen=True)
class VersionHome(ShipwayHome):
    """A ShipwayHome whose feature tables, warehouse and Feast store are one version's."""

    digest: str = ""
    tables: tuple[str, ...] = ()
    service: str = ""

    @property
    def folder(self) -> Path:
        return versions_dir(self) / self.digest

    @property
    def source(self) -> Path:
        return self.folder / SOURCE_DIR

    @property
    def version_lake(self) -> Path:
        return self.folder / "lake"

    def table(self, name: str) -> Path:
        return self.version_lake / name if name in self.tables else self.lake / name

    def serves_table(self, name: str) -> bool:
        # Its registry holds the whole repository as saved; only its service's views are built.
        return name in self.tables

    @property
    def warehouse(self) -> Path:
        return self.folder / "warehouse.duckdb"

    @property
    def feast(self) -> Path:
        return self.folder / "feast"

    @property
    def feature_repo(self) -> Path:
        return self.source / "feature_repo"

    @property
    def feast_project(self) -> str | None:
        return f"shipway_{self.digest}"

    def environment(self) -> dict[str, str]:
        # The feature views read their tables under $SHIPWAY_LAKE: this version's.
        return {**super().environment(), "SHIPWAY_LAKE": str(self.version_lake)}


def version_home(home: ShipwayHome, recorded: Recorded) -> VersionHome:
    return VersionHome(
        home.root, recorded.version.digest, recorded.version.tables, recorded.version.service
    )


@dataclass(frozen=True)
class Built:
    """What a version's last build read and wrote."""

    digest: str
    raw_versions: dict[str, int]
    table_versions: dict[str, int]
    built_at: float
    rows_loaded_online: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, home: VersionHome) -> Built | None:
        path = home.folder / BUILT_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(
                str(raw["digest"]),
                {str(k): int(v) for k, v in raw["raw_versions"].items()},
                {str(k): int(v) for k, v in raw["table_versions"].items()},
                float(raw["built_at"]),
                [str(x) for x in raw.get("rows_loaded_online", [])],
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, home: VersionHome) -> None:
        write_atomic(home.folder / BUILT_FILE, json.dumps(asdict(self), indent=2))


def find(home: ShipwayHome, digest: str) -> VersionHome:
    """The home of a recorded version (built or not)."""
    recorded = history(home).find(digest)
    if recorded is None:
        raise ShipwayError(
            f"feature version {digest} is not recorded in {versions_dir(home)}: "
            "`shipway features versions` lists the recorded ones"
        )
    return version_home(home, recorded)


def built_home(home: ShipwayHome, digest: str) -> VersionHome:
    """The home of a built version: what training and serving read."""
    found = find(home, digest)
    if Built.load(found) is None:
        raise ShipwayError(
            f"feature version {digest} is recorded but not built: materialize feature_versions "
            "(the refresh_features job builds every version a model pins)"
        )
    return found


def is_built(home: ShipwayHome, digest: str) -> bool:
    try:
        built_home(home, digest)
    except ShipwayError:
        return False
    return True


def features_home(home: ShipwayHome, digest: str) -> ShipwayHome:
    """Where a model version's features are read: its feature version's built home; the
    working tree's store for a version trained before feature versions were recorded."""
    if not DIGEST.fullmatch(digest):
        return home
    return built_home(home, digest)


def _raw_tables(manifest: Mapping[str, Any]) -> list[str]:
    return sorted(
        str(s["identifier"]) for s in manifest["sources"].values() if s["resource_type"] == "source"
    )


def _dbt(home: VersionHome, select: list[str], log: Log) -> None:
    project = home.source / "dbt_project"
    dbt = Path(sys.executable).with_name("dbt")
    env = {
        **os.environ,
        "SHIPWAY_HOME": str(home.root),
        # dbt reads the shared raw tables and writes this version's warehouse only.
        "SHIPWAY_LAKE": str(home.lake),
        "SHIPWAY_WAREHOUSE": str(home.warehouse),
    }
    args = [str(dbt), "build", "--project-dir", str(project), "--profiles-dir", str(project)]
    target = home.folder / "dbt_target"
    args += ["--target-path", str(target), "--log-path", str(target)]
    args += ["--select", *select]
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if " OK " in line or "ERROR" in line or "FAIL" in line or "Done." in line:
            log(f"dbt [{home.digest}] {line.strip()}")
    if result.returncode != 0:
        failed = [
            line.strip() for line in result.stdout.splitlines() if "ERROR" in line or "FAIL" in line
        ]
        raise ShipwayError(
            f"feature version {home.digest}: dbt build of its own sources failed "
            f"({'; '.join(failed[-3:]) or result.stderr.strip()[-300:]}); its tables and online "
            "rows are kept as they were"
        )


def build_version(home: ShipwayHome, recorded: Recorded, log: Log) -> Built:
    """Build (or refresh) one version in its own home: dbt from its saved sources when the raw
    tables moved since its last build, its tables published, its registry applied, its new rows
    loaded online. One build of a version at a time; a failed step leaves the last build."""
    vh = version_home(home, recorded)
    vh.folder.mkdir(parents=True, exist_ok=True)
    with locked(vh.folder / ".build.lock"):
        manifest = dbt_manifest(vh.source / "dbt_project")
        raw = {
            t: table_info(home.table(t)).version
            for t in _raw_tables(manifest)
            if (home.table(t) / "_delta_log").exists()
        }
        last = Built.load(vh)
        publishing = {table: model for model, table in delta_outputs(manifest).items()}
        tables = dict(last.table_versions) if last else {}
        if last is None or last.raw_versions != raw or set(tables) != set(vh.tables):
            started = time.monotonic()
            _dbt(vh, [f"+{publishing[t]}" for t in vh.tables], log)
            for table in vh.tables:
                info = publish_to_delta(vh.warehouse, publishing[table], vh.table(table))
                tables[table] = info.version
            log(
                f"feature version {vh.digest}: built {', '.join(vh.tables)} from its own sources "
                f"in {time.monotonic() - started:.1f} s"
            )
        else:
            log(f"feature version {vh.digest}: raw tables unchanged since its last build")
        applied = apply_repository(vh)
        if not applied.skipped:
            log(f"feature version {vh.digest}: feast apply (project {vh.feast_project})")
        loaded = materialize_incremental(vh)
        built = Built(vh.digest, raw, tables, time.time(), [w.describe() for w in loaded.loaded])
        built.save(vh)
    return built


def build_versions(home: ShipwayHome, digests: Iterable[str], log: Log) -> dict[str, Built]:
    """Build each recorded version named, in order; the first failure stops with its error."""
    found = history(home)
    out: dict[str, Built] = {}
    for digest in dict.fromkeys(digests):
        recorded = found.find(digest)
        if recorded is None:
            raise ShipwayError(f"feature version {digest} is pinned but not recorded in the home")
        out[digest] = build_version(home, recorded, log)
    return out


@dataclass(frozen=True)
class Collected:
    home: VersionHome
    freed_bytes: int

    @property
    def digest(self) -> str:
        return self.home.digest

    @property
    def service(self) -> str:
        return self.home.service


def built_bytes(home: VersionHome) -> int:
    total = 0
    for part in BUILT_PARTS:
        path = home.folder / part
        if path.is_dir():
            total += folder_bytes(path)
        elif path.is_file():
            total += path.stat().st_size
    return total


def collectable(
    home: ShipwayHome, keep: Mapping[str, list[str]], keep_last: int | Mapping[str, int]
) -> list[Collected]:
    """The built versions `collect` would free: not in `keep` (digest → why it is kept), not
    among each service's `keep_last` newest (one number, or per service with `KEEP_LAST` for
    the others), and holding built data."""
    out: list[Collected] = []
    for service, recorded in history(home).services.items():
        last = keep_last if isinstance(keep_last, int) else keep_last.get(service, KEEP_LAST)
        newest = {r.version.digest for r in recorded[-last:]} if last > 0 else set()
        for entry in recorded:
            digest = entry.version.digest
            if digest in keep or digest in newest:
                continue
            vh = version_home(home, entry)
            freed = built_bytes(vh)
            if freed:
                out.append(Collected(vh, freed))
    return out


def collect(
    home: ShipwayHome, keep: Mapping[str, list[str]], keep_last: int | Mapping[str, int]
) -> list[Collected]:
    """Free the built data (tables, warehouse, registry, online rows) of each `collectable`
    version. The record and its sources stay: a collected version can be built again."""
    out = collectable(home, keep, keep_last)
    for entry in out:
        vh = entry.home
        with locked(vh.folder / ".build.lock"):
            if online_store_kind() == "redis" and (vh.feast / "registry.db").exists():
                feast_cli(vh, "teardown")  # its rows live in Redis, under its project
            # The record goes first: a crash halfway leaves "not built", never half built.
            (vh.folder / BUILT_FILE).unlink(missing_ok=True)
            for part in BUILT_PARTS:
                path = vh.folder / part
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    return out
