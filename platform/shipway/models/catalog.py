"""The declared models of a repository, each checked against the sources it names.

A model folder is `assets/<folder>/` with `model.yaml` (the declaration) and
`contracts/training_set.yaml` (its training set's data contract). Loading checks what the
declaration's schema cannot: that the feature service exists in `feature_repo/`, that the label
table is a Delta table Shipway writes (raw events, or a dbt model published to Delta) and has
the columns the declaration and the feature service need, that the regression baseline is a
feature, that the training-set contract is the model's, and that no two models share a name.
Each failure is one line naming the file, the field and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from shipway.data.contracts import load_contract
from shipway.data.warehouse import delta_outputs
from shipway.errors import PolicyError, ShipwayError
from shipway.features.service import ServiceSpec, repository
from shipway.features.training_sets import LabelRules
from shipway.models.application import (
    LLM_APPLICATION,
    DeclaredApplication,
    check_templates,
    load_application,
)
from shipway.models.declaration import ModelDeclaration, load_declaration
from shipway.names import EVENT_TIMESTAMP, SCORE
from shipway.paths import DBT_PROJECT_DIR

DECLARATION_FILE = "model.yaml"
TRAINING_SET_CONTRACT = Path("contracts") / "training_set.yaml"


@dataclass(frozen=True)
class DeclaredModel:
    declaration: ModelDeclaration
    folder: Path
    service: ServiceSpec

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def path(self) -> Path:
        return self.folder / DECLARATION_FILE

    @property
    def training_set_contract(self) -> Path:
        return self.folder / TRAINING_SET_CONTRACT

    def prediction_keys(self, frame: pd.DataFrame) -> list[str] | None:
        """Which prediction point each row is (`PredictionKeys`)."""
        return self.declaration.prediction_keys.of(frame)

    @property
    def label_rules(self) -> LabelRules:
        """What the training set's rows are, for `shipway.features.training_sets`."""
        label = self.declaration.label
        keys = [label.row_id] if label.row_id else []
        keys += [k for k in self.declaration.entity_keys if k not in keys]
        return LabelRules(
            table=label.table,
            column=label.column,
            keys=tuple(keys),
            maturity_days=label.maturity_days,
            feature_warmup_days=self.declaration.training.feature_warmup_days,
            available_at=label.available_at,
        )


def require_declared(name: str, declared: Collection[str]) -> None:
    """Fail in one line when `name` is not one of the declared models."""
    if name not in declared:
        raise ShipwayError(f"no model {name!r} is declared; declared: {sorted(declared)}")


def declared_model(models: list[DeclaredModel], name: str) -> DeclaredModel:
    by_name = {m.name: m for m in models}
    require_declared(name, by_name)
    return by_name[name]


