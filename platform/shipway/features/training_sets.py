"""Point-in-time training sets: built from recorded input versions, rebuilt by time travel.

A training set records the Delta version of every input (raw events and each feature table),
the feature service and the label rules it was built with. `rebuild` reads those versions
back, builds the set again in a scratch home with its own Feast registry, and compares content
digests: equal digests prove the training set is reproducible.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from shipway.data.lake import TableInfo, overwrite_table, read_table, table_info
from shipway.errors import ShipwayError
from shipway.features.store import (
    ENTITY_KEYS,
    LABEL,
    feast_cli,
    feature_store,
    historical_features,
    model_frame,
)
from shipway.models.declaration import TrainingPolicy
from shipway.paths import ShipwayHome

TABLE = "training_set"
INPUT_TABLES = ("raw_events", "customer_features", "merchant_features")
RAW_COLUMNS = [
    "transaction_id",
    *ENTITY_KEYS,
    "event_timestamp",
    "merchant_category",
    "channel",
    "amount",
    LABEL,
    "label_available_at",
]


@dataclass(frozen=True)
class TrainingSetInputs:
    versions: dict[str, int]
    feature_service: str
    label_maturity_days: int
    feature_warmup_days: int

    @classmethod
    def current(cls, home: ShipwayHome, training: TrainingPolicy) -> TrainingSetInputs:
        return cls(
            {t: table_info(home.table(t)).version for t in INPUT_TABLES},
            training.feature_service,
            training.label_maturity_days,
            training.feature_warmup_days,
        )

    def lineage(self) -> dict[str, str]:
        return {
            **{f"{t}_version": str(v) for t, v in self.versions.items()},
            "feature_service": self.feature_service,
            "label_maturity_days": str(self.label_maturity_days),
            "feature_warmup_days": str(self.feature_warmup_days),
        }

    @classmethod
    def from_lineage(cls, lineage: dict[str, str], where: str) -> TrainingSetInputs:
        needed = [f"{t}_version" for t in INPUT_TABLES]
        needed += ["feature_service", "label_maturity_days", "feature_warmup_days"]
        missing = [k for k in needed if k not in lineage]
        if missing:
            raise ShipwayError(
                f"{where} does not record {missing}: it was built before inputs were recorded "
                "and cannot be rebuilt"
            )
        return cls(
            {t: int(lineage[f"{t}_version"]) for t in INPUT_TABLES},
            lineage["feature_service"],
            int(lineage["label_maturity_days"]),
            int(lineage["feature_warmup_days"]),
        )


Log = Callable[[str], None]


def build(home: ShipwayHome, inputs: TrainingSetInputs, log: Log) -> tuple[pd.DataFrame, dict]:
    """Labelled, matured transactions joined point-in-time with the feature service.

    Returns the rows and what was derived on the way (label cutoff, excluded events). Feast
    reads the feature tables of `home` as they are; `inputs` says which versions those are.
    """
    events = read_table(
        home.table("raw_events"), version=inputs.versions["raw_events"], columns=RAW_COLUMNS
    )
    # Labels arrive late: train only on matured events whose label is known at the newest one.
    cutoff = events["event_timestamp"].max()
    matured = cutoff - pd.Timedelta(days=inputs.label_maturity_days)
    warm = events["event_timestamp"].min() + pd.Timedelta(days=inputs.feature_warmup_days)
    known = (
        (events["event_timestamp"] >= warm)
        & (events["event_timestamp"] <= matured)
        & (events["label_available_at"] <= cutoff)
    )
    labelled = events[known].drop(columns="label_available_at")
    log(
        f"{len(labelled)} of {len(events)} events are past feature warm-up ({warm}) and "
        f"labelled by {cutoff}; joining with {inputs.feature_service}"
    )
    joined = historical_features(feature_store(home), labelled, inputs.feature_service)
    frame = model_frame(joined, joined)
    keys = joined[["transaction_id", *ENTITY_KEYS, "event_timestamp", LABEL]]
    # A total order (time, then id): the join returns rows in no set order, and XGBoost's row
    # subsampling depends on row order, so the same inputs must give the same rows in sequence.
    out = (
        keys.join(frame)
        .sort_values(["event_timestamp", "transaction_id"], kind="stable")
        .reset_index(drop=True)
    )
    derived = {
        "label_cutoff": cutoff.isoformat(),
        "matured_before": matured.isoformat(),
        "warm_from": warm.isoformat(),
        "unlabelled_events_excluded": len(events) - len(labelled),
    }
    return out, derived


def write(
    home: ShipwayHome, frame: pd.DataFrame, inputs: TrainingSetInputs, retention_days: int
) -> TableInfo:
    return overwrite_table(home.table(TABLE), frame, inputs.lineage(), retention_days)


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


def rebuild(home: ShipwayHome, version: int | None, log: Log) -> Rebuild:
    """Build training set `version` again from its recorded input versions (time travel)."""
    recorded = table_info(home.table(TABLE), version, digest=True)
    where = f"training_set v{recorded.version}"
    inputs = TrainingSetInputs.from_lineage(recorded.commit_metadata, where)
    assert recorded.content_digest is not None
    with tempfile.TemporaryDirectory(prefix="shipway-rebuild-") as scratch_dir:
        scratch = ShipwayHome(Path(scratch_dir))
        for table, table_version in inputs.versions.items():
            log(f"reading {table} v{table_version} (time travel)")
            overwrite_table(scratch.table(table), read_table(home.table(table), table_version))
        log("registering the feature repository in a scratch Feast registry")
        feast_cli(scratch, "apply")
        scratch_inputs = replace(inputs, versions=dict.fromkeys(inputs.versions, 0))
        frame, _ = build(scratch, scratch_inputs, log)
        rebuilt = write(scratch, frame, inputs, retention_days=1)
    assert rebuilt.content_digest is not None
    return Rebuild(
        recorded.version, inputs, recorded.content_digest, rebuilt.content_digest, len(frame)
    )
