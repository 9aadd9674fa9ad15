"""A model's declaration: everything a team writes to get the whole lifecycle.

One reviewed file per model, `assets/<folder>/model.yaml`: the problem, entity keys, the label
(which table it comes from, when it is known), the Feast feature service it trains and serves
with, training parameters, metric gates, the release policy, the drift policy, serving settings,
the rollout policy and the monitoring policy (live quality, retraining cadence, retention of the
prediction log). Policy is data:
this module validates the file's shape, so a typo fails at load time with the file, the field
and what was expected, instead of silently weakening a gate. Whether the names it uses exist
(feature service, tables, columns) is checked against the sources in `shipway.models.catalog`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shipway.errors import ShipwayError
from shipway.reviewed import load_reviewed_file
from shipway.serving.bundle import MAX_REPLICAS, PredictionKeys
from shipway.stats.cost import OUTCOMES, Price
from shipway.stats.drift import DriftRule, DriftRules
from shipway.stats.metrics import BOOTSTRAPPABLE

Problem = Literal["binary_classification", "regression"]

# Validation metrics each problem type records; a gate may name any of them.
METRICS: dict[str, tuple[str, ...]] = {
    "binary_classification": ("roc_auc", "pr_auc", "log_loss", "brier", "recall_at_precision_50"),
    "regression": ("mae", "rmse", "r2", "mae_to_baseline", "rmse_to_baseline"),
}
BASELINE_METRICS = ("mae_to_baseline", "rmse_to_baseline")
# What live quality can be: the prediction log holds scores, not the naive baseline.
LIVE_METRICS: dict[str, tuple[str, ...]] = {
    "binary_classification": ("roc_auc", "pr_auc", "log_loss", "brier"),
    "regression": ("mae", "rmse", "r2"),
}


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


class ChangeRule(_Strict):
    """How the challenger must compare with the champion on one metric, decided on the
    confidence interval of the paired difference (challenger - champion, same rows)."""

    non_inferiority_margin: float | None = Field(default=None, ge=0.0)
    """May be worse by at most this much: passes when the whole interval is above -margin."""
    required_improvement: float | None = Field(default=None, ge=0.0)
    """Must be better by more than this: passes when the whole interval is above it."""
    relative: bool = False
    """Margins as a fraction of the champion's value instead of metric units."""

    @model_validator(mode="after")
    def _one_rule(self) -> ChangeRule:
        given = [self.non_inferiority_margin, self.required_improvement]
        if sum(v is not None for v in given) != 1:
            raise ValueError("give exactly one of non_inferiority_margin or required_improvement")
        return self

    def threshold(self, champion: float) -> float:
        """The lowest improvement (in the metric's better direction) that passes."""
        margin = (
            -self.non_inferiority_margin
            if self.non_inferiority_margin is not None
            else float(self.required_improvement or 0.0)
        )
        return margin * abs(champion) if self.relative else margin

    def describe(self) -> str:
        unit = " (relative)" if self.relative else ""
        if self.non_inferiority_margin is not None:
            return f"not worse than the champion by more than {self.non_inferiority_margin}{unit}"
        return f"better than the champion by more than {self.required_improvement}{unit}"


class MetricGate(_Strict):
    """A metric's absolute threshold (`min` and/or `max`) on the evaluation rows, and its change
    rule against the champion (`versus_champion`) on the same rows."""

    metric: str
    min: float | None = None
    max: float | None = None
    versus_champion: ChangeRule | None = None
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


SliceMetric = Literal["roc_auc", "pr_auc", "brier", "mae", "rmse", "r2"]


class SliceRule(_Strict):
    """Metrics per value (or bin) of one column: a column of the label table (e.g. channel) or
    a feature of the service, cut at `bins` if numeric."""

    column: str
    bins: list[float] | None = Field(default=None, min_length=2)
    metric: SliceMetric
    max_regression: float | None = Field(default=None, ge=0.0)
    """No slice may be worse than the champion on it by more than this (metric units)."""
    max_gap: float | None = Field(default=None, ge=0.0)
    """The challenger's best and worst slice may differ by at most this (fairness)."""
    min_rows: int = Field(default=100, ge=1)
    min_positives: int = Field(default=5, ge=0)
    """Classification: a smaller slice is reported but not judged."""


