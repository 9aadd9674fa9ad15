"""Point-in-time training sets: built from a model's declaration and recorded input versions,
rebuilt by time travel.

The rows are the declaration's label table (one row per prediction point), matured and past
feature warm-up; the features are its feature service's, joined point-in-time by Feast. A
training set records the Delta version of every input (the label table and each feature
table), the feature service, its features in order, and the label rules. `rebuild` reads those
versions back, builds the set again in a scratch home with its own Feast registry, and compares
content digests: equal digests prove the training set is reproducible.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from shipway.data.admission import Ledger
from shipway.data.lake import TableInfo, content_digest, overwrite_table, read_table, table_info
from shipway.errors import ShipwayError
from shipway.features.service import ServiceSpec, feature_frame, registry_spec
from shipway.features.store import feast_cli, feature_store, historical_features
from shipway.features.version_store import version_home
from shipway.features.versions import SOURCE_DIR, UNRECORDED, history
from shipway.names import EVENT_TIMESTAMP
from shipway.paths import ShipwayHome

Log = Callable[[str], None]


@dataclass(frozen=True)
class LabelRules:
    """What the rows are: the label table and column, and when a label counts as known."""

    table: str
    column: str
    keys: tuple[str, ...]
    """Row identity: the row id (if any), then the entity keys; with the time, a total order."""
    maturity_days: int
    feature_warmup_days: int
    available_at: str | None = None


@dataclass(frozen=True)
class TrainingSetInputs:
    versions: dict[str, int]
    feature_service: str
    label_maturity_days: int
    feature_warmup_days: int
    feature_version: str = UNRECORDED
    """The digest of what computes the features (`shipway.features.versions`)."""

    @classmethod
    def current(
        cls, home: ShipwayHome, rules: LabelRules, spec: ServiceSpec, feature_version: str
    ) -> TrainingSetInputs:
        tables = [rules.table, *spec.tables]
        return cls(
            {t: table_info(home.table(t)).version for t in tables},
            spec.name,
            rules.maturity_days,
            rules.feature_warmup_days,
            feature_version,
        )

    def lineage(self) -> dict[str, str]:
        return {
            "input_tables": ",".join(self.versions),
            **{f"{t}_version": str(v) for t, v in self.versions.items()},
            "feature_service": self.feature_service,
            "feature_version": self.feature_version,
            "label_maturity_days": str(self.label_maturity_days),
            "feature_warmup_days": str(self.feature_warmup_days),
        }

    @classmethod
    def from_lineage(cls, lineage: dict[str, str], where: str) -> TrainingSetInputs:
        tables = lineage.get("input_tables", "").split(",") if lineage.get("input_tables") else []
        needed = ["input_tables", *[f"{t}_version" for t in tables]]
        needed += ["feature_service", "label_maturity_days", "feature_warmup_days"]
        missing = [k for k in needed if k not in lineage]
        if missing:
            raise ShipwayError(
                f"{where} does not record {missing}: it was built before inputs were recorded "
                "and cannot be rebuilt"
            )
        return cls(
            {t: int(lineage[f"{t}_version"]) for t in tables},
            lineage["feature_service"],
            int(lineage["label_maturity_days"]),
            int(lineage["feature_warmup_days"]),
            lineage.get("feature_version", UNRECORDED),
        )


def build(
    home: ShipwayHome, rules: LabelRules, inputs: TrainingSetInputs, log: Log
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Labelled, matured rows joined point-in-time with the feature service.

    Returns the rows (keys, time, label, then the service's features in order) and what was
    derived on the way (label cutoff, excluded rows, features). Feast reads the feature tables
    of `home` as they are; `inputs` says which versions those are.
    """
    store = feature_store(home)
    spec = registry_spec(store, inputs.feature_service)
    wanted = [*rules.keys, EVENT_TIMESTAMP, *spec.request_fields, rules.column]
    if rules.available_at:
        wanted.append(rules.available_at)
    columns = list(dict.fromkeys(wanted))
    rows = read_table(
        home.table(rules.table), version=inputs.versions[rules.table], columns=columns
    )
    if rows.empty:
        raise ShipwayError(f"{rules.table} v{inputs.versions[rules.table]} has no rows to train on")
    # Labels arrive late: train only on matured rows whose label is known at the newest one.
    stamps = rows[EVENT_TIMESTAMP]
    cutoff = stamps.max()
    matured = cutoff - pd.Timedelta(days=inputs.label_maturity_days)
    warm = stamps.min() + pd.Timedelta(days=inputs.feature_warmup_days)
    known = (stamps >= warm) & (stamps <= matured) & rows[rules.column].notna()
    if rules.available_at:
        known &= rows[rules.available_at] <= cutoff
    labelled = rows[known]
    if rules.available_at:
        labelled = labelled.drop(columns=rules.available_at)
    log(
        f"{len(labelled)} of {len(rows)} rows of {rules.table} are past feature warm-up "
        f"({warm}) and labelled by {cutoff}; joining with {inputs.feature_service}"
    )
    joined = historical_features(store, labelled, inputs.feature_service)
    frame = feature_frame(joined, spec)
    keys = joined[[*rules.keys, EVENT_TIMESTAMP, rules.column]]
    # A total order (time, then keys): the join returns rows in no set order, and XGBoost's
    # row subsampling depends on row order, so the same inputs must give the same sequence.
    out = (
        keys.join(frame)
        .sort_values([EVENT_TIMESTAMP, *rules.keys], kind="stable")
        .reset_index(drop=True)
    )
    derived = {
        "label_cutoff": cutoff.isoformat(),
        "matured_before": matured.isoformat(),
        "warm_from": warm.isoformat(),
        "unlabelled_rows_excluded": len(rows) - len(labelled),
        "features": ",".join(spec.feature_names),
    }
    return out, derived


