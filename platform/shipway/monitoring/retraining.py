"""The retraining decisions: live drift, and live quality, in Prometheus against the model's
policies.

Pure logic over a Prometheus client, so the Dagster sensor stays a thin adapter and the
decision is tested against a real Prometheus without Dagster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from shipway.models.declaration import DriftPolicy, MonitoringPolicy
from shipway.monitoring.prometheus import PrometheusClient


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    run_key: str | None = None
    cursor: str | None = None
    drifted: dict[str, float] = field(default_factory=dict)


def _cooldown(cursor: str | None, minutes: float, now: float) -> RetrainDecision | None:
    """No retrain while the last one a sensor requested (its cursor) is this recent."""
    last_fired = float(json.loads(cursor)["last_fired"]) if cursor else None
    cooldown = minutes * 60.0
    if last_fired is not None and now - last_fired < cooldown:
        left = cooldown - (now - last_fired)
        return RetrainDecision(False, f"in cooldown after the last retrain: {left:.0f}s left")
    return None


DRIFTED = ("shipway_feature_drifted", "shipway_prediction_drifted")


def drift_queries(model: str) -> tuple[str, str, str]:
    """What the runtime decided per version and feature, the PSI behind it, the window size.

    Embedded, one replica per version judges drift; on Seldon every pod of a `Model` judges
    its own share: per version and feature, a pod that saw drift counts, windows add up."""
    m = f'{{model="{model}"}}'
    return (
        f"max by (model, version, feature) ({DRIFTED[0]}{m}) or "
        f"max by (model, version) ({DRIFTED[1]}{m})",
        f"max by (model, version, feature) (shipway_feature_drift_psi{m}) or "
        f"max by (model, version) (shipway_prediction_drift_psi{m})",
        f"sum by (model, version) (shipway_drift_window_samples{m})",
    )


def _drift_key(labels: dict[str, str]) -> str:
    return f"v{labels.get('version', '?')}:{labels.get('feature', 'score')}"


def decide(
    client: PrometheusClient,
    model: str,
    policy: DriftPolicy,
    cursor: str | None,
    now: float,
) -> RetrainDecision:
    """Retrain when the runtime judged a feature (or the score) of a version drifted.

    The runtime applies the policy per feature on each version's time window and exports no
    drift series for a window under `min_window_samples`, so a version without traffic drops
    out of this decision once its rows age out.
    """
    cooling = _cooldown(cursor, policy.cooldown_minutes, now)
    if cooling is not None:
        return cooling
    cooldown = policy.cooldown_minutes * 60.0
    drifted_query, psi_query, samples_query = drift_queries(model)
    samples = {s.labels.get("version", "?"): s.value for s in client.query(samples_query)}
    judged = client.query(drifted_query)
    if not judged:
        return RetrainDecision(
            False,
            f"not enough live traffic for {model}: window samples {samples or 'none'} "
            f"< {policy.min_window_samples} required in {policy.window_minutes:g} min",
        )
    psi = {_drift_key(s.labels): s.value for s in client.query(psi_query)}
    flagged = [_drift_key(s.labels) for s in judged if s.value >= 1]
    drifted = {key: psi.get(key, float("nan")) for key in flagged}
    if not drifted:
        worst = max(psi.items(), key=lambda kv: kv[1], default=("none", 0.0))
        return RetrainDecision(
            False,
            f"no drift for {model}: no feature past its PSI and p-value limits "
            f"(max PSI {worst[1]:.3f}, {worst[0]})",
        )
    versions = "-".join(sorted({k.split(":")[0] for k in drifted}))
    # One run per drifting version per cooldown window, even if the cursor was lost.
    bucket = int(now // max(cooldown, 1.0))
    top = dict(sorted(drifted.items(), key=lambda kv: -kv[1])[:5])
    return RetrainDecision(
        True,
        f"drift on {model}: {len(drifted)} drifted (PSI and p-value past the policy): "
        + ", ".join(f"{k} PSI {v:.3f}" for k, v in top.items()),
        run_key=f"{model}-drift-{versions}-{bucket}",
        cursor=json.dumps({"last_fired": now}),
        drifted=top,
    )


def quality_queries(model: str) -> tuple[str, str]:
    return (
        f'shipway_live_quality{{model="{model}"}}',
        f'shipway_live_labelled_predictions{{model="{model}"}}',
    )


def estimated_quality_query(model: str) -> str:
    return f'shipway_estimated_quality{{model="{model}"}}'


def decide_quality(
    client: PrometheusClient,
    model: str,
    policy: MonitoringPolicy,
    champion: str | None,
    cursor: str | None,
    now: float,
) -> RetrainDecision:
    """Retrain when the champion's live quality, on enough labelled predictions, breaks a
    limit of the policy; with `act_on_estimate`, its estimated quality while labels are
    pending."""
    if not policy.quality:
        return RetrainDecision(False, f"{model} declares no live quality limits")
    if champion is None:
        return RetrainDecision(False, f"{model} has no champion to judge")
    cooling = _cooldown(cursor, policy.cooldown_minutes, now)
    if cooling is not None:
        return cooling
    cooldown = policy.cooldown_minutes * 60.0
    quality_query, labelled_query = quality_queries(model)
    labelled = {
        s.labels.get("version"): s.value
        for s in client.query(labelled_query)
        if s.labels.get("version") == champion
    }
    kind = "live"
    if labelled.get(champion, 0.0) < policy.min_labelled:
        waiting = (
            f"v{champion} has {labelled.get(champion, 0):.0f} labelled predictions in its "
            f"window < {policy.min_labelled} required"
        )
        if not policy.act_on_estimate:
            return RetrainDecision(False, f"waiting for labels: {waiting}")
        quality_query, kind = estimated_quality_query(model), "estimated"
    observed = {
        s.labels.get("metric", ""): s.value
        for s in client.query(quality_query)
        if s.labels.get("version") == champion
    }
    breaches = []
    for rule in policy.quality:
        value = observed.get(rule.metric)
        if value is None:
            continue
        if rule.min is not None and value < rule.min:
            breaches.append(f"{rule.metric} {value:.4f} < min {rule.min}")
        if rule.max is not None and value > rule.max:
            breaches.append(f"{rule.metric} {value:.4f} > max {rule.max}")
    seen = ", ".join(f"{m}={v:.4f}" for m, v in sorted(observed.items()))
    if kind == "estimated" and not observed:
        return RetrainDecision(
            False, f"waiting for labels: no estimated quality of v{champion} yet ({waiting})"
        )
    if not breaches:
        return RetrainDecision(False, f"v{champion} {kind} quality within policy: {seen}")
    bucket = int(now // max(cooldown, 1.0))
    return RetrainDecision(
        True,
        f"{kind} quality of {model} v{champion} below policy: " + "; ".join(breaches),
        run_key=f"{model}-quality-v{champion}-{bucket}",
        cursor=json.dumps({"last_fired": now}),
    )


def waiting_for_labels(
    label_cutoff: datetime | None, newest_event: datetime | None, maturity_days: int
) -> str | None:
    """Why a retrain now would learn nothing new, or None when it would.

    The last training set took every label matured by its `label_cutoff` (the newest event it
    saw, less the maturity). Unless events after that cutoff have landed, rebuilding it gives
    the same rows, so retraining gives the same model (or the one just rolled back)."""
    if label_cutoff is None or newest_event is None or newest_event > label_cutoff:
        return None
    return (
        f"waiting for labels until events after {label_cutoff:%Y-%m-%d %H:%M} land: the last "
        f"training set already has every label matured by then (labels mature {maturity_days} "
        f"days after their event; newest landed event {newest_event:%Y-%m-%d %H:%M})"
    )
