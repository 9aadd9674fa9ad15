"""Feature versions: one digest of everything that computes a model's features.

A model's answers depend on the code that computes its features as much as on its weights, so
that code is versioned with the model. A feature version is taken from the sources themselves,
part by part, each part hashed on its meaning rather than its text:

- dbt: every model upstream of the service's feature tables (dbt's manifest gives the closure),
  its SQL with comments and layout removed, its materialization, the project vars it reads,
  the project macros it calls, and the sources it reads (their names and columns, not where a
  home keeps them);
- Feast: the feature service's projections, each feature view (entities, ttl, schema, source
  table, tags but `max_online_lag_hours`, which changes no value), entity, request source, and
  each on-demand function's source as Python's parser reads it (comments and docstrings out);
- the raw-events contract's columns (types and allowed values shape what dbt reads).

So a comment, a reformatting, another model's SQL or another service's view leave the version
as it is; a window, a var, a dtype or a default changes it. The digest is over the parts'
names and hashes, so what changed between two versions is named part by part (file by file).

Each version seen is recorded under `<home>/features/<digest>/`: `version.json` (service, parts,
when first seen) and `source/`, a copy of the sources it was computed from (the dbt project,
the feature repository, the contract), written whole or not at all.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipway.errors import ShipwayError
from shipway.files import fsync_folder, write_atomic
from shipway.paths import (
    DBT_PROJECT_DIR,
    FEATURE_REPO_DIR,
    RAW_EVENTS_CONTRACT,
    REPO_ROOT,
    ShipwayHome,
)

DIGEST_CHARS = 12
PART_CHARS = 16
VERSION_FILE = "version.json"
SOURCE_DIR = "source"
DIGEST = re.compile(r"[0-9a-f]{12}")
UNRECORDED = "unrecorded"
"""The feature version of a model version trained before versions were recorded."""
# Tags that change when an alert fires, not what a feature's value is.
UNVERSIONED_TAGS = frozenset({"max_online_lag_hours"})
_VAR = re.compile(r"""\bvar\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")


def _hash(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:PART_CHARS]


def normalize_sql(text: str) -> str:
    """SQL (with Jinja) as it computes: Jinja, block and line comments out, whitespace folded.
    Quoted strings and identifiers are kept as written."""
    out: list[str] = []
    code: list[str] = []

    def flush() -> None:
        folded = " ".join("".join(code).split())
        if folded:
            out.append(folded)
        code.clear()

    i, n = 0, len(text)
    while i < n:
        two = text[i : i + 2]
        if two in ("{#", "/*"):
            end = text.find("#}" if two == "{#" else "*/", i + 2)
            i = n if end < 0 else end + 2
            code.append(" ")
        elif two == "--":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text[i] in "'\"":
            end = text.find(text[i], i + 1)
            end = n - 1 if end < 0 else end
            flush()
            out.append(text[i : end + 1])
            i = end + 1
        else:
            code.append(text[i])
            i += 1
    flush()
    return " ".join(out)


def normalize_python(source: str) -> str:
    """Python as it runs: parsed and printed back, so comments, docstrings and layout drop out."""
    import textwrap

    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.unparse(tree)


@dataclass(frozen=True)
class Change:
    part: str
    kind: str  # added | removed | changed

    def describe(self) -> str:
        return f"{self.kind} {self.part}"


@dataclass(frozen=True)
class FeatureVersion:
    """A feature service's version: its parts (name → hash of the part's meaning)."""

    service: str
    parts: Mapping[str, str]
    tables: tuple[str, ...] = ()
    """The Delta tables the service's views read (built by the dbt closure in `parts`)."""

    @property
    def digest(self) -> str:
        return _hash(dict(sorted(self.parts.items())))[:DIGEST_CHARS]

    def changes(self, before: FeatureVersion | None) -> list[Change]:
        """What differs from `before`, part by part (every part is new without one)."""
        old = dict(before.parts) if before is not None else {}
        out = [Change(p, "added") for p in sorted(set(self.parts) - set(old))]
        out += [Change(p, "removed") for p in sorted(set(old) - set(self.parts))]
        out += [
            Change(p, "changed")
            for p in sorted(set(self.parts) & set(old))
            if self.parts[p] != old[p]
        ]
        return sorted(out, key=lambda c: c.part)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "digest": self.digest,
            "tables": list(self.tables),
            "parts": dict(sorted(self.parts.items())),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FeatureVersion:
        version = cls(str(raw["service"]), dict(raw["parts"]), tuple(raw.get("tables", ())))
        if version.digest != raw.get("digest"):
            raise ShipwayError(
                f"feature version record of {raw.get('service')}: its parts digest to "
                f"{version.digest}, the record says {raw.get('digest')}"
            )
        return version


