"""Per-model policy: the thresholds, drift limits and serving rules a reviewer reads and changes.

Policy is data. The file sits next to the model's asset definitions
(`assets/<model>/policy.yaml`) and is validated here, so a typo fails loudly at load time with
the file, the field and what was expected, instead of silently weakening a gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipway.errors import PolicyError

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingPolicy(_Strict):
    feature_service: str
    validation_fraction: float = Field(gt=0.0, lt=0.5)
    label_maturity_days: int = Field(ge=0)
    feature_warmup_days: int = Field(ge=0)
    params: dict[str, float | int | str]
    seed: int = 7


class MetricGate(_Strict):
    """One absolute threshold on a validation metric; `min` and/or `max` must be given."""

    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier", "recall_at_precision_50"]
    min: float | None = None
    max: float | None = None
    why: str = ""

    def check(self, observed: float) -> str | None:
        """None when the metric passes, else a sentence that says what failed."""
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
    reference_bins: int = Field(ge=4, le=50)


class ModelPolicy(_Strict):
    model: str
    owner: str
    training: TrainingPolicy
    gates: list[MetricGate] = Field(min_length=1)
    drift: DriftPolicy
    serving: ServingPolicy


def load_policy(path: Path) -> ModelPolicy:
    """Read and validate a policy file; every problem becomes one PolicyError line."""
    return load_reviewed_file(path, ModelPolicy, "policy file")


def load_reviewed_file(path: Path, model: type[M], kind: str) -> M:
    """Read a YAML file a reviewer owns (policy, contract) into `model`, or fail in one line."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{kind} {path} not found") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{kind} {path} is not valid YAML: {_one_line(str(exc))}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{kind} {path} must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "missing" else "")
            for err in exc.errors()
        )
        raise PolicyError(f"{kind} {path} is invalid: {problems}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
