"""A model's declaration: everything a team writes to get the whole lifecycle.

One reviewed file per model, `assets/<folder>/model.yaml`: the problem, entity keys, the label
(which table it comes from, when it is known), the Feast feature service it trains and serves
with, training parameters, metric gates, the drift policy and serving settings. Policy is data:
this module validates the file's shape, so a typo fails at load time with the file, the field
and what was expected, instead of silently weakening a gate. Whether the names it uses exist
(feature service, tables, columns) is checked against the sources in `shipway.models.catalog`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shipway.reviewed import load_reviewed_file

Problem = Literal["binary_classification", "regression"]

# Validation metrics each problem type records; a gate may name any of them.
METRICS: dict[str, tuple[str, ...]] = {
    "binary_classification": ("roc_auc", "pr_auc", "log_loss", "brier", "recall_at_precision_50"),
    "regression": ("mae", "rmse", "r2", "mae_to_baseline", "rmse_to_baseline"),
}
BASELINE_METRICS = ("mae_to_baseline", "rmse_to_baseline")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelDeclaration(_Strict):
    """Where the label comes from: a Delta table with one row per prediction point (entity keys,
    `event_timestamp`, any request fields the feature service needs, and the label)."""

    table: str
    column: str
    maturity_days: int = Field(ge=0)
    """Train only on rows at least this old at the newest row: younger labels are incomplete."""
    available_at: str | None = None
    """Column saying when each row's label became known; rows not yet labelled are left out."""
    row_id: str | None = None
    """Column that identifies a row, for a total row order (else keys and time)."""


class TrainingPolicy(_Strict):
    validation_fraction: float = Field(gt=0.0, lt=0.5)
    feature_warmup_days: int = Field(ge=0)
    params: dict[str, float | int | str]
    seed: int = 7
    baseline: str | None = None
    """Regression: the feature that is the naive forecast (e.g. trailing spend) gates compare to."""


class MetricGate(_Strict):
    """One absolute threshold on a validation metric; `min` and/or `max` must be given."""

    metric: str
    min: float | None = None
    max: float | None = None
    why: str = ""

    def check(self, observed: float) -> str | None:
        """None when the metric passes, else a sentence that says what failed."""
        if math.isnan(observed):
            return f"{self.metric} is NaN (not computable on the validation rows)"
        if self.min is not None and observed < self.min:
            return f"{self.metric} = {observed:.4f} is below the minimum {self.min}"
        if self.max is not None and observed > self.max:
            return f"{self.metric} = {observed:.4f} is above the maximum {self.max}"
        return None


class DriftPolicy(_Strict):
    psi_threshold: float = Field(gt=0.0)
    min_window_samples: int = Field(gt=0)
    cooldown_minutes: float = Field(ge=0.0)
    evaluation_interval_seconds: int = Field(ge=5)


class ServingPolicy(_Strict):
    drift_window: int = Field(gt=10)
    """Live rows kept per version for drift."""
    reference_bins: int = Field(ge=4, le=50)


class ModelDeclaration(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """The model's one name: asset key, MLflow registered model, Prometheus label, served name."""
    owner: str
    description: str = ""
    problem: Problem
    entity_keys: list[str] = Field(min_length=1)
    feature_service: str
    label: LabelDeclaration
    training: TrainingPolicy
    gates: list[MetricGate]
    drift: DriftPolicy
    serving: ServingPolicy

    @field_validator("gates")
    @classmethod
    def _gates_fit_the_problem(
        cls, gates: list[MetricGate], info: ValidationInfo
    ) -> list[MetricGate]:
        problem = info.data.get("problem")
        if problem is None:
            return gates
        known = METRICS[problem]
        if not gates:
            raise ValueError(
                f"a {problem} model needs at least one gate; add one on a metric of {list(known)}"
            )
        for i, gate in enumerate(gates):
            if gate.metric not in known:
                raise ValueError(
                    f"[{i}].metric {gate.metric!r} is not a {problem} metric; "
                    f"use one of {list(known)}"
                )
            if gate.min is None and gate.max is None:
                raise ValueError(f"[{i}] ({gate.metric}) needs a min or a max")
        return gates

    @field_validator("training")
    @classmethod
    def _regression_has_a_baseline(
        cls, training: TrainingPolicy, info: ValidationInfo
    ) -> TrainingPolicy:
        if info.data.get("problem") == "regression" and training.baseline is None:
            raise ValueError(
                "a regression model names its naive forecast in training.baseline (a feature of "
                "its feature service, e.g. the trailing spend), so gates can compare against it"
            )
        return training

    @property
    def training_set(self) -> str:
        """Asset key, Delta table and contract dataset of the model's training set."""
        return f"{self.name}_training_set"

    @property
    def deployment(self) -> str:
        return f"{self.name}_deployment"

    @property
    def gate(self) -> str:
        return f"{self.name}_gate"

    @property
    def drift_sensor(self) -> str:
        return f"{self.name}_drift_sensor"

    @property
    def retrain_job(self) -> str:
        return f"{self.name}_retrain"

    @property
    def lifecycle_job(self) -> str:
        return f"{self.name}_lifecycle"


def load_declaration(path: Path) -> ModelDeclaration:
    """Read and validate a declaration file; every problem becomes one PolicyError line."""
    return load_reviewed_file(path, ModelDeclaration, "model declaration")