class OperationalLimits(_Strict):
    max_predict_cpu_p99_ms: float = Field(gt=0.0)
    """CPU time of a single-row predict of the model file, in-process, 99th percentile: what
    the model costs, the same on a busy machine (serving's wall-clock p99 is judged by the
    rollout and the alerts)."""
    max_model_mb: float = Field(gt=0.0)
    max_calibration_error: float | None = Field(default=None, gt=0.0)
    """Classification: expected calibration error (10 equal-width score bins)."""


FairnessMetric = Literal[
    "demographic_parity_difference",
    "equalized_odds_difference",
    "false_positive_rate_difference",
    "false_negative_rate_difference",
    "mae_gap",
]
FAIRNESS_METRICS: dict[str, tuple[str, ...]] = {
    "binary_classification": (
        "demographic_parity_difference",
        "equalized_odds_difference",
        "false_positive_rate_difference",
        "false_negative_rate_difference",
    ),
    "regression": ("mae_gap",),
}


class FairnessRule(_Strict):
    """How far apart the groups of one sensitive column may be: the difference between the best
    and the worst judged group (fairlearn's `between_groups`), at most `max`; and, with
    `versus_champion`, against the champion's difference on the same rows (paired bootstrap)."""

    column: str
    metric: FairnessMetric
    max: float = Field(ge=0.0)
    versus_champion: ChangeRule | None = None
    """The difference may grow over the champion's by at most the margin (non-inferiority), or
    must shrink by more than `required_improvement`."""
    why: str = ""


class FairnessPolicy(_Strict):
    decision_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Classification: a score at or above it is a positive decision (declined, reviewed); the
    rates the rules compare are those of the decision, not of the score."""
    min_group_rows: int = Field(default=100, ge=1)
    """A group with fewer evaluation rows is reported, not judged."""
    min_group_positives: int = Field(default=0, ge=0)
    """Classification: and with fewer positive labels (needed by false-negative rates)."""
    rules: list[FairnessRule] = Field(min_length=1)


class OutcomeCost(_Strict):
    """What one decision with this outcome costs: a fixed amount, plus a label-table column's
    value times `scale` (a missed fraud costs its `amount`)."""

    fixed: float = Field(default=0.0, ge=0.0)
    column: str | None = None
    scale: float = Field(default=1.0, ge=0.0)


class CostPolicy(_Strict):
    """The business cost of a classifier's decisions, per 1,000 decisions on the evaluation
    rows: each row costs what its outcome (true or false, positive or negative decision at
    `decision_threshold`) costs. Gated by an absolute `max_per_1000` and a change rule
    against the champion on the paired bootstrap, like the metric gates."""

    currency: str = "EUR"
    decision_threshold: float = Field(gt=0.0, lt=1.0)
    true_positive: OutcomeCost = OutcomeCost()
    false_positive: OutcomeCost = OutcomeCost()
    false_negative: OutcomeCost = OutcomeCost()
    true_negative: OutcomeCost = OutcomeCost()
    max_per_1000: float | None = Field(default=None, ge=0.0)
    versus_champion: ChangeRule | None = None

    def prices(self, columns: Mapping[str, np.ndarray]) -> dict[str, Price]:
        """Each outcome's price, its column's values taken from `columns` (one per row)."""
        found = {}
        for outcome in OUTCOMES:
            declared: OutcomeCost = getattr(self, outcome)
            column = declared.column
            if column is not None and column not in columns:
                raise ShipwayError(
                    f"cost: {outcome} is priced by column {column!r}, which the rows lack "
                    f"(they have {sorted(columns)})"
                )
            values = None if column is None else np.asarray(columns[column])
            found[outcome] = Price(declared.fixed, values, declared.scale)
        return found

    @property
    def columns(self) -> list[str]:
        """The label-table columns the costs read."""
        found = (getattr(self, outcome).column for outcome in OUTCOMES)
        return list(dict.fromkeys(c for c in found if c is not None))


ChangeKind = Literal["first_version", "feature_service", "features", "parameters", "problem"]


class ApprovalPolicy(_Strict):
    high_risk: bool = False
    """Every release of a high-risk model needs a named approver."""
    needs_approval: list[ChangeKind] = ["feature_service", "features", "parameters", "problem"]
    """Changes against the champion that need a named approver; the rest (a retrain of the
    same setup on newer data) is promoted to rollout once the gates pass."""


class ReleasePolicy(_Strict):
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(default=1000, ge=100)
    min_rows: int = Field(ge=1)
    """Fewer evaluation rows than this: `insufficient_evidence`, never a pass."""
    min_positives: int = Field(default=0, ge=0)
    """Classification: fewer positive labels than this in the evaluation rows, likewise."""
    slices: list[SliceRule] = []
    operational: OperationalLimits
    reproducible: bool = True
    """Retrain from the recorded lineage at the gate and require the same artifact hash."""
    approval: ApprovalPolicy = ApprovalPolicy()
    fairness: FairnessPolicy | None = None
    """Rules on the model's `sensitive` columns, judged on the same evaluation rows."""
    cost: CostPolicy | None = None
    """The business cost of the decisions (classifiers), reported and gated per 1,000."""
    keep_feature_versions: int = Field(default=2, ge=0)
    """The newest feature versions of the model's feature service kept built (tables, online
    rows) besides every version a serving, champion or challenger version pins: what a
    rollback past the champion can return to without a rebuild."""