def dbt_manifest(manifest_path: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise PolicyError(
            f"dbt manifest {manifest_path} not found: run deploy/setup.sh (it runs dbt parse)"
        ) from None
    return manifest


def source_tables(raw_events_contract: Path, manifest_path: Path) -> dict[str, list[str]]:
    """Delta tables a label may come from, with their columns: raw events (its contract) and
    every dbt model published to Delta (its declared columns)."""
    tables = {"raw_events": list(load_contract(raw_events_contract).columns)}
    manifest = dbt_manifest(manifest_path)
    published = delta_outputs(manifest)
    for node in manifest["nodes"].values():
        if node["resource_type"] == "model" and node["name"] in published:
            tables[published[node["name"]]] = list(node.get("columns", {}))
    return tables


def declared_problem(path: Path) -> object:
    """The `problem` a declaration file names (None where it names none, or is no mapping):
    it decides which kind of declaration the file is read as."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return raw.get("problem") if isinstance(raw, dict) else None


def declaration_files(models_dir: Path) -> list[Path]:
    """Model declarations: every `<folder>/model.yaml` but LLM applications'."""
    return [
        p
        for p in sorted(models_dir.glob(f"*/{DECLARATION_FILE}"))
        if declared_problem(p) != LLM_APPLICATION
    ]


def application_files(models_dir: Path) -> list[Path]:
    """LLM application declarations: `<folder>/model.yaml` with `problem: llm_application`."""
    return [
        p
        for p in sorted(models_dir.glob(f"*/{DECLARATION_FILE}"))
        if declared_problem(p) == LLM_APPLICATION
    ]


def declared_names(models_dir: Path) -> set[str]:
    """Every declared name, models' and applications' (what `--model` may name)."""
    return {load_declaration(p).name for p in declaration_files(models_dir)} | {
        load_application(p).name for p in application_files(models_dir)
    }


def load_applications(
    models_dir: Path,
    manifest_path: Path = DBT_PROJECT_DIR / "target" / "manifest.json",
    taken: Collection[str] = (),
) -> list[DeclaredApplication]:
    """Every LLM application declared under `models_dir`: its templates exist and place what
    they must, its corpus is a table dbt publishes to Delta, and its name is its own."""
    published = set(delta_outputs(dbt_manifest(manifest_path)).values())
    apps: list[DeclaredApplication] = []
    seen = set(taken)
    for path in application_files(models_dir):
        declaration = load_application(path)
        where = f"application declaration {path}"
        if declaration.name in seen:
            raise PolicyError(
                f"{where}: name: {declaration.name} is already declared; give each model and "
                "application its own name"
            )
        seen.add(declaration.name)
        if declaration.corpus.table not in published:
            raise PolicyError(
                f"{where}: corpus.table: {declaration.corpus.table!r} is not a table dbt "
                f"publishes to Delta (known: {sorted(published)}); mark its dbt model with "
                "meta delta_table"
            )
        app = DeclaredApplication(declaration, path.parent)
        check_templates(app)
        apps.append(app)
    return apps


def load_models(
    models_dir: Path,
    raw_events_contract: Path,
    manifest_path: Path = DBT_PROJECT_DIR / "target" / "manifest.json",
    services: Mapping[str, ServiceSpec] | None = None,
) -> list[DeclaredModel]:
    """Every `<models_dir>/*/model.yaml`, validated against the sources, names unique."""
    services = repository().services if services is None else services
    tables = source_tables(raw_events_contract, manifest_path)
    declared: dict[str, tuple[Path, ModelDeclaration]] = {}
    for path in declaration_files(models_dir):
        declaration = load_declaration(path)
        if declaration.name in declared:
            raise PolicyError(
                f"model declaration {path}: name: {declaration.name} is already declared in "
                f"{declared[declaration.name][0]}; give each model its own name (it is the asset "
                "key, the MLflow model and the served name)"
            )
        declared[declaration.name] = (path, declaration)
    models: list[DeclaredModel] = []
    for path, declaration in declared.values():
        model = DeclaredModel(declaration, path.parent, _service(declaration, path, services))
        _check_sources(model, tables)
        _check_contract(model)
        models.append(model)
    return models


def _service(
    declaration: ModelDeclaration, path: Path, services: Mapping[str, ServiceSpec]
) -> ServiceSpec:
    if declaration.feature_service not in services:
        raise PolicyError(
            f"model declaration {path}: feature_service: no feature service "
            f"{declaration.feature_service!r} in feature_repo/ (known: {sorted(services)}); "
            "define it there or fix the name"
        )
    return services[declaration.feature_service]


def _check_sources(model: DeclaredModel, tables: Mapping[str, list[str]]) -> None:
    declaration, service, where = model.declaration, model.service, model.path
    label = declaration.label

    def fail(field: str, problem: str) -> PolicyError:
        return PolicyError(f"model declaration {where}: {field}: {problem}")

    if label.table not in tables:
        raise fail(
            "label.table",
            f"{label.table!r} is not a Delta table Shipway writes (known: {sorted(tables)}); "
            "publish it from a dbt model with meta delta_table, or fix the name",
        )
    columns = tables[label.table]
    wanted = {
        "label.column": [label.column],
        "label.available_at": [label.available_at] if label.available_at else [],
        "label.row_id": [label.row_id] if label.row_id else [],
        "entity_keys": declaration.entity_keys,
        "label.table": [EVENT_TIMESTAMP],
        "feature_service": list(service.request_fields),
    }
    for field, names in wanted.items():
        missing = [n for n in names if n not in columns]
        if missing:
            raise fail(
                field,
                f"{label.table} has no column(s) {missing} (its columns: {columns}); "
                "add them to its dbt model or contract, or fix the declaration",
            )
    if sorted(declaration.entity_keys) != sorted(service.join_keys):
        raise fail(
            "entity_keys",
            f"{declaration.entity_keys} but feature service {service.name} joins on "
            f"{list(service.join_keys)}; declare the service's join keys",
        )
    batch = declaration.batch
    if batch is not None:
        if batch.population not in tables:
            raise fail(
                "batch.population",
                f"{batch.population!r} is not a Delta table Shipway writes (known: "
                f"{sorted(tables)}); name a table with the entity keys and {EVENT_TIMESTAMP}",
            )
        missing = [
            n
            for n in [*declaration.entity_keys, EVENT_TIMESTAMP]
            if n not in tables[batch.population]
        ]
        if missing:
            raise fail(
                "batch.population",
                f"{batch.population} has no column(s) {missing} (its columns: "
                f"{tables[batch.population]}); the population is its entity keys by time",
            )
    for i, rule in enumerate(declaration.release.slices):
        if rule.column not in columns and rule.column not in service.feature_names:
            raise fail(
                f"release.slices.{i}.column",
                f"{rule.column!r} is neither a column of {label.table} nor a feature of "
                f"{service.name}; slice by one of {sorted({*columns, *service.feature_names})}",
            )
    used = {*service.feature_names, *service.request_fields}
    for i, name in enumerate(declaration.sensitive):
        if name not in columns:
            raise fail(
                f"sensitive.{i}",
                f"{name!r} is not a column of {label.table} (its columns: {columns}); a "
                "sensitive column comes with the label rows",
            )
        if name in used:
            raise fail(
                f"sensitive.{i}",
                f"{name!r} is a sensitive column, and feature service {service.name} uses it "
                "(a feature or a request field): a model may not decide on it; take it out "
                "of the service, or out of `sensitive` if it is not sensitive",
            )
    cost = declaration.release.cost
    for name in cost.columns if cost is not None else []:
        if name not in columns:
            raise fail(
                "release.cost",
                f"{name!r} is not a column of {label.table} (its columns: {columns}); a cost "
                "is priced from the label rows",
            )
    baseline = declaration.training.baseline
    if baseline is not None and baseline not in service.feature_names:
        raise fail(
            "training.baseline",
            f"{baseline!r} is not a feature of {service.name} ({service.feature_names})",
        )
    for name in declaration.drift.features:
        if name not in service.feature_names and name != SCORE:
            raise fail(
                f"drift.features.{name}",
                f"{name!r} is not a feature of {service.name} ({service.feature_names}) "
                f"nor {SCORE!r}, the prediction",
            )


def _check_contract(model: DeclaredModel) -> None:
    path = model.training_set_contract
    if not path.is_file():
        raise PolicyError(
            f"model declaration {model.path}: the training set needs a contract at {path}; "
            "copy one from another model's folder and list this model's columns"
        )
    dataset = load_contract(path).dataset
    if dataset != model.declaration.training_set:
        raise PolicyError(
            f"contract {path}: dataset: {dataset!r} but this model's training set is "
            f"{model.declaration.training_set!r}; name it so"
        )


def keep_versions(models: list[DeclaredModel]) -> dict[str, int]:
    """Feature service → how many of its newest versions to keep built: the most any model
    declaring it asks for."""
    keep: dict[str, int] = {}
    for m in models:
        service = m.declaration.feature_service
        keep[service] = max(keep.get(service, 0), m.declaration.release.keep_feature_versions)
    return keep
