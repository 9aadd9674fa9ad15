"""Shipway's MLServer runtime: one XGBoost model version behind the Open Inference Protocol.

It runs inside MLServer, in the serving environment (`deploy/serving/.venv`), with `platform/`
on its path; it imports only modules that need numpy, pandas and XGBoost (`shipway.errors`,
`shipway.serving.protocol`, `shipway.serving.explanations`, `shipway.stats.drift`,
`shipway.stats.attribution`): `shipway.serving.package.RUNTIME_SOURCES`. What it adds to
MLServer's stock XGBoost runtime:

- requests in either standard shape (one input per feature, or one `[n, k]` input named
  `features`), validated against the version's features; a bad one is a 400 naming the input,
  which the data plane never counts as the version's error;
- one output, `score`: the positive class's probability, or the forecast, from the model's
  trees walked with numpy for a request of a few rows and from XGBoost for more
  (`shipway.serving.trees`, checked against XGBoost when the version loads); and, when the
  request's `parameters.contributions` is true, a second, `contributions`: each row's TreeSHAP
  value per feature and the bias (`shipway.serving.explanations`);
- taps off the hot path: a request only queues its rows and scores; the drift window (by time,
  `shipway.stats.drift`) and the score histogram are computed when Prometheus scrapes
  (`shipway_feature_drift_{psi,pvalue}`, `shipway_feature_drifted`, the same for
  `shipway_prediction_drift*`, `shipway_drift_window_samples`, `shipway_prediction_score`;
  attribution drift (`shipway_attribution_{share,share_change,drifted}` per feature and
  `shipway_attribution_window_samples`) from the contributions of at most
  `ATTRIBUTION_ROWS_PER_SCRAPE` of the rows served since the last scrape, so its cost is
  bounded whatever the traffic; the cost of serving, `shipway_predictions_total` and
  `shipway_process_cpu_seconds_total` (this process's CPU time), per version and replica;
  no drift series while the window holds fewer rows than the policy's minimum; of a version's
  replicas, only the first judges drift, on the share of requests Envoy sends it, so each
  version has one drift series per feature), and a thread writes them to the
  prediction spool (`shipway.serving.prediction_spool`) with the request id, the caller the
  front door named, the `row_keys` parameter and whether the request was mirrored (Envoy adds
  `-shadow` to a mirrored request's host name);
- an optional injected fault (`parameters.extra.fault`: error ratio and added latency), which is
  how the demo and the tests make a bad challenger.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from mlserver import MLModel
from mlserver.errors import InferenceError, MLServerError
from mlserver.logging import logger
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput
from mlserver.utils import get_model_uri
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from shipway.errors import BadRequest
from shipway.names import SCORE
from shipway.serving.bundle import REPLICA_ENV
from shipway.serving.explanations import (
    ATTRIBUTION_ROWS_PER_SCRAPE,
    BIAS,
    contributions,
    sample,
)
from shipway.serving.prediction_spool import SPOOL_ENV, PredictionSpool, Scored, spool_metrics
from shipway.serving.protocol import (
    CALLER_HEADER,
    CONTRIBUTIONS_OUTPUT,
    FAULT_MESSAGE,
    PINNED_HEADER,
    SCORE_BUCKETS,
    InjectedFault,
    check_request_depth,
    ignores_extra_inputs,
    mirrored,
    own_version_inputs,
    parse_infer_request,
    parse_row_keys,
    wants_contributions,
)
from shipway.serving.server_errors import ServerErrors
from shipway.serving.trees import Scorer
from shipway.stats.attribution import AttributionWindow
from shipway.stats.drift import DriftRules, DriftWindow, ReferenceProfile

# Rows waiting to be binned: bounded, so a scrape that never comes cannot grow memory.
_PENDING_BATCHES = 10_000


class _Taps(Collector):
    """Rows and scores queued by requests, folded into drift (where `judges_drift`) and score
    metrics at scrape. The score histogram, which a rollout compares between versions, holds
    the requests the weights chose (and mirrored ones), not those a caller pinned here."""

    def __init__(
        self,
        model: str,
        version: str,
        reference: ReferenceProfile,
        rules: DriftRules,
        judges_drift: bool,
        booster: xgb.Booster,
    ):
        self.labels = [model, version]
        self.drift = DriftWindow(reference, rules) if judges_drift else None
        self.booster = booster
        self.attribution = (
            AttributionWindow(
                reference.feature_names,
                reference.attributions,
                rules.attribution_share_change,
                rules.window_seconds,
                rules.min_rows,
                rules.max_rows,
            )
            if judges_drift
            and reference.attributions is not None
            and rules.attribution_share_change is not None
            else None
        )
        self._sample = np.random.default_rng(0)
        self.pending: deque[tuple[float, np.ndarray, np.ndarray, bool]] = deque(
            maxlen=_PENDING_BATCHES
        )
        self.buckets = np.zeros(len(SCORE_BUCKETS) + 1, dtype=np.int64)
        self.rows_scored = 0
        self.score_sum = 0.0
        self.spool: PredictionSpool | None = None

    def _drain(self) -> None:
        served: list[np.ndarray] = []
        latest = 0.0
        while self.pending:
            at, rows, scores, pinned = self.pending.popleft()
            self.rows_scored += len(rows)
            if self.drift is not None:
                self.drift.add(rows, scores, at)
                served.append(rows)
                latest = max(latest, at)
            if pinned:
                continue
            self.buckets += np.bincount(
                np.searchsorted(SCORE_BUCKETS, scores, side="left"), minlength=len(self.buckets)
            )
            self.score_sum += float(scores.sum())
        if self.attribution is not None and served:
            self._explain(np.concatenate(served), latest)

    def _explain(self, rows: np.ndarray, at: float) -> None:
        rows = sample(rows, self._sample, ATTRIBUTION_ROWS_PER_SCRAPE)
        assert self.attribution is not None
        self.attribution.add(rows, contributions(self.booster, rows)[:, :-1], at)

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily | CounterMetricFamily]:
        self._drain()
        if self.spool is not None:
            yield from spool_metrics(self.spool, self.labels)
        if self.drift is not None:
            yield from _drift_families(self.drift, self.labels)
        if self.attribution is not None:
            yield from _attribution_families(self.attribution, self.labels)
        yield from _cost_of_serving(self.labels, self.rows_scored)
        cumulative = np.cumsum(self.buckets)
        scores = HistogramMetricFamily(
            "shipway_prediction_score",
            "Distribution of predicted scores",
            labels=["model", "version"],
        )
        scores.add_metric(
            self.labels,
            [(str(b), float(c)) for b, c in zip(SCORE_BUCKETS, cumulative[:-1], strict=True)]
            + [("+Inf", float(cumulative[-1]))],
            sum_value=self.score_sum,
        )
        yield scores


def _drift_families(window: DriftWindow, labels: list[str]) -> Iterator[GaugeMetricFamily]:
    names = ["model", "version"]
    families = {
        kind: (
            GaugeMetricFamily(f"shipway_{kind}_psi", f"{what}: PSI", labels=[*names, *extra]),
            GaugeMetricFamily(
                f"shipway_{kind}_pvalue",
                f"{what}: p-value of its test (KS or chi²)",
                labels=[*names, *extra, "test"],
            ),
            GaugeMetricFamily(
                f"shipway_{kind}ed",
                f"{what}: 1 when PSI and p-value both pass the drift policy",
                labels=[*names, *extra],
            ),
        )
        for kind, what, extra in (
            ("feature_drift", "Live window against the training reference", ["feature"]),
            ("prediction_drift", "Live scores against the training scores", []),
        )
    }
    for item in window.drift():
        score = item.name == SCORE
        psi, pvalue, drifted = families["prediction_drift" if score else "feature_drift"]
        of = labels if score else [*labels, item.name]
        psi.add_metric(of, item.psi)
        pvalue.add_metric([*of, item.test], item.p_value)
        drifted.add_metric(of, float(item.drifted))
    samples = GaugeMetricFamily(
        "shipway_drift_window_samples",
        "Rows in the live drift window (its time span, at most drift_window rows)",
        labels=names,
    )
    samples.add_metric(labels, window.samples)
    for family in families.values():
        yield from family
    yield samples


def _cost_of_serving(labels: list[str], rows: int) -> Iterator[CounterMetricFamily]:
    scored = CounterMetricFamily(
        "shipway_predictions",
        "Rows this model server scored (pinned and mirrored requests included)",
        labels=["model", "version"],
    )
    scored.add_metric(labels, float(rows))
    cpu = CounterMetricFamily(
        "shipway_process_cpu_seconds",
        "CPU time (user and system) of this model server process: the cost of serving",
        labels=["model", "version"],
    )
    cpu.add_metric(labels, time.process_time())
    yield from (scored, cpu)


def _attribution_families(
    window: AttributionWindow, labels: list[str]
) -> Iterator[GaugeMetricFamily]:
    names = ["model", "version", "feature"]
    share = GaugeMetricFamily(
        "shipway_attribution_share",
        "Live window: the feature's share of the model's mean |SHAP contribution|",
        labels=names,
    )
    change = GaugeMetricFamily(
        "shipway_attribution_share_change",
        "Live share of attribution minus the training share of the window's rows",
        labels=names,
    )
    drifted = GaugeMetricFamily(
        "shipway_attribution_drifted",
        "1 when the feature's share of attribution moved past the drift policy's limit",
        labels=names,
    )
    for item in window.drift():
        of = [*labels, item.name]
        share.add_metric(of, item.share)
        change.add_metric(of, item.change)
        drifted.add_metric(of, float(item.drifted))
    samples = GaugeMetricFamily(
        "shipway_attribution_window_samples",
        "Rows explained in the live attribution window",
        labels=["model", "version"],
    )
    samples.add_metric(labels, window.samples)
    yield from (share, change, drifted, samples)


class ShipwayModel(MLModel):
    """`implementation` of every Shipway bundle's `model-settings.json`."""

    async def load(self) -> bool:
        parameters = self.settings.parameters
        extra: dict[str, Any] = parameters.extra or {}
        model_file = Path(await get_model_uri(self.settings))
        self._booster = xgb.Booster()
        self._booster.load_model(str(model_file))
        # A request holds a few rows: OpenMP threads cost more to wake than they save, and
        # they spin on the cores Envoy and the other versions need.
        self._booster.set_param({"nthread": 1})
        self._score = Scorer(self._booster)
        report = logger.info if self._score.trees is not None else logger.warning
        report("%s v%s scores with the %s", self.name, self.version, self._score.why)
        reference = ReferenceProfile.load(model_file.parent / str(extra["reference"]))
        self._features = reference.feature_names
        self._feature_version = extra.get("feature_version")
        rules = DriftRules.from_dict(extra["drift"])
        judges_drift = os.environ.get(REPLICA_ENV, "0") == "0"
        self._taps = _Taps(
            self.name, str(self.version), reference, rules, judges_drift, self._booster
        )
        spool = os.environ.get(SPOOL_ENV)
        self._spool = (
            PredictionSpool(
                Path(spool),
                self.name,
                str(self.version),
                self._features,
                feature_version=self._feature_version or "",
            )
            if spool
            else None
        )
        self._taps.spool = self._spool
        REGISTRY.register(self._taps)
        self._errors = ServerErrors(self.name, str(self.version))
        REGISTRY.register(self._errors)
        self._fault = InjectedFault(extra)
        return True

    async def unload(self) -> bool:
        REGISTRY.unregister(self._taps)
        REGISTRY.unregister(self._errors)
        if self._spool is not None:
            self._spool.close()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        headers = (payload.parameters.headers if payload.parameters else None) or {}
        with self._errors.watch(headers, (InferenceError,)):
            return await self._predict(payload, headers)

    async def _predict(
        self, payload: InferenceRequest, headers: dict[str, Any]
    ) -> InferenceResponse:
        body = {
            "inputs": [
                {"name": i.name, "shape": i.shape, "data": i.data.root} for i in payload.inputs
            ]
        }
        # The request's own parameters (`row_keys`) are pydantic extras; read, not dumped.
        parameters = payload.parameters
        try:
            extra = parameters.model_extra if parameters else None
            check_request_depth([i["data"] for i in body["inputs"]], extra)
            body["inputs"] = own_version_inputs(body["inputs"], self._feature_version)
            rows = parse_infer_request(body, self._features, ignores_extra_inputs(extra))
            row_keys = parse_row_keys(extra, len(rows))
            explain = wants_contributions(extra)
        except BadRequest as exc:
            raise InferenceError(str(exc)) from None
        if await self._fault.strikes():
            raise MLServerError(FAULT_MESSAGE, 500)
        scores = self._score(rows)
        self._taps.pending.append((time.time(), rows, scores, headers.get(PINNED_HEADER) == "1"))
        if self._spool is not None:
            self._spool.add(
                Scored(
                    request_id=payload.id or headers.get("x-request-id") or uuid.uuid4().hex,
                    at=time.time(),
                    served=not mirrored(headers),
                    rows=rows,
                    scores=scores,
                    row_keys=row_keys,
                    caller=str(headers.get(CALLER_HEADER, "")),
                )
            )
        outputs = [
            ResponseOutput(name=SCORE, shape=[len(scores)], datatype="FP64", data=scores.tolist())
        ]
        if explain:
            found = contributions(self._booster, rows)
            outputs.append(
                ResponseOutput(
                    name=CONTRIBUTIONS_OUTPUT,
                    shape=list(found.shape),
                    datatype="FP64",
                    data=found.ravel().tolist(),
                    parameters=Parameters(columns=[*self._features, BIAS]),
                )
            )
        return InferenceResponse(
            model_name=self.name, model_version=self.version, id=payload.id, outputs=outputs
        )
