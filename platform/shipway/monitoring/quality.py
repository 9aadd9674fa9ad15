"""Live quality: what each version predicted, judged on the labels as they land.

The prediction log says what a version scored and which prediction point each row was
(`row_key`); the label table says, once a label has landed, the truth and when it became
known (`available_at`). Joined as of the lake's clock (its newest event), they give per
version and day how many predictions are labelled (coverage) and the metrics the model's
problem has; a version's live quality is that over the last `window_days` of its predictions,
judged only with `min_labelled` labelled rows (and both classes, for a classifier).

Metrics are the release gates' own (`shipway.stats.metrics`), so a live ROC-AUC and a
gated ROC-AUC are the same number on the same rows. Before labels land, each version's quality
estimator (`shipway.models.estimation`: CBPE, DLE) estimates the same metrics on all of its
predictions, on as many rows as a realized value needs; where labels have landed, the estimate
on the labelled rows minus the realized value is the estimation error, reported beside them.
A classifier with a cost model (`release.cost`) also gets its realized cost per 1,000
decisions (`cost_per_1000`) as labels land. Pure: frames in, a report out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client.core import GaugeMetricFamily

from shipway.files import write_atomic
from shipway.models.declaration import LIVE_METRICS, CostPolicy, MonitoringPolicy, QualityRule
from shipway.models.estimation import QualityEstimator
from shipway.scrape import Add, Family, FileCollector, FileErrors
from shipway.stats.cost import COST_METRIC, row_costs
from shipway.stats.metrics import expected_calibration_error, metric_functions, point_values

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quality:
    """One version over one stretch of predictions (a day, or the judged window)."""

    version: str
    predictions: int
    labelled: int
    metrics: dict[str, float] = field(default_factory=dict)
    day: str = ""
    estimated: dict[str, float] = field(default_factory=dict)
    """The metrics estimated on all its predictions, labelled or not."""
    estimation_error: dict[str, float] = field(default_factory=dict)
    """On its labelled rows: the estimate minus the realized value."""

    @property
    def coverage(self) -> float:
        return self.labelled / self.predictions if self.predictions else 0.0


@dataclass(frozen=True)
class Breach:
    version: str
    rule: QualityRule
    observed: float

    def line(self) -> str:
        limit = f">= {self.rule.min}" if self.rule.min is not None else f"<= {self.rule.max}"
        return f"v{self.version} live {self.rule.metric} {self.observed:.4f}, policy {limit}"


@dataclass(frozen=True)
class QualityReport:
    model: str
    as_of: str
    """The lake's clock: labels known by then count."""
    window_start: str
    window: list[Quality]
    """Per version, over the judged window; metrics only where there is enough evidence."""
    daily: list[Quality]

    def breaches(self, policy: MonitoringPolicy, version: str | None = None) -> list[Breach]:
        found = []
        for quality in self.window:
            if version is not None and quality.version != version:
                continue
            for rule in policy.quality:
                observed = quality.metrics.get(rule.metric)
                if observed is None:
                    continue
                if not rule.allows(observed):
                    found.append(Breach(quality.version, rule, observed))
        return found

    def markdown(self) -> str:
        stretches = self.window + self.daily
        metrics = sorted({m for q in stretches for m in q.metrics})
        estimated = sorted({m for q in stretches for m in q.estimated})
        header = "| version | day | predictions | labelled | coverage | " + " | ".join(
            [*metrics, *(f"{m} (est.)" for m in estimated), "estimation error"]
        )
        lines = [header + " |", "|" + " --- |" * (6 + len(metrics) + len(estimated))]
        for q in stretches:
            values = [f"{q.metrics[m]:.4f}" if m in q.metrics else "-" for m in metrics]
            values += [f"{q.estimated[m]:.4f}" if m in q.estimated else "-" for m in estimated]
            error = ", ".join(f"{m} {v:+.4f}" for m, v in sorted(q.estimation_error.items()))
            day = q.day or f"window from {self.window_start}"
            lines.append(
                f"| v{q.version} | {day} | {q.predictions} | {q.labelled} | "
                f"{q.coverage:.1%} | {' | '.join([*values, error or '-'])} |"
            )
        return "\n".join(lines)

    def save(self, path: Path) -> Path:
        return write_atomic(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> QualityReport:
        raw = json.loads(path.read_text())
        return cls(
            model=raw["model"],
            as_of=raw["as_of"],
            window_start=raw["window_start"],
            window=[Quality(**q) for q in raw["window"]],
            daily=[Quality(**q) for q in raw["daily"]],
        )


def _metrics(problem: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    if problem == "binary_classification" and len(np.unique(labels)) < 2:
        return {}
    values = point_values(metric_functions(problem, labels, scores, None), len(labels))
    found = {m: v for m, v in values.items() if m in LIVE_METRICS[problem] and np.isfinite(v)}
    if problem == "binary_classification":
        found["calibration_error"] = float(expected_calibration_error(labels, scores))
    return found


def _estimate(estimator: QualityEstimator, frame: pd.DataFrame) -> dict[str, float]:
    scores = frame["score"].to_numpy(float)
    if not estimator.needs_vectors:
        return estimator.estimate(np.empty((len(frame), 0)), scores)
    vectors = np.vstack(list(frame["vector"])).astype(float)
    return estimator.estimate(vectors, scores)


def _quality(
    frame: pd.DataFrame,
    version: str,
    problem: str,
    min_labelled: int,
    day: str = "",
    estimator: QualityEstimator | None = None,
    cost: CostPolicy | None = None,
) -> Quality:
    known = frame[frame["label"].notna()]
    labels, scores = known["label"].to_numpy(float), known["score"].to_numpy(float)
    metrics = _metrics(problem, labels, scores) if len(known) >= min_labelled else {}
    if cost is not None and len(known) >= min_labelled:
        prices = cost.prices({c: known[c].to_numpy(float) for c in cost.columns})
        costs = row_costs(labels, scores, cost.decision_threshold, prices)
        metrics[COST_METRIC] = float(1000.0 * costs.mean())
    estimated: dict[str, float] = {}
    error: dict[str, float] = {}
    if estimator is not None and len(frame) >= min_labelled:
        estimated = _estimate(estimator, frame)
        if metrics:
            on_labelled = _estimate(estimator, known)
            error = {m: on_labelled[m] - v for m, v in metrics.items() if m in on_labelled}
    return Quality(version, len(frame), len(known), metrics, day, estimated, error)


def live_quality(
    model: str,
    problem: str,
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    as_of: datetime,
    policy: MonitoringPolicy,
    estimators: Mapping[str, QualityEstimator] | None = None,
    cost: CostPolicy | None = None,
) -> QualityReport:
    """`predictions`: the prediction log's `version`, `day`, `at`, `row_key`, `score` (and
    `vector`, for an estimator that needs it); `labels`: `row_key`, `label`, `available_at`
    (None: known as soon as it landed) and the columns `cost` prices by; `estimators`: by
    version, those it has; `cost`: the release's cost model, for the realized cost."""
    estimators = estimators or {}
    known = labels[labels["available_at"].isna() | (labels["available_at"] <= as_of)]
    priced = cost.columns if cost is not None else []
    known = known.drop_duplicates("row_key", keep="last")[["row_key", "label", *priced]]
    joined = predictions.merge(known, on="row_key", how="left")
    start = as_of - timedelta(days=policy.window_days)
    window_start = start.strftime("%Y-%m-%d")
    recent = joined[joined["at"] >= pd.Timestamp(start)]
    window = [
        _quality(
            rows,
            str(version),
            problem,
            policy.min_labelled,
            "",
            estimators.get(str(version)),
            cost,
        )
        for version, rows in sorted(recent.groupby("version"), key=lambda kv: str(kv[0]))
    ]
    daily = [
        _quality(
            rows,
            str(version),
            problem,
            min(policy.min_labelled, 50),
            str(day),
            estimators.get(str(version)),
            cost,
        )
        for (version, day), rows in sorted(
            joined.groupby(["version", "day"]), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))
        )
    ]
    return QualityReport(model, as_of.isoformat(), window_start, window, daily)


