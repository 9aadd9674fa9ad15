"""The retraining decision: live drift in Prometheus against the model's drift policy.

Pure logic over a Prometheus client, so the Dagster sensor stays a thin adapter and the
decision is tested against a real Prometheus without Dagster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from shipway.models.declaration import DriftPolicy
from shipway.monitoring.prometheus import PrometheusClient


@dataclass(frozen=True)
class DriftDecision:
    retrain: bool
    reason: str
    run_key: str | None = None
    cursor: str | None = None
    drifted: dict[str, float] = field(default_factory=dict)


def drift_queries(model: str) -> tuple[str, str]:
    return (
        f'shipway_feature_drift_psi{{model="{model}"}}',
        f'shipway_drift_window_samples{{model="{model}"}}',
    )


def decide(
    client: PrometheusClient,
    model: str,
    policy: DriftPolicy,
    cursor: str | None,
    now: float,
) -> DriftDecision:
    """Retrain when any feature's PSI on a full enough window passes the policy threshold."""
    last_fired = float(json.loads(cursor)["last_fired"]) if cursor else None
    cooldown = policy.cooldown_minutes * 60.0
    if last_fired is not None and now - last_fired < cooldown:
        left = cooldown - (now - last_fired)
        return DriftDecision(False, f"in cooldown after the last retrain: {left:.0f}s left")
    psi_query, samples_query = drift_queries(model)
    samples = {s.labels.get("version", "?"): s.value for s in client.query(samples_query)}
    ready = {v for v, n in samples.items() if n >= policy.min_window_samples}
    if not ready:
        return DriftDecision(
            False,
            f"not enough live traffic for {model}: window samples {samples or 'none'} "
            f"< {policy.min_window_samples} required",
        )
    psi = {
        f"v{s.labels['version']}:{s.labels['feature']}": s.value
        for s in client.query(psi_query)
        if s.labels.get("version") in ready
    }
    drifted = {k: v for k, v in psi.items() if v > policy.psi_threshold}
    if not drifted:
        worst = max(psi.items(), key=lambda kv: kv[1], default=("none", 0.0))
        return DriftDecision(
            False,
            f"no drift for {model}: max PSI {worst[1]:.3f} ({worst[0]}) "
            f"<= threshold {policy.psi_threshold}",
        )
    versions = "-".join(sorted({k.split(":")[0] for k in drifted}))
    # One run per drifting version per cooldown window, even if the cursor was lost.
    bucket = int(now // max(cooldown, 1.0))
    top = dict(sorted(drifted.items(), key=lambda kv: -kv[1])[:5])
    return DriftDecision(
        True,
        f"drift on {model}: {len(drifted)} feature(s) over PSI {policy.psi_threshold}: "
        + ", ".join(f"{k}={v:.3f}" for k, v in top.items()),
        run_key=f"{model}-drift-{versions}-{bucket}",
        cursor=json.dumps({"last_fired": now}),
        drifted=top,
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