# --- dbt ------------------------------------------------------------------------------------


def _fresh_manifest(project: Path) -> dict[str, Any] | None:
    """The project's manifest, if it describes the project's files as they are now."""
    path = project / "target" / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except ValueError:
        return None
    models = {
        n["original_file_path"]: n
        for n in manifest.get("nodes", {}).values()
        if n.get("resource_type") == "model" and n.get("package_name") == project_name(project)
    }
    on_disk = {p.relative_to(project).as_posix() for p in (project / "models").rglob("*.sql")}
    if set(models) != on_disk:
        return None
    for rel, node in models.items():
        if (project / rel).read_text().strip() != str(node.get("raw_code", "")).strip():
            return None
    return manifest


def project_name(project: Path) -> str:
    import yaml

    return str(yaml.safe_load((project / "dbt_project.yml").read_text())["name"])


def dbt_manifest(project: Path = DBT_PROJECT_DIR) -> dict[str, Any]:
    """dbt's manifest of `project` as its files are now: the one in target/ when it matches
    them, else a fresh `dbt parse` (a few seconds), kept in target/ for the next reader as
    `shipway doctor` keeps it."""
    manifest = _fresh_manifest(project)
    if manifest is not None:
        return manifest
    dbt = Path(sys.executable).with_name("dbt")
    with tempfile.TemporaryDirectory(prefix="shipway-dbt-parse-") as tmp:
        env = {
            **os.environ,
            "SHIPWAY_WAREHOUSE": str(Path(tmp) / "parse.duckdb"),
            "SHIPWAY_LAKE": str(Path(tmp) / "lake"),
        }
        args = [str(dbt), "parse", "--quiet", "--project-dir", str(project)]
        args += ["--profiles-dir", str(project), "--target-path", str(Path(tmp) / "target")]
        args += ["--log-path", str(Path(tmp) / "logs")]
        result = subprocess.run(args, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
            raise ShipwayError(f"dbt parse of {project} failed: {tail}")
        text = (Path(tmp) / "target" / "manifest.json").read_text()
    with contextlib.suppress(OSError):  # a read-only project is parsed again next time
        write_atomic(project / "target" / "manifest.json", text)
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def dbt_parts(manifest: Mapping[str, Any], project: Path, tables: Iterable[str]) -> dict[str, str]:
    """The parts of the dbt models that publish `tables`, and of everything upstream."""
    import yaml

    nodes = manifest["nodes"]
    publishing = {
        n["config"].get("meta", {}).get("delta_table"): uid
        for uid, n in nodes.items()
        if n.get("resource_type") == "model" and n["config"].get("meta", {}).get("delta_table")
    }
    missing = [t for t in tables if t not in publishing]
    if missing:
        raise ShipwayError(
            f"no dbt model publishes {missing} (meta: {{delta_table: ...}}) in {project}"
        )
    variables = yaml.safe_load((project / "dbt_project.yml").read_text()).get("vars") or {}
    parts: dict[str, str] = {}
    todo = [publishing[t] for t in tables]
    seen: set[str] = set()
    while todo:
        uid = todo.pop()
        if uid in seen:
            continue
        seen.add(uid)
        if uid.startswith("source."):
            source = manifest["sources"][uid]
            columns = {k: v.get("data_type") for k, v in source.get("columns", {}).items()}
            parts[f"dbt source {source['source_name']}.{source['name']}"] = _hash(
                {
                    "identifier": source["identifier"],
                    "plugin": source.get("meta", {}).get("plugin"),
                    "columns": columns,
                }
            )
            continue
        node = nodes[uid]
        raw = str(node["raw_code"])
        parts[f"dbt_project/{node['original_file_path']}"] = _hash(
            {"sql": normalize_sql(raw), "materialized": node["config"].get("materialized")}
        )
        for name in sorted(set(_VAR.findall(raw))):
            if name not in variables:
                raise ShipwayError(f"dbt model {node['name']} reads var {name!r}, not declared")
            parts[f"dbt var {name}"] = _hash(variables[name])
        for macro in node["depends_on"].get("macros", []):
            found = manifest["macros"].get(macro)
            if found is not None and found.get("package_name") == node.get("package_name"):
                parts[f"dbt_project/{found['original_file_path']}:{found['name']}"] = _hash(
                    normalize_sql(found["macro_sql"])
                )
        todo += [
            d for d in node["depends_on"].get("nodes", []) if d.startswith(("model.", "source."))
        ]
    return parts


# --- Feast ----------------------------------------------------------------------------------


def _view_part(view: Any) -> dict[str, Any]:
    return {
        "entities": sorted(view.entities),
        "ttl": view.ttl.total_seconds() if view.ttl else None,
        # Feast keeps a view's schema in no set order: the same view comes back shuffled.
        "schema": sorted([f.name, str(f.dtype)] for f in view.schema),
        "table": Path(str(view.batch_source.path)).name,
        "timestamp_field": view.batch_source.timestamp_field,
        "tags": {k: v for k, v in sorted(view.tags.items()) if k not in UNVERSIONED_TAGS},
        "online": bool(view.online),
    }


def feast_parts(contents: Any, service: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """The parts of a feature service in parsed repository contents (Feast's `parse_repo`),
    and the Delta tables its views read."""
    services = {s.name: s for s in contents.feature_services}
    if service not in services:
        raise ShipwayError(
            f"feature service {service!r} is not in the feature repository; it has "
            f"{sorted(services)}"
        )
    views = {v.name: v for v in contents.feature_views}
    on_demand = {v.name: v for v in contents.on_demand_feature_views}
    entities = {e.name: e for e in contents.entities}
    parts: dict[str, str] = {}
    tables: list[str] = []

    def add_view(view: Any) -> None:
        parts[f"feast feature view {view.name}"] = _hash(_view_part(view))
        table = Path(str(view.batch_source.path)).name
        if table not in tables:
            tables.append(table)
        for name in view.entities:
            entity = entities[name]
            parts[f"feast entity {name}"] = _hash(
                {"join_key": entity.join_key, "value_type": str(entity.value_type)}
            )

    projections = []
    for projection in services[service].feature_view_projections:
        projections.append([projection.name, [f.name for f in projection.features]])
        if projection.name in views:
            add_view(views[projection.name])
        elif projection.name in on_demand:
            odfv = on_demand[projection.name]
            udf = odfv.feature_transformation.udf_string
            parts[f"feast on-demand view {odfv.name}"] = _hash(
                {
                    "schema": sorted([f.name, str(f.dtype)] for f in odfv.schema),
                    "mode": odfv.mode,
                    "function": normalize_python(udf),
                    "sources": sorted(
                        [*odfv.source_request_sources, *odfv.source_feature_view_projections]
                    ),
                }
            )
            for request in odfv.source_request_sources.values():
                parts[f"feast request source {request.name}"] = _hash(
                    sorted([f.name, str(f.dtype)] for f in request.schema)
                )
            for source in odfv.source_feature_view_projections.values():
                add_view(views[source.name])
        else:
            raise ShipwayError(f"feature service {service} uses unknown view {projection.name!r}")
    parts[f"feast feature service {service}"] = _hash(projections)
    return parts, tuple(tables)


def _parsed_here(repo: Path, services: list[str]) -> dict[str, Any]:
    from feast.repo_operations import parse_repo

    sys.path.insert(0, str(repo))
    contents = parse_repo(repo.resolve())
    out = {}
    for service in services:
        parts, tables = feast_parts(contents, service)
        out[service] = {"parts": parts, "tables": list(tables)}
    return out


def repository_parts(
    repo: Path, services: Iterable[str]
) -> dict[str, tuple[dict[str, str], tuple[str, ...]]]:
    """`feast_parts` of each service in the repository in `repo`, read in a child process:
    Feast imports a repository's files as top-level modules, cached by name for the life of a
    process, so a long-running process (the code location) would read a changed file as it
    was, and two repositories (the working tree, a saved version) would mix."""
    wanted = list(services)
    result = subprocess.run(
        [sys.executable, "-m", "shipway.features.versions", str(repo), *wanted],
        capture_output=True,
        text=True,
        # Feast names a file's module by its path from the working directory.
        cwd=repo,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise ShipwayError(f"reading feature services {wanted} in {repo} failed: {tail}")
    raw = json.loads(result.stdout)
    return {s: (dict(raw[s]["parts"]), tuple(raw[s]["tables"])) for s in wanted}


# --- the contract ---------------------------------------------------------------------------


def contract_parts(contract: Path) -> dict[str, str]:
    """The raw-events contract's columns: names, types, allowed values and bounds."""
    import yaml

    columns = yaml.safe_load(contract.read_text()).get("columns") or {}
    shaped = {
        name: {k: v for k, v in (spec or {}).items() if k != "description"}
        for name, spec in columns.items()
    }
    return {f"assets/contracts/{contract.name} columns": _hash(shaped)}


@dataclass(frozen=True)
class Sources:
    """Where a version's sources are: the working tree, or a version's saved copy."""

    dbt_project: Path = DBT_PROJECT_DIR
    feature_repo: Path = FEATURE_REPO_DIR
    contract: Path = RAW_EVENTS_CONTRACT

    @classmethod
    def checkout(cls, root: Path) -> Sources:
        """The sources in a checkout of the repository at `root`."""
        return cls(
            root / "dbt_project",
            root / "feature_repo",
            root / RAW_EVENTS_CONTRACT.relative_to(REPO_ROOT),
        )

    @classmethod
    def saved(cls, folder: Path) -> Sources:
        return cls(
            folder / "dbt_project",
            folder / "feature_repo",
            folder / "contracts" / "raw_events.yaml",
        )


def feature_versions(
    services: Iterable[str], sources: Sources | None = None
) -> dict[str, FeatureVersion]:
    """The version of each service as `sources` (the working tree by default) compute it."""
    sources = sources or Sources()
    manifest = dbt_manifest(sources.dbt_project)
    contract = contract_parts(sources.contract)
    out = {}
    for service, (feast, tables) in repository_parts(sources.feature_repo, services).items():
        dbt = dbt_parts(manifest, sources.dbt_project, tables)
        out[service] = FeatureVersion(service, {**dbt, **feast, **contract}, tables)
    return out


def feature_version(service: str, sources: Sources | None = None) -> FeatureVersion:
    return feature_versions([service], sources)[service]


# --- the record of versions -----------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    version: FeatureVersion
    first_seen: float
    folder: Path

    @property
    def sources(self) -> Sources:
        return Sources.saved(self.folder / SOURCE_DIR)


def versions_dir(home: ShipwayHome) -> Path:
    return home.root / "features"


def copy_sources(sources: Sources, dest: Path) -> Sources:
    """A copy of `sources` in `dest` (a version's `source/` layout), the copy's sources."""
    ignore = shutil.ignore_patterns(
        "target", "logs", "dbt_packages", "__pycache__", "*.pyc", "data"
    )
    shutil.copytree(sources.dbt_project, dest / "dbt_project", ignore=ignore)
    manifest = sources.dbt_project / "target" / "manifest.json"
    if manifest.is_file():
        # Only read if it still matches the copied files (`dbt_manifest`): saves a dbt parse.
        (dest / "dbt_project" / "target").mkdir()
        shutil.copy2(manifest, dest / "dbt_project" / "target" / "manifest.json")
    shutil.copytree(sources.feature_repo, dest / "feature_repo", ignore=ignore)
    (dest / "contracts").mkdir()
    shutil.copy2(sources.contract, dest / "contracts" / "raw_events.yaml")
    return Sources.saved(dest)


def record(
    home: ShipwayHome, services: Iterable[str], sources: Sources | None = None
) -> dict[str, Recorded]:
    """The version of each service as `sources` (the working tree) compute them now, each kept
    under the home with a copy of its sources, once.

    The sources are copied first and the versions computed from the copy, so what is kept is
    exactly what was versioned, even while someone edits the working tree. A version's folder
    appears whole (built beside it, then renamed): a crash leaves no half-recorded version."""
    root = versions_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Recorded] = {}
    with tempfile.TemporaryDirectory(prefix=".copy-", dir=root) as tmp:
        copy = Path(tmp) / SOURCE_DIR
        saved = copy_sources(sources or Sources(), copy)
        for service, version in feature_versions(services, saved).items():
            folder = root / version.digest
            if not (folder / VERSION_FILE).is_file():
                staging = Path(tmp) / version.digest
                shutil.copytree(copy, staging / SOURCE_DIR)
                write_atomic(
                    staging / VERSION_FILE,
                    json.dumps({**version.to_json(), "first_seen": time.time()}, indent=2),
                )
                shutil.rmtree(folder, ignore_errors=True)  # a folder without its record
                try:
                    staging.rename(folder)
                except OSError:
                    if not (folder / VERSION_FILE).is_file():
                        raise
                fsync_folder(root)
            out[service] = load(folder)
    return out


APPLIED_FILE = "applied.json"


def mark_applied(home: ShipwayHome, recorded: Mapping[str, Recorded]) -> None:
    """The versions the feature tables and Feast's registry were just built and applied for."""
    digests = {s: r.version.digest for s, r in sorted(recorded.items())}
    write_atomic(versions_dir(home) / APPLIED_FILE, json.dumps(digests, indent=2))


def applied_versions(home: ShipwayHome) -> dict[str, str]:
    path = versions_dir(home) / APPLIED_FILE
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    return {str(k): str(v) for k, v in raw.items()}


def current_version(
    home: ShipwayHome, service: str, sources: Sources | None = None
) -> FeatureVersion:
    """The version of `service` the working tree computes, refused unless it is the one the
    feature tables and registry were last built for: a training set must not record one
    version and read another."""
    version = feature_version(service, sources)
    applied = applied_versions(home).get(service)
    if applied != version.digest:
        before = history(home).find(applied) if applied else None
        changed = "; ".join(
            c.describe() for c in version.changes(before.version if before else None)
        )
        raise ShipwayError(
            f"feature service {service}: the sources now compute feature version "
            f"{version.digest}, but the feature tables and registry were built for "
            f"{applied or 'no version yet'} ({changed or 'unknown change'}); materialize "
            "feature_views (the refresh_features job) first"
        )
    return version


def load(folder: Path) -> Recorded:
    raw = json.loads((folder / VERSION_FILE).read_text())
    return Recorded(FeatureVersion.from_json(raw), float(raw["first_seen"]), folder)


@dataclass
class History:
    """Every recorded version of each service, oldest first."""

    services: dict[str, list[Recorded]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def previous(self, recorded: Recorded) -> Recorded | None:
        found = self.services.get(recorded.version.service, [])
        index = found.index(recorded)
        return found[index - 1] if index > 0 else None

    def find(self, digest: str) -> Recorded | None:
        return next(
            (r for found in self.services.values() for r in found if r.version.digest == digest),
            None,
        )


def history(home: ShipwayHome) -> History:
    out = History()
    root = versions_dir(home)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not DIGEST.fullmatch(folder.name):
            continue
        try:
            recorded = load(folder)
        except (OSError, ValueError, KeyError, TypeError, ShipwayError) as exc:
            out.unreadable.append(f"{folder.name}: {exc}")
            continue
        out.services.setdefault(recorded.version.service, []).append(recorded)
    for found in out.services.values():
        found.sort(key=lambda r: (r.first_seen, r.version.digest))
    return out


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _main(argv: list[str]) -> int:
    sys.stdout.write(json.dumps(_parsed_here(Path(argv[0]), argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