DriftKind = Literal["numeric", "categorical", "hour_of_day"]


class FeatureDrift(_Strict):
    """How one feature (or `score`, the prediction) is compared, when it is not the default."""

    kind: DriftKind = "numeric"
    """`categorical`: by category (PSI and chi²); `hour_of_day`: by hour, against the training
    rows of the hours a window covers; `numeric`: quantile bins (PSI) and KS."""
    psi_threshold: float | None = Field(default=None, gt=0.0)
    p_value: float | None = Field(default=None, gt=0.0, lt=1.0)
    exclude: str | None = Field(default=None, min_length=10)
    """Not compared at all; the value is the reason, shown wherever drift is."""


class DriftPolicy(_Strict):
    """Live drift per version, decided by the runtime on a time window and read by
    `<model>_drift_sensor` and the alerts: a feature drifts when its PSI passes its threshold
    and its test's (KS, chi²) p-value is below its limit."""

    psi_threshold: float = Field(gt=0.0)
    p_value: float = Field(default=0.05, gt=0.0, lt=1.0)
    window_minutes: float = Field(default=15.0, gt=0.0)
    """Rows older than this leave a version's window: a version without traffic stops alarming."""
    min_window_samples: int = Field(gt=0)
    """A window with fewer rows has no drift statistics."""
    cooldown_minutes: float = Field(ge=0.0)
    evaluation_interval_seconds: int = Field(ge=5)
    features: dict[str, FeatureDrift] = {}
    attribution_share_change: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Attribution drift: a feature whose share of the model's mean |SHAP contribution| moves
    this much from training (0.1: from 30% to 40%) drifts; unset, attribution is not judged."""

    def kinds(self) -> dict[str, str]:
        return {name: rule.kind for name, rule in self.features.items()}

    def rules(self, max_rows: int) -> DriftRules:
        default = DriftRule(self.psi_threshold, self.p_value)
        return DriftRules(
            default=default,
            features={
                name: DriftRule(rule.psi_threshold or default.psi, rule.p_value or default.p_value)
                for name, rule in self.features.items()
                if rule.exclude is None
            },
            excluded={n: r.exclude for n, r in self.features.items() if r.exclude is not None},
            window_seconds=self.window_minutes * 60.0,
            min_rows=self.min_window_samples,
            max_rows=max_rows,
            attribution_share_change=self.attribution_share_change,
        )


class ServingPolicy(_Strict):
    drift_window: int = Field(gt=10)
    """At most this many live rows per version in the drift window (the newest)."""
    reference_bins: int = Field(ge=4, le=50)
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    """Model servers per version behind the data plane (Seldon's `Model.spec.replicas`); the
    first judges drift, on the share of traffic it serves."""


Strategy = Literal["canary", "shadow_then_canary", "blue_green"]


class RolloutChecks(_Strict):
    """What each analysis interval checks of the challenger (Flagger's metrics)."""

    min_success_rate: float = Field(default=0.99, gt=0.0, le=1.0)
    """Share of the challenger's requests answered without a server error (5xx)."""
    max_latency_p99_ratio: float = Field(default=1.5, gt=1.0)
    """Challenger's p99 over the champion's, both measured by the data plane."""
    latency_floor_ms: float = Field(default=10.0, ge=0.0)
    """A challenger p99 under this passes the ratio: at a few ms, histogram buckets are noise."""
    max_latency_p99_ms: float | None = Field(default=None, gt=0.0)
    """An absolute p99 ceiling too, where the champion is itself slow."""
    max_score_divergence: float | None = Field(default=0.1, gt=0.0)
    """|mean score (challenger) - mean score (champion)| over the interval."""
    live_quality: bool = True
    """Once the challenger has `monitoring.min_labelled` labelled predictions, its live
    quality must keep `monitoring.quality`'s limits (labels come late: until then, unchecked)."""
    max_guard_block_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """LLM applications: share of live questions the guards refused or withheld."""
    max_tokens_ratio: float | None = Field(default=None, gt=1.0)
    """LLM applications: tokens per answer over the champion's."""


class RolloutPolicy(_Strict):
    """How a released version reaches 100%: Flagger's analysis loop, as data."""

    strategy: Strategy = "shadow_then_canary"
    steps: list[int] = Field(default=[10, 50, 100], min_length=1)
    """Challenger's traffic weight per step (percent); the last is 100."""
    interval_seconds: int = Field(default=60, ge=5)
    """Length of one analysis interval (Flagger: `interval`, minimum 10 s there)."""
    min_requests: int = Field(default=50, ge=1)
    """Requests the challenger must answer in an interval for its checks to count."""
    failed_checks: int = Field(default=1, ge=1)
    """Failed intervals, in a row, that roll back (Flagger: `threshold`)."""
    no_data: Literal["hold", "fail"] = "hold"
    """Too few requests in an interval: wait at this step (hold), or count a failed check."""
    max_hold_intervals: int = Field(default=10, ge=1)
    """Held intervals after which no-data counts as failed after all: a rollout never stalls."""
    shadow_intervals: int = Field(default=1, ge=1)
    grace_seconds: int = Field(default=60, ge=0)
    """After promotion the old champion keeps running this long (instant revert), then stops."""
    checks: RolloutChecks = RolloutChecks()

    @field_validator("steps")
    @classmethod
    def _steps_rise_to_100(cls, steps: list[int]) -> list[int]:
        if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError(f"steps must rise strictly within 1..100, got {steps}")
        if steps[-1] != 100:
            raise ValueError(f"the last step must be 100 (full traffic), got {steps[-1]}")
        return steps


class QualityRule(_Strict):
    """A limit on live quality: the prediction log joined with labels as they land."""

    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_a_limit(self) -> QualityRule:
        if self.min is None and self.max is None:
            raise ValueError(f"{self.metric}: give a min or a max")
        return self

    def allows(self, value: float) -> bool:
        """Whether a live value keeps this rule's limits."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class AlertPolicy(_Strict):
    """Limits of the model's Prometheus alerts (`shipway render alerts`). Drift, errors and
    live quality alert on the drift, rollout and quality policies' own limits."""

    latency_p99_ms: float = Field(default=100.0, gt=0.0)
    """Serving p99 (the data plane's view) above this for `for_minutes` alerts."""
    no_traffic_minutes: int = Field(default=10, ge=1)
    """No request for this long alerts (a caller stopped, or routing broke)."""
    prediction_log_stale_minutes: int = Field(default=10, ge=1)
    """Nothing written to the prediction log for this long while traffic flows alerts."""
    for_minutes: int = Field(default=2, ge=0)


class SkewPolicy(_Strict):
    """What `<model>_feature_skew` compares and when its verdict blocks the next rollout."""

    sample_rows: int = Field(default=500, ge=1)
    """Logged requests compared per run (the newest served rows of the window)."""
    tolerance: float = Field(default=1e-6, ge=0.0)
    """A value differs when |online - offline| > tolerance * max(1, |offline|)."""
    max_share: float = Field(default=0.01, ge=0.0, le=1.0)
    """A feature is skewed when more than this share of compared rows differ."""
    min_rows: int = Field(default=20, ge=1)
    """Fewer comparable rows than this: no verdict (nothing blocks)."""


class MonitoringPolicy(_Strict):
    """What `<model>_live_quality`, `<model>_quality_sensor` and the retrain schedule do."""

    window_days: int = Field(default=7, ge=1)
    """Live quality per version is judged over the predictions of the last this many days."""
    min_labelled: int = Field(default=200, ge=1)
    """Labelled predictions a version needs in the window before its quality is judged."""
    quality: list[QualityRule] = []
    """Live quality under these limits requests a retrain."""
    act_on_estimate: bool = False
    """While a version has fewer than `min_labelled` labelled predictions, the quality sensor
    and the rollout's `live_quality` check judge its estimated quality (CBPE or DLE, on all
    its predictions) against the same limits; off: they wait for labels."""
    cooldown_minutes: float = Field(default=60.0, ge=0.0)
    """At most one quality-requested retrain per this many minutes."""
    retrain_schedule: str | None = None
    """A cron schedule (UTC) for retraining on a cadence, e.g. `0 3 * * 1`; none: only on
    drift and quality."""
    prediction_log_retention_days: int = Field(default=90, ge=1)
    alerts: AlertPolicy = AlertPolicy()
    skew: SkewPolicy = SkewPolicy()
    """Training/serving skew: the vectors served against the point-in-time offline ones."""

    @field_validator("retrain_schedule")
    @classmethod
    def _a_cron(cls, schedule: str | None) -> str | None:
        if schedule is not None and len(schedule.split()) != 5:
            raise ValueError(f"{schedule!r} is not a 5-field cron schedule, e.g. '0 3 * * 1'")
        return schedule


class BatchScoring(_Strict):
    """`<model>_batch_scores`: every day, the champion scores a population (the entities active
    in the population table over the last days) as of the day's end."""

    population: str
    """The Delta table whose entity keys, with a row in the lookback, make a day's population."""
    lookback_days: int = Field(default=30, ge=1)
    start_date: date
    """The first daily partition."""
    hour_utc: int = Field(default=2, ge=0, le=23)
    """The schedule scores the day just ended at this hour (UTC)."""


class CardDeclaration(_Strict):
    """What a model card says that only its owners know (`shipway models card`)."""

    intended_use: str = ""
    """Who uses the model's outputs, for what decision."""
    limitations: list[str] = []
    """Where it should not be trusted: populations, data it never saw, known failure modes."""


class LifecycleNames:
    """The Dagster names every declared model and application shares: one name per concept,
    derived from the declaration's `name`."""

    name: str

    @property
    def gate(self) -> str:
        return f"{self.name}_gate"

    @property
    def deployment(self) -> str:
        return f"{self.name}_deployment"

    @property
    def rollout_sensor(self) -> str:
        return f"{self.name}_rollout_sensor"

    @property
    def lifecycle_job(self) -> str:
        return f"{self.name}_lifecycle"

    @property
    def live_quality(self) -> str:
        return f"{self.name}_live_quality"

    @property
    def live_drift(self) -> str:
        return f"{self.name}_live_drift"

    @property
    def batch_scores(self) -> str:
        return f"{self.name}_batch_scores"

    @property
    def batch_job(self) -> str:
        return f"{self.name}_batch_scoring"


class ModelDeclaration(LifecycleNames, _Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """The model's one name: asset key, MLflow registered model, Prometheus label, served name."""
    owner: str
    description: str = ""
    problem: Problem
    entity_keys: list[str] = Field(min_length=1)
    feature_service: str
    label: LabelDeclaration
    sensitive: list[str] = []
    """Columns of the label table a fairness review looks at (an age band, a region). Never
    features: the catalog refuses a declaration whose feature service uses one."""
    card: CardDeclaration = CardDeclaration()
    """Intended use and limitations, for the model card."""
    training: TrainingPolicy
    gates: list[MetricGate]
    release: ReleasePolicy
    drift: DriftPolicy
    serving: ServingPolicy
    rollout: RolloutPolicy = RolloutPolicy()
    monitoring: MonitoringPolicy = MonitoringPolicy()
    batch: BatchScoring | None = None
    """Daily batch scoring of a population with the champion; none: online only."""

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
            if gate.min is None and gate.max is None and gate.versus_champion is None:
                raise ValueError(f"[{i}] ({gate.metric}) needs a min, a max or versus_champion")
            if gate.versus_champion is not None and gate.metric not in BOOTSTRAPPABLE:
                raise ValueError(
                    f"[{i}].versus_champion: {gate.metric} has no paired interval; compare on "
                    f"one of {sorted(BOOTSTRAPPABLE & set(known))}"
                )
        return gates

    @field_validator("release")
    @classmethod
    def _release_fits_the_problem(
        cls, release: ReleasePolicy, info: ValidationInfo
    ) -> ReleasePolicy:
        problem = info.data.get("problem")
        if problem is None:
            return release
        for i, rule in enumerate(release.slices):
            if rule.metric not in METRICS[problem]:
                raise ValueError(
                    f"slices[{i}].metric {rule.metric!r} is not a {problem} metric; "
                    f"use one of {[m for m in METRICS[problem] if m in BOOTSTRAPPABLE]}"
                )
        if problem == "regression" and release.operational.max_calibration_error is not None:
            raise ValueError(
                "operational.max_calibration_error: calibration is gated for classifiers only"
            )
        fairness = release.fairness
        if fairness is not None:
            known = FAIRNESS_METRICS[problem]
            for i, fair in enumerate(fairness.rules):
                if fair.metric not in known:
                    raise ValueError(
                        f"fairness.rules[{i}].metric {fair.metric!r} is not a {problem} "
                        f"fairness metric; use one of {list(known)}"
                    )
                if fair.column not in info.data.get("sensitive", []):
                    raise ValueError(
                        f"fairness.rules[{i}].column {fair.column!r} is not declared "
                        f"sensitive; list it in the model's `sensitive` columns "
                        f"(now {info.data.get('sensitive', [])})"
                    )
            if problem == "binary_classification" and fairness.decision_threshold is None:
                raise ValueError(
                    "fairness.decision_threshold: a classifier's fairness rules compare "
                    "decisions; give the score at or above which a row is a positive decision"
                )
            if problem == "regression" and fairness.decision_threshold is not None:
                raise ValueError("fairness.decision_threshold: a regression makes no decision")
        if problem == "regression" and release.cost is not None:
            raise ValueError(
                "cost: a cost model prices a classifier's decisions; a regression makes none"
            )
        return release

    @field_validator("monitoring")
    @classmethod
    def _live_metrics_fit_the_problem(
        cls, monitoring: MonitoringPolicy, info: ValidationInfo
    ) -> MonitoringPolicy:
        problem = info.data.get("problem")
        if problem is None:
            return monitoring
        for i, rule in enumerate(monitoring.quality):
            if rule.metric not in LIVE_METRICS[problem]:
                raise ValueError(
                    f"quality[{i}].metric {rule.metric!r} is not a live {problem} metric; use "
                    f"one of {list(LIVE_METRICS[problem])}"
                )
        return monitoring

    @model_validator(mode="after")
    def _drift_window_can_fill(self) -> ModelDeclaration:
        if self.drift.min_window_samples > self.serving.drift_window:
            raise ValueError(
                f"drift.min_window_samples {self.drift.min_window_samples} > "
                f"serving.drift_window {self.serving.drift_window}: the window could never "
                "hold enough rows to be judged"
            )
        return self

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
    def prediction_keys(self) -> PredictionKeys:
        """How a served row names its prediction point, as its label row will."""
        return PredictionKeys(self.label.row_id, tuple(self.entity_keys))

    @property
    def training_set(self) -> str:
        """Asset key, Delta table and contract dataset of the model's training set."""
        return f"{self.name}_training_set"

    @property
    def drift_sensor(self) -> str:
        return f"{self.name}_drift_sensor"

    @property
    def retrain_job(self) -> str:
        return f"{self.name}_retrain"

    @property
    def release_job(self) -> str:
        return f"{self.name}_release"

    @property
    def release_sensor(self) -> str:
        return f"{self.name}_release_sensor"

    @property
    def feature_skew(self) -> str:
        return f"{self.name}_feature_skew"

    @property
    def quality_sensor(self) -> str:
        return f"{self.name}_quality_sensor"

    @property
    def retrain_schedule(self) -> str:
        return f"{self.name}_retrain_schedule"


def load_declaration(path: Path) -> ModelDeclaration:
    """Read and validate a declaration file; every problem becomes one PolicyError line."""
    return load_reviewed_file(path, ModelDeclaration, "model declaration")