def write(
    home: ShipwayHome,
    table: str,
    frame: pd.DataFrame,
    inputs: TrainingSetInputs,
    derived: dict[str, Any],
    retention_days: int,
) -> TableInfo:
    lineage = {**inputs.lineage(), "features": str(derived["features"])}
    return overwrite_table(home.table(table), frame, lineage, retention_days)


def recorded_features(info: TableInfo) -> list[str]:
    """The feature vector a training set version was built with, in order."""
    features = info.commit_metadata.get("features")
    if not features:
        raise ShipwayError(
            f"{Path(info.path).name} v{info.version} records no feature list: rebuild it"
        )
    return features.split(",")


@dataclass(frozen=True)
class TrainingSetVersion:
    """One version of a model's training set, as training reads it."""

    info: TableInfo
    frame: pd.DataFrame

    @property
    def where(self) -> str:
        return f"{Path(self.info.path).name} v{self.info.version}"

    @property
    def features(self) -> list[str]:
        return recorded_features(self.info)

    def lineage(self) -> dict[str, str]:
        """What a model trained on it records: this version, its content and its inputs."""
        return {
            "training_set_version": str(self.info.version),
            "training_set_digest": content_digest(self.frame),
            **self.info.commit_metadata,
        }


def read_version(home: ShipwayHome, table: str, version: int | None) -> TrainingSetVersion:
    """A version of the training set `table` (the latest with None), by time travel."""
    info = table_info(home.table(table), version)
    return TrainingSetVersion(info, read_table(home.table(table), version=info.version))


def accepted_version(home: ShipwayHome, table: str) -> TrainingSetVersion:
    """The newest version its contract accepted, never a rejected one."""
    return read_version(home, table, Ledger(home).require_accepted(table).version)


@dataclass(frozen=True)
class Rebuild:
    version: int
    inputs: TrainingSetInputs
    recorded_digest: str
    rebuilt_digest: str
    rows: int

    @property
    def identical(self) -> bool:
        return self.recorded_digest == self.rebuilt_digest


def rebuild(
    home: ShipwayHome, table: str, rules: LabelRules, version: int | None, log: Log
) -> Rebuild:
    """Build training set `version` again from its recorded input versions (time travel)."""
    recorded = table_info(home.table(table), version, digest=True)
    where = f"{table} v{recorded.version}"
    inputs = TrainingSetInputs.from_lineage(recorded.commit_metadata, where)
    recorded_rules = replace(
        rules,
        maturity_days=inputs.label_maturity_days,
        feature_warmup_days=inputs.feature_warmup_days,
    )
    assert recorded.content_digest is not None
    versioned = history(home).find(inputs.feature_version)
    source: ShipwayHome = home
    with tempfile.TemporaryDirectory(prefix="shipway-rebuild-") as scratch_dir:
        scratch = ShipwayHome(Path(scratch_dir))
        if versioned is not None:
            # Its own feature version: its tables, and its registry from its saved repository.
            source = version_home(home, versioned)
            scratch = version_home(scratch, versioned)
            shutil.copytree(versioned.folder / SOURCE_DIR, scratch.folder / SOURCE_DIR)
        for name, source_version in inputs.versions.items():
            log(f"reading {name} v{source_version} (time travel)")
            overwrite_table(scratch.table(name), read_table(source.table(name), source_version))
        log("registering the feature repository in a scratch Feast registry")
        feast_cli(scratch, "apply")
        scratch_inputs = replace(inputs, versions=dict.fromkeys(inputs.versions, 0))
        frame, derived = build(scratch, recorded_rules, scratch_inputs, log)
        rebuilt = write(scratch, table, frame, inputs, derived, retention_days=1)
    assert rebuilt.content_digest is not None
    return Rebuild(
        recorded.version, inputs, recorded.content_digest, rebuilt.content_digest, len(frame)
    )
