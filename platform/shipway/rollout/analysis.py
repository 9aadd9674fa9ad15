"""One analysis interval of a rollout: what Prometheus saw of the challenger and the champion.

Requests, server errors and latency are the data plane's (Envoy's per-version cluster
statistics); scores are the model servers' own. Each query covers the interval just ended.
Live quality is `<model>_live_quality`'s (the challenger's predictions joined with labels as
they land), judged against the monitoring policy's limits once it rests on enough labels; a
rollout of minutes rarely sees them for a model whose labels take weeks, and is then judged
without it, or, where the policy says `act_on_estimate`, on its estimated quality
(`shipway_estimated_quality`, checks named `estimated_<metric>`).

Latency is compared at p99, or, when the challenger answered too few requests for a p99, at the
highest quantile with `TAIL_REQUESTS` of them above it, for both versions alike: at a 10% step a
challenger may answer 50 requests, whose "p99" is their slowest one, while the champion's p99
rests on 450; that compared one request's hiccup with a tail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shipway.models.declaration import MonitoringPolicy, QualityRule, RolloutChecks
from shipway.monitoring.prometheus import PrometheusClient
from shipway.serving.server_errors import GRPC_ERRORS_METRIC

TAIL_REQUESTS = 5


@dataclass(frozen=True)
class Analysis:
    requests: float
    success_rate: float | None
    latency_p99_ms: float | None
    champion_latency_p99_ms: float | None
    score_mean: float | None
    champion_score_mean: float | None
    champion_requests: float | None = None
    """Requests the champion answered in the interval; None: not measured."""
    latency_quantile: float = 0.99
    """The quantile both latencies are taken at (`latency_quantile`)."""
    quality: tuple[Check, ...] = field(default_factory=tuple)
    """The challenger's live quality against the monitoring limits, when it has the labels."""
    guard_block_rate: float | None = None
    """An LLM application's share of questions its guards refused or withheld; None: none."""
    tokens_per_answer: float | None = None
    champion_tokens_per_answer: float | None = None

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = asdict(self)
        values.pop("quality")
        values.update({c.name: c.observed for c in self.quality})
        return values


@dataclass(frozen=True)
class Check:
    name: str
    observed: float | None
    limit: float
    passed: bool

    def line(self) -> str:
        seen = "no data" if self.observed is None else f"{self.observed:.4g}"
        return f"{self.name} {seen} (limit {self.limit:g}) {'ok' if self.passed else 'FAILED'}"


def latency_quantile(requests: float) -> float:
    """0.99, or lower so that `TAIL_REQUESTS` of `requests` lie above it (never under 0.5)."""
    if requests <= 0:
        return 0.99
    return round(max(0.5, min(0.99, 1.0 - TAIL_REQUESTS / requests)), 3)


def quality_check(rule: QualityRule, value: float, kind: str = "live") -> Check:
    """`live_<metric>` (or `estimated_<metric>`, before labels) against a monitoring.quality
    rule."""
    limit = rule.min if rule.min is not None else rule.max
    return Check(f"{kind}_{rule.metric}", value, float(limit or 0.0), rule.allows(value))


def live_quality_checks(
    prometheus: PrometheusClient, selector: str, monitoring: MonitoringPolicy
) -> tuple[Check, ...]:
    """The version's (`selector`) live quality against the policy once it rests on enough
    labels; before, its estimated quality if the policy acts on it, else nothing."""
    if not monitoring.quality:
        return ()
    labelled = _one(prometheus, f"shipway_live_labelled_predictions{{{selector}}}")
    series, kind = "shipway_live_quality", "live"
    if labelled is None or labelled < monitoring.min_labelled:
        if not monitoring.act_on_estimate:
            return ()
        series, kind = "shipway_estimated_quality", "estimated"
    values = {s.labels.get("metric"): s.value for s in prometheus.query(f"{series}{{{selector}}}")}
    return tuple(
        quality_check(rule, values[rule.metric], kind)
        for rule in monitoring.quality
        if rule.metric in values
    )


def _one(prometheus: PrometheusClient, promql: str) -> float | None:
    samples = prometheus.query(promql)
    if not samples:
        return None
    value = samples[0].value
    return None if value != value else value  # NaN: no requests in the window


