"""Prometheus alerting rules per model, generated from its declaration, with a `promtool
test rules` case for each.

`deploy/prometheus/rules/shipway.yml` holds only recording rules, the same for every model;
every threshold lives in a model's `model.yaml` and reaches Prometheus through the files
written here (`deploy/prometheus/rules/<model>.yml` and
`deploy/prometheus/tests/<model>_rules_test.yml`, by `shipway render alerts`). A test renders
them again and compares, so a policy change shows in review as a rule change, and runs promtool
on every case.

| alert | fires when | limit from |
| --- | --- | --- |
| `ShipwayFeatureDrift` | the runtime judged a version's feature drifted | `drift` (per feature) |
| `ShipwayPredictionDrift` | the runtime judged a version's scores drifted | `drift` (`score`) |
| `ShipwayAttributionDrift` | a feature's attribution share moved | `drift` (`attribution_*`) |
| `ShipwayErrorRate` | a version's 5xx share passes 1 - min success | `rollout.checks` |
| `ShipwayLatencyP99` | a version's p99 passes it | `monitoring.alerts` |
| `ShipwayLiveQuality` | live quality, on enough labels, breaks it | `monitoring.quality` |
| `ShipwayNoTraffic` | no request for a while | `monitoring.alerts` |
| `ShipwayPredictionLogStale` | traffic, but no prediction logged | `monitoring.alerts` |

Per online feature view (`rules/features.yml`, from `feature_repo/`):

| alert | fires when | limit from |
| --- | --- | --- |
| `ShipwayOnlineStoreBehind` | online rows lag the view's Delta table | `max_online_lag_hours` |
| `ShipwayFeaturesExpired` | the newest online row is older than the ttl | the view's `ttl` |
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from shipway.features.service import FreshnessRule
from shipway.models.declaration import ModelDeclaration, QualityRule

RULES_DIR = Path("rules")
TESTS_DIR = Path("tests")
HEADER = "# Generated from {source} by `shipway render alerts`: edit the declaration, not this.\n"


def _alert(
    name: str,
    expr: str,
    minutes: int,
    summary: str,
    severity: str,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": f"{minutes}m",
        "labels": {"severity": severity, **(extra or {})},
        "annotations": {"summary": summary},
    }


def rules(declaration: ModelDeclaration) -> dict[str, Any]:
    m = declaration.name
    sel = f'model="{m}"'
    alerts = declaration.monitoring.alerts
    wait = alerts.for_minutes
    who = "{{ $labels.model }} v{{ $labels.version }}"
    value = '{{ $value | printf "%.3g" }}'
    max_errors = round(1.0 - declaration.rollout.checks.min_success_rate, 6)
    found = [
        # The runtime applies the drift policy per feature (PSI and p-value, on a time window
        # with a minimum count); the alert carries the PSI as its value.
        _alert(
            "ShipwayFeatureDrift",
            f"shipway_feature_drift_psi{{{sel}}} and on (model, version, feature) "
            f"(shipway_feature_drifted{{{sel}}} == 1)",
            wait,
            f"{who}: feature {{{{ $labels.feature }}}} drifted, PSI {value}",
            "warning",
        ),
        _alert(
            "ShipwayPredictionDrift",
            f"shipway_prediction_drift_psi{{{sel}}} and on (model, version) "
            f"(shipway_prediction_drifted{{{sel}}} == 1)",
            wait,
            f"{who}: scores drifted from the training scores, PSI {value}",
            "warning",
        ),
    ]
    if declaration.drift.attribution_share_change is not None:
        found.append(
            _alert(
                "ShipwayAttributionDrift",
                f"shipway_attribution_share_change{{{sel}}} and on (model, version, feature) "
                f"(shipway_attribution_drifted{{{sel}}} == 1)",
                wait,
                f"{who}: the model leans on {{{{ $labels.feature }}}} differently from training, "
                f"its share of attribution moved by {value}",
                "warning",
            )
        )
    found += [
        _alert(
            "ShipwayErrorRate",
            f"shipway:request_error_ratio:rate1m{{{sel}}} > {max_errors}",
            wait,
            f"{who}: {value} of requests fail with 5xx (limit {max_errors})",
            "critical",
        ),
        _alert(
            "ShipwayLatencyP99",
            f"shipway:request_duration_seconds:p99_1m{{{sel}}} > {alerts.latency_p99_ms / 1000}",
            wait,
            f"{who}: p99 {value}s > {alerts.latency_p99_ms / 1000}s",
            "warning",
        ),
    ]
    labelled = (
        f"on (model, version) shipway_live_labelled_predictions{{{sel}}} "
        f">= {declaration.monitoring.min_labelled}"
    )
    for rule in declaration.monitoring.quality:
        metric = f'shipway_live_quality{{{sel},metric="{rule.metric}"}}'
        for op, limit in (("<", rule.min), (">", rule.max)):
            if limit is None:
                continue
            found.append(
                _alert(
                    "ShipwayLiveQuality",
                    f"{metric} {op} {limit} and {labelled}",
                    0,
                    f"{who}: live {rule.metric} {value} {op} {limit}",
                    "critical",
                    {"metric": rule.metric},
                )
            )
    idle = alerts.no_traffic_minutes
    found.append(
        _alert(
            "ShipwayNoTraffic",
            f"sum by (model) (increase(envoy_cluster_upstream_rq_total{{{sel}}}[{idle}m])) == 0 "
            f"or absent(envoy_cluster_upstream_rq_total{{{sel}}})",
            idle,
            f"{{{{ $labels.model }}}}: no request in {idle} minutes",
            "warning",
        )
    )
    stale = alerts.prediction_log_stale_minutes
    found.append(
        _alert(
            "ShipwayPredictionLogStale",
            f"time() - shipway_prediction_log_last_write_timestamp_seconds{{{sel}}} > "
            f"{stale * 60} and on (model) sum by (model) "
            f"(rate(envoy_cluster_upstream_rq_total{{{sel}}}[5m])) > 0",
            wait,
            f"{{{{ $labels.model }}}}: prediction log not written for {value}s while serving",
            "warning",
        )
    )
    return {"groups": [{"name": f"{m}_alerts", "rules": found}]}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{text}}}", "values": values}


def rule_tests(declaration: ModelDeclaration) -> dict[str, Any]:
    """One case per alert: input series that break its limit (on version 1) and keep within
    it (version 2), and the alert expected for version 1 only, after its `for`."""
    m = declaration.name
    alerts = declaration.monitoring.alerts
    wait = alerts.for_minutes
    psi = declaration.drift.psi_threshold
    cluster = {"envoy_cluster_name": f"{m}__v1", "model": m, "version": "1"}
    quiet = {"envoy_cluster_name": f"{m}__v2", "model": m, "version": "2"}
    v1, v2 = {"model": m, "version": "1"}, {"model": m, "version": "2"}
    # v1's feature f and scores drifted; v2's f has a high PSI the runtime did not judge
    # drift (its p-value passed), and v2's scores are fine.
    f1, f2 = {**v1, "feature": "f"}, {**v2, "feature": "f"}
    series = [
        _series("shipway_feature_drift_psi", f1, f"{psi * 2}x30"),
        _series("shipway_feature_drifted", f1, "1x30"),
        _series("shipway_feature_drift_psi", f2, f"{psi * 2}x30"),
        _series("shipway_feature_drifted", f2, "0x30"),
        _series("shipway_prediction_drift_psi", v1, f"{psi * 3}x30"),
        _series("shipway_prediction_drifted", v1, "1x30"),
        _series("shipway_prediction_drift_psi", v2, f"{psi / 2}x30"),
        _series("shipway_prediction_drifted", v2, "0x30"),
        # v1's feature f leans far more on f than in training; v2's moved within the limit.
        _series("shipway_attribution_share_change", f1, "0.4x30"),
        _series("shipway_attribution_drifted", f1, "1x30"),
        _series("shipway_attribution_share_change", f2, "-0.01x30"),
        _series("shipway_attribution_drifted", f2, "0x30"),
        # v1: 40 requests per minute, 20 of them 5xx; all slower than the limit.
        _series("envoy_cluster_upstream_rq_total", cluster, "0+40x30"),
        _series(
            "envoy_cluster_upstream_rq_xx",
            {**cluster, "envoy_response_code_class": "5"},
            "0+20x30",
        ),
        _series(
            "envoy_cluster_upstream_rq_time_bucket",
            {**cluster, "le": str(alerts.latency_p99_ms * 4)},
            "0x30",
        ),
        _series("envoy_cluster_upstream_rq_time_bucket", {**cluster, "le": "+Inf"}, "0+40x30"),
        # v2: 40 requests per minute, none failed, all fast.
        _series("envoy_cluster_upstream_rq_total", quiet, "0+40x30"),
        _series(
            "envoy_cluster_upstream_rq_xx", {**quiet, "envoy_response_code_class": "5"}, "0x30"
        ),
        _series("envoy_cluster_upstream_rq_time_bucket", {**quiet, "le": "1"}, "0+40x30"),
        _series("envoy_cluster_upstream_rq_time_bucket", {**quiet, "le": "+Inf"}, "0+40x30"),
        # The log was last written at 0s while traffic goes on.
        _series("shipway_prediction_log_last_write_timestamp_seconds", {"model": m}, "0x30"),
    ]
    needed = declaration.monitoring.min_labelled
    for version, labels in (("1", v1), ("2", v2)):
        series.append(_series("shipway_live_labelled_predictions", labels, f"{needed}x30"))
        for rule in declaration.monitoring.quality:
            value = _bad(rule) if version == "1" else _good(rule)
            series.append(
                _series("shipway_live_quality", {**labels, "metric": rule.metric}, f"{value}x30")
            )
    after = f"{wait + 2}m"
    stale_minutes = alerts.prediction_log_stale_minutes + wait + 3
    who = f"{m} v1"
    expected = {
        "ShipwayPredictionDrift": f"{who}: scores drifted from the training scores, PSI "
        f"{psi * 3:.3g}",
        "ShipwayErrorRate": f"{who}: 0.5 of requests fail with 5xx (limit "
        f"{round(1.0 - declaration.rollout.checks.min_success_rate, 6)})",
        "ShipwayLatencyP99": f"{who}: p99 {alerts.latency_p99_ms * 4 / 1000:.3g}s > "
        f"{alerts.latency_p99_ms / 1000}s",
    }
    cases: list[dict[str, Any]] = []
    for alert, summary in expected.items():
        cases.append(
            {
                "eval_time": after,
                "alertname": alert,
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": _severity(alert), **v1},
                        "exp_annotations": {"summary": summary},
                    }
                ],
            }
        )
    cases.append(
        {
            "eval_time": after,
            "alertname": "ShipwayFeatureDrift",
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "warning", **f1},
                    "exp_annotations": {"summary": f"{who}: feature f drifted, PSI {psi * 2:.3g}"},
                }
            ],
        }
    )
    if declaration.drift.attribution_share_change is not None:
        cases.append(
            {
                "eval_time": after,
                "alertname": "ShipwayAttributionDrift",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "warning", **f1},
                        "exp_annotations": {
                            "summary": f"{who}: the model leans on f differently from training, "
                            "its share of attribution moved by 0.4"
                        },
                    }
                ],
            }
        )
    if declaration.monitoring.quality:
        cases.append(
            {
                "eval_time": "1m",
                "alertname": "ShipwayLiveQuality",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "critical", **v1, "metric": rule.metric},
                        "exp_annotations": {"summary": _quality_summary(who, rule)},
                    }
                    for rule in declaration.monitoring.quality
                ],
            }
        )
    cases.append(
        {
            "eval_time": f"{stale_minutes}m",
            "alertname": "ShipwayPredictionLogStale",
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "warning", "model": m},
                    "exp_annotations": {
                        "summary": f"{m}: prediction log not written for "
                        f"{stale_minutes * 60:.3g}s while serving"
                    },
                }
            ],
        }
    )
    cases.append(
        {"eval_time": f"{stale_minutes}m", "alertname": "ShipwayNoTraffic", "exp_alerts": []}
    )
    traffic_case = {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": cases,
    }
    idle = alerts.no_traffic_minutes
    silent_case = {
        "interval": "1m",
        # The model served 10 requests, then none: it alerts after the idle window and `for`.
        "input_series": [
            _series("envoy_cluster_upstream_rq_total", cluster, "0 10 10x60"),
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "ShipwayNoTraffic", "exp_alerts": []},
            {
                "eval_time": f"{2 * idle + 2}m",
                "alertname": "ShipwayNoTraffic",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "warning", "model": m},
                        "exp_annotations": {"summary": f"{m}: no request in {idle} minutes"},
                    }
                ],
            },
        ],
    }
    return {
        "rule_files": ["../rules/shipway.yml", f"../rules/{m}.yml"],
        "evaluation_interval": "1m",
        "tests": [traffic_case, silent_case],
    }


def _bad(rule: QualityRule) -> float:
    """A live value that breaks `rule` (the tests' version 1)."""
    return rule.min - 0.05 if rule.min is not None else (rule.max or 0.0) * 2


def _good(rule: QualityRule) -> float:
    return rule.min + 0.05 if rule.min is not None else (rule.max or 0.0) / 2


def _quality_summary(who: str, rule: QualityRule) -> str:
    op, limit = ("<", rule.min) if rule.min is not None else (">", rule.max)
    return f"{who}: live {rule.metric} {_bad(rule):.3g} {op} {limit}"


def _severity(alert: str) -> str:
    return "critical" if alert == "ShipwayErrorRate" else "warning"


def render(declaration: ModelDeclaration, source: str) -> dict[Path, str]:
    """The rule file and its test file, relative to `deploy/prometheus/`."""
    name = declaration.name
    return {
        RULES_DIR / f"{name}.yml": _text(source, rules(declaration)),
        TESTS_DIR / f"{name}_rules_test.yml": _text(source, rule_tests(declaration)),
    }


def _text(source: str, content: dict[str, Any]) -> str:
    # Unwrapped: a PromQL expression stays on one line.
    return HEADER.format(source=source) + yaml.safe_dump(content, sort_keys=False, width=1000)


def write(declaration: ModelDeclaration, source: str, prometheus_dir: Path) -> list[Path]:
    return write_files(render(declaration, source), prometheus_dir)


FEATURES = "features"


def feature_rules(freshness: Sequence[FreshnessRule]) -> dict[str, Any]:
    """Per online feature view: the online store behind its Delta table, or older than the ttl
    (its rows then no longer count, so every lookup gets defaults)."""
    found = []
    for rule in freshness:
        sel = f'feature_view="{rule.view}"'
        found.append(
            _alert(
                "ShipwayOnlineStoreBehind",
                f"shipway_feature_online_lag_seconds{{{sel}}} > {rule.max_lag_hours * 3600:g}",
                10,
                f"{rule.view}: the online store is {{{{ $value | humanizeDuration }}}} behind its "
                f"Delta table (limit {rule.max_lag_hours:g}h): materialize online_store",
                "warning",
            )
        )
        if rule.ttl_hours:
            found.append(
                _alert(
                    "ShipwayFeaturesExpired",
                    f"shipway_feature_freshness_seconds{{{sel}}} > {rule.ttl_hours * 3600:g}",
                    10,
                    f"{rule.view}: the newest online row is {{{{ $value | humanizeDuration }}}} "
                    f"old, past the view's ttl of {rule.ttl_hours:g}h: lookups get defaults",
                    "critical",
                )
            )
    return {"groups": [{"name": "shipway-features", "rules": found}]}


def feature_rule_tests(freshness: Sequence[FreshnessRule]) -> dict[str, Any]:
    """Each view behind and expired, beside a fresh one: only the stale views alert."""
    fresh = {"feature_view": "fresh"}
    series = [
        _series("shipway_feature_online_lag_seconds", fresh, "0x30"),
        _series("shipway_feature_freshness_seconds", fresh, "60x30"),
    ]
    behind: list[dict[str, Any]] = []
    expired: list[dict[str, Any]] = []
    for rule in freshness:
        view = {"feature_view": rule.view}
        lag = rule.max_lag_hours * 3600 * 2
        series.append(_series("shipway_feature_online_lag_seconds", view, f"{lag:g}x30"))
        behind.append(
            {
                "exp_labels": {"severity": "warning", **view},
                "exp_annotations": {
                    "summary": f"{rule.view}: the online store is {_duration(lag)} behind its "
                    f"Delta table (limit {rule.max_lag_hours:g}h): materialize online_store"
                },
            }
        )
        if rule.ttl_hours:
            old = rule.ttl_hours * 3600 * 1.5
            series.append(_series("shipway_feature_freshness_seconds", view, f"{old:g}x30"))
            expired.append(
                {
                    "exp_labels": {"severity": "critical", **view},
                    "exp_annotations": {
                        "summary": f"{rule.view}: the newest online row is {_duration(old)} "
                        f"old, past the view's ttl of {rule.ttl_hours:g}h: lookups get defaults"
                    },
                }
            )
    cases = [
        {"eval_time": "12m", "alertname": "ShipwayOnlineStoreBehind", "exp_alerts": behind},
        {"eval_time": "12m", "alertname": "ShipwayFeaturesExpired", "exp_alerts": expired},
    ]
    return {
        "rule_files": [f"../rules/{FEATURES}.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": cases}],
    }


def _duration(seconds: float) -> str:
    """Prometheus' `humanizeDuration` of whole seconds: every unit from the largest on."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next((i for i, (n, _) in enumerate(units) if n), len(units) - 1)
    return " ".join(f"{n}{unit}" for n, unit in units[first:])


def render_features(freshness: Sequence[FreshnessRule], source: str) -> dict[Path, str]:
    """The feature views' rule file and its test file, relative to `deploy/prometheus/`."""
    return {
        RULES_DIR / f"{FEATURES}.yml": _text(source, feature_rules(freshness)),
        TESTS_DIR / f"{FEATURES}_rules_test.yml": _text(source, feature_rule_tests(freshness)),
    }


def write_files(rendered: dict[Path, str], prometheus_dir: Path) -> list[Path]:
    written = []
    for relative, text in rendered.items():
        path = prometheus_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
