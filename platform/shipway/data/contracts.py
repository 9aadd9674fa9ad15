"""Data contracts: what a dataset must look like, as a file a reviewer reads.

A contract (`assets/<model>/contracts/<dataset>.yaml`) names the columns and their types,
nullability, ranges, allowed categories, the key, and the dataset-level rules: freshness,
volume, labels, leakage and distribution shift against the last accepted version. Each rule
family is one gate (`shipway.data.gates` runs them); each gate is a blocking Dagster asset
check whose severity the contract sets. This module is the file's schema: a typo fails when the
file is read, naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shipway.reviewed import load_reviewed_file

GateName = Literal[
    "schema",
    "types",
    "nulls",
    "ranges",
    "categories",
    "keys",
    "outliers",
    "freshness",
    "volume",
    "labels",
    "leakage",
    "shift",
]
GATES: tuple[GateName, ...] = GateName.__args__  # type: ignore[attr-defined]
Level = Literal["error", "warn"]
LogicalType = Literal["string", "int", "float", "bool", "timestamp", "date"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutlierRule(_Strict):
    """Robust z-score (median and MAD of the reference) beyond which a value is an outlier."""

    max_robust_z: float = Field(gt=0)
    max_share: float = Field(ge=0, le=1)
    log_scale: bool = False


class ColumnContract(_Strict):
    type: LogicalType
    nullable: bool = False
    max_null_rate: float | None = Field(default=None, ge=0, le=1)
    min: float | None = None
    max: float | None = None
    allowed: list[str | int] | None = None
    outliers: OutlierRule | None = None
    description: str = ""

    @property
    def null_limit(self) -> float:
        if not self.nullable:
            return 0.0
        return 1.0 if self.max_null_rate is None else self.max_null_rate


class FreshnessRule(_Strict):
    column: str
    max_age_hours: float = Field(gt=0)


class VolumeRule(_Strict):
    """Rows per group (e.g. per landed day) against the median of the accepted data."""

    group_by: str | None = None
    min_rows: int = Field(default=1, ge=1)
    min_ratio: float = Field(gt=0)
    max_ratio: float = Field(gt=1)
    reference_groups: int = Field(default=14, ge=1)


class LabelRule(_Strict):
    column: str
    rate_min: float = Field(ge=0, le=1)
    rate_max: float = Field(ge=0, le=1)
    timestamp: str | None = None
    available_at: str | None = None
    max_delay_days: float | None = Field(default=None, gt=0)
    max_overdue_share: float = Field(default=0.0, ge=0, le=1)


class LeakageRule(_Strict):
    label: str
    columns: list[str] = Field(min_length=1)
    max_auc: float = Field(gt=0.5, le=1)
    max_rows: int = 1_000_000


class Limit(_Strict):
    warn: float = Field(gt=0)
    error: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Limit:
        if self.error < self.warn:
            raise ValueError(f"error ({self.error}) must not be below warn ({self.warn})")
        return self

    def level(self, observed: float) -> Level | None:
        if observed >= self.error:
            return "error"
        return "warn" if observed >= self.warn else None


class ShiftRule(_Strict):
    columns: list[str] = Field(min_length=1)
    bins: int = Field(default=10, ge=4, le=50)
    psi: Limit
    ks: Limit | None = None


class Contract(_Strict):
    dataset: str
    description: str
    key: list[str] = []
    columns: dict[str, ColumnContract] = Field(min_length=1)
    allow_extra_columns: bool = False
    freshness: FreshnessRule | None = None
    volume: VolumeRule | None = None
    labels: LabelRule | None = None
    leakage: LeakageRule | None = None
    shift: ShiftRule | None = None
    severity: dict[GateName, Level] = {}
    retention_days: int = Field(default=365, ge=1)

    @model_validator(mode="after")
    def _columns_exist(self) -> Contract:
        named = [*self.key]
        for rule in (self.freshness, self.labels):
            if rule is not None:
                named.append(rule.column)
        if self.labels is not None:
            named += [c for c in (self.labels.timestamp, self.labels.available_at) if c]
        if self.volume is not None and self.volume.group_by:
            named.append(self.volume.group_by)
        if self.leakage is not None:
            named += [self.leakage.label, *self.leakage.columns]
        if self.shift is not None:
            named += self.shift.columns
        unknown = sorted(set(named) - set(self.columns))
        if unknown:
            raise ValueError(f"rules name columns the contract does not declare: {unknown}")
        return self

    def gates(self) -> list[GateName]:
        """The gates this contract configures, in evaluation order."""
        present: dict[GateName, bool] = {
            "schema": True,
            "types": True,
            "nulls": True,
            "ranges": any(c.min is not None or c.max is not None for c in self.columns.values()),
            "categories": any(c.allowed for c in self.columns.values()),
            "keys": bool(self.key),
            "outliers": any(c.outliers for c in self.columns.values()),
            "freshness": self.freshness is not None,
            "volume": self.volume is not None,
            "labels": self.labels is not None,
            "leakage": self.leakage is not None,
            "shift": self.shift is not None,
        }
        return [g for g in GATES if present[g]]

    def describe(self, gate: GateName) -> str:
        """One line for the Dagster check description."""
        return f"{gate} gate of the {self.dataset} contract ({_GATE_TEXT[gate]})"


_GATE_TEXT: dict[GateName, str] = {
    "schema": "required columns present, no unexpected ones",
    "types": "each column has its declared type",
    "nulls": "missing-value rate per column",
    "ranges": "values within min/max",
    "categories": "values within the allowed set",
    "keys": "key columns unique",
    "outliers": "robust z-scores against the accepted data",
    "freshness": "newest row recent enough",
    "volume": "rows per batch against the accepted data",
    "labels": "label rate and labels arriving within their delay",
    "leakage": "no single column predicts the label almost perfectly",
    "shift": "PSI / KS per column against the last accepted version",
}


def load_contract(path: Path) -> Contract:
    """Read and validate a contract file; every problem becomes one PolicyError line."""
    return load_reviewed_file(path, Contract, "contract file")