def analyse(
    prometheus: PrometheusClient,
    model: str,
    challenger: str,
    champion: str | None,
    window_seconds: int,
    monitoring: MonitoringPolicy | None = None,
) -> Analysis:
    """The interval's numbers; with `monitoring`, the challenger's live quality too."""
    w = f"{max(window_seconds, 10)}s"

    def of(version: str) -> str:
        # Not `traffic="pinned"`: the requests a caller pinned to a version, which the
        # rollout's weights did not choose (Envoy's own clusters for them).
        return f'model="{model}",version="{version}",traffic!="pinned"'

    c = of(challenger)

    def answered(version: str) -> float:
        query = f"sum(increase(envoy_cluster_upstream_rq_total{{{of(version)}}}[{w}]))"
        return _one(prometheus, query) or 0.0

    requests = answered(challenger)
    # A gRPC call's error travels in its trailers, under HTTP 200, so Envoy counts it as a
    # success: the version's runtime counts its own server errors on gRPC calls the weights
    # chose or mirrored (`shipway.serving.server_errors`); a caller's bad request is not one.
    grpc_errors = f'model="{model}",version="{challenger}"'
    errors = _one(
        prometheus,
        f'(sum(increase(envoy_cluster_upstream_rq_xx{{{c},envoy_response_code_class="5"}}[{w}]))'
        f" or vector(0)) + (sum(increase({GRPC_ERRORS_METRIC}_total{{{grpc_errors}}}[{w}]))"
        " or vector(0))",
    )

    quantile = latency_quantile(requests)

    def p99(version: str) -> float | None:
        return _one(
            prometheus,
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(envoy_cluster_upstream_rq_time_bucket{{{of(version)}}}[{w}])))",
        )

    def mean_score(version: str) -> float | None:
        return _one(
            prometheus,
            f"sum(increase(shipway_prediction_score_sum{{{of(version)}}}[{w}])) / "
            f"sum(increase(shipway_prediction_score_count{{{of(version)}}}[{w}]))",
        )

    def per_answer(metric: str, version: str) -> float | None:
        return _one(
            prometheus,
            f"sum(increase({metric}{{{of(version)}}}[{w}])) / "
            f"sum(increase(shipway_answers_total{{{of(version)}}}[{w}]))",
        )

    total = requests or 0.0
    return Analysis(
        requests=total,
        success_rate=(1.0 - (errors or 0.0) / total) if total > 0 else None,
        latency_p99_ms=p99(challenger),
        champion_latency_p99_ms=p99(champion) if champion else None,
        score_mean=mean_score(challenger),
        champion_score_mean=mean_score(champion) if champion else None,
        champion_requests=answered(champion) if champion else None,
        latency_quantile=quantile,
        quality=live_quality_checks(prometheus, c, monitoring) if monitoring else (),
        guard_block_rate=per_answer("shipway_guard_blocks_total", challenger),
        tokens_per_answer=per_answer("shipway_answer_tokens_total", challenger),
        champion_tokens_per_answer=(
            per_answer("shipway_answer_tokens_total", champion) if champion else None
        ),
    )


def checks(analysis: Analysis, policy: RolloutChecks, min_requests: int = 0) -> list[Check]:
    """Each check of the policy on one interval; one with no data does not pass. A check
    against the champion is judged only on an interval where the champion answered
    `min_requests` too: at 100% it answers none, and a p99 of a few stray requests is noise.
    A champion that answered but whose metric is not in Prometheus yet (Envoy publishes a new
    cluster's histograms at its next stats flush) leaves the check without data, not out."""
    a = analysis
    compared = a.champion_requests is None or a.champion_requests >= min_requests
    answered = a.champion_requests is not None
    found = [
        Check(
            "success_rate",
            a.success_rate,
            policy.min_success_rate,
            a.success_rate is not None and a.success_rate >= policy.min_success_rate,
        )
    ]
    ratio = (
        a.latency_p99_ms / a.champion_latency_p99_ms
        if a.latency_p99_ms is not None and a.champion_latency_p99_ms
        else None
    )
    if compared and (answered or a.champion_latency_p99_ms is not None):
        found.append(
            Check(
                "latency_p99_ratio",
                ratio,
                policy.max_latency_p99_ratio,
                ratio is not None
                and (
                    ratio <= policy.max_latency_p99_ratio
                    or (a.latency_p99_ms or 0.0) <= policy.latency_floor_ms
                ),
            )
        )
    if policy.max_latency_p99_ms is not None:
        found.append(
            Check(
                "latency_p99_ms",
                a.latency_p99_ms,
                policy.max_latency_p99_ms,
                a.latency_p99_ms is not None and a.latency_p99_ms <= policy.max_latency_p99_ms,
            )
        )
    judged_score = answered or a.champion_score_mean is not None
    if compared and policy.max_score_divergence is not None and judged_score:
        divergence = (
            abs(a.score_mean - a.champion_score_mean)
            if a.score_mean is not None and a.champion_score_mean is not None
            else None
        )
        found.append(
            Check(
                "score_divergence",
                divergence,
                policy.max_score_divergence,
                divergence is not None and divergence <= policy.max_score_divergence,
            )
        )
    if policy.max_guard_block_rate is not None:
        found.append(
            Check(
                "guard_block_rate",
                a.guard_block_rate,
                policy.max_guard_block_rate,
                a.guard_block_rate is not None
                and a.guard_block_rate <= policy.max_guard_block_rate,
            )
        )
    if compared and policy.max_tokens_ratio is not None and a.champion_tokens_per_answer:
        tokens = (
            a.tokens_per_answer / a.champion_tokens_per_answer
            if a.tokens_per_answer is not None
            else None
        )
        found.append(
            Check(
                "tokens_ratio",
                tokens,
                policy.max_tokens_ratio,
                tokens is not None and tokens <= policy.max_tokens_ratio,
            )
        )
    if policy.live_quality:
        found.extend(a.quality)
    return found