class QualityCollector(FileCollector):
    """Each model's live quality, as `<model>_live_quality` last computed it (read at scrape
    from `<folder>/<model>.json`, `ServingHome.quality_reports`): the judged window's metrics,
    labelled rows and coverage. The serving control plane exports it; a report that cannot be
    read leaves out its model alone, counted (`shipway.scrape`)."""

    def __init__(self, folder: Path, errors: FileErrors) -> None:
        super().__init__(errors)
        self.folder = folder

    def families(self) -> list[Family]:
        names = ["model", "version"]
        return [
            GaugeMetricFamily(
                "shipway_live_quality",
                "Live quality per version over the policy's window (labels as they landed)",
                labels=[*names, "metric"],
            ),
            GaugeMetricFamily(
                "shipway_live_labelled_predictions",
                "Predictions in the window whose label has landed",
                labels=names,
            ),
            GaugeMetricFamily(
                "shipway_label_coverage", "Share of the window's predictions labelled", labels=names
            ),
            GaugeMetricFamily(
                "shipway_estimated_quality",
                "Quality per version over the policy's window, estimated before labels (CBPE, DLE)",
                labels=[*names, "metric"],
            ),
            GaugeMetricFamily(
                "shipway_estimated_quality_error",
                "On the window's labelled predictions: the estimate minus the realized value",
                labels=[*names, "metric"],
            ),
        ]

    def files(self) -> Iterable[Path]:
        return self.folder.glob("*.json") if self.folder.exists() else []

    def read(self, path: Path, add: Add) -> None:
        report = QualityReport.load(path)
        for q in report.window:
            labels = [report.model, q.version]
            add("shipway_live_labelled_predictions", labels, q.labelled)
            add("shipway_label_coverage", labels, q.coverage)
            for family, values in (
                ("shipway_live_quality", q.metrics),
                ("shipway_estimated_quality", q.estimated),
                ("shipway_estimated_quality_error", q.estimation_error),
            ):
                for metric, value in values.items():
                    add(family, [*labels, metric], value)
