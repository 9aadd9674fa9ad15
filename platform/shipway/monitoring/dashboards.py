"""Grafana dashboards as code: one per model, generated from its declaration.

Panels: traffic share per version (and the shadow), the rollout's phase and failed checks,
request rate, server errors, latency p50 / p99 per version, feature drift against the drift
threshold, prediction drift (PSI of the scores) and the mean score per version, live quality
against the quality limits, label coverage and the prediction log's write rate; rollout steps and
phase changes (a retrain's version entering or leaving traffic) as annotations. Every query is plain
PromQL on Shipway's metric names with the model's name filled in, so it runs as it is against
Prometheus (a test does), and the Prometheus data source is a dashboard variable.

`shipway render dashboards` writes `deploy/grafana/<model>.json`, checked against
`deploy/grafana/schema/dashboard.schema.json` (the fields of Grafana's dashboard JSON model
these dashboards use, written for Shipway); `shipway dashboards push` sends them to the Grafana
that `GRAFANA_URL` / `GRAFANA_TOKEN` name, with `grafana-client`.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaException
from niquests.exceptions import RequestException

from shipway.errors import BadRequest, ServiceError, ShipwayError
from shipway.models.declaration import ModelDeclaration
from shipway.paths import DEPLOY_DIR
from shipway.stats.cost import COST_METRIC

GRAFANA_DIR = DEPLOY_DIR / "grafana"
SCHEMA = GRAFANA_DIR / "schema" / "dashboard.schema.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
WIDTH = 12
HEIGHT = 8


def _panel(
    title: str,
    targets: list[tuple[str, str]],
    unit: str,
    description: str,
    thresholds: list[float] | None = None,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": "red", "value": t} for t in thresholds or []]
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": DATASOURCE,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": {"thresholdsStyle": {"mode": "line" if thresholds else "off"}},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
    }


def panels(declaration: ModelDeclaration) -> list[dict[str, Any]]:
    m = f'model="{declaration.name}"'
    buckets = f"envoy_cluster_upstream_rq_time_bucket{{{m}}}"

    def latency(q: str) -> str:
        return f"histogram_quantile({q}, sum by (version, le) (rate({buckets}[1m]))) / 1000"

    quality = declaration.monitoring.quality
    share = declaration.drift.attribution_share_change
    found = [
        _panel(
            "Traffic share per version",
            [
                (f"shipway_traffic_weight{{{m}}}", "v{{version}}"),
                (f"shipway_shadow{{{m}}} * 100", "v{{version}} shadow (mirrored)"),
            ],
            "percent",
            "The weight each version gets at the front door; a shadow version gets a copy.",
        ),
        _panel(
            "Rollout",
            [
                (
                    f"shipway_rollout_phase{{{m}}}",
                    "v{{version}} {{phase}} (champion v{{champion}})",
                ),
                (f"shipway_rollout_failed_checks{{{m}}}", "v{{version}} failed checks"),
            ],
            "short",
            f"Phase of the latest rollout and its failed analysis intervals "
            f"(rollback at {declaration.rollout.failed_checks}).",
        ),
        _panel(
            "Requests per second",
            [
                (
                    f"sum by (version) (rate(envoy_cluster_upstream_rq_total{{{m}}}[1m]))",
                    "v{{version}}",
                )
            ],
            "reqps",
            "What the data plane sent each version.",
        ),
        _panel(
            "Server errors (5xx share)",
            [(f"shipway:request_error_ratio:rate1m{{{m}}}", "v{{version}}")],
            "percentunit",
            "A client's 4xx is not the version's error.",
            [round(1.0 - declaration.rollout.checks.min_success_rate, 6)],
        ),
        _panel(
            "Latency p50 / p99",
            [
                (latency("0.5"), "v{{version}} p50"),
                (latency("0.99"), "v{{version}} p99"),
            ],
            "s",
            "The data plane's view, per version.",
            [declaration.monitoring.alerts.latency_p99_ms / 1000],
        ),
        _panel(
            "Feature drift (PSI)",
            [(f"shipway_feature_drift_psi{{{m}}}", "v{{version}} {{feature}}")],
            "short",
            "Each version's time window against its training reference (no series while the "
            "window holds too few rows); the line is the drift policy's default PSI threshold, "
            "a feature also needs its KS / chi² p-value under the limit to drift.",
            [declaration.drift.psi_threshold],
        ),
        _panel(
            "Prediction drift (PSI)",
            [(f"shipway_prediction_drift_psi{{{m}}}", "v{{version}}")],
            "short",
            "Each version's live scores against the scores of its own training rows.",
            [declaration.drift.rules(declaration.serving.drift_window).rule("score").psi],
        ),
        _panel(
            "Attribution share change",
            [(f"shipway_attribution_share_change{{{m}}}", "v{{version}} {{feature}}")],
            "percentunit",
            "Each feature's share of the model's mean |SHAP contribution| in the live window, "
            "minus its share on the training rows of the same hours; the lines are the policy's "
            "limit either way (no series where the policy sets none).",
            [share, -share] if share is not None else None,
        ),
        _panel(
            "Mean prediction score",
            [(f"shipway:prediction_score:mean_5m{{{m}}}", "v{{version}}")],
            "short",
            "The challenger's divergence from the champion.",
        ),
        _panel(
            "Live quality",
            [
                (f'shipway_live_quality{{{m},metric!="{COST_METRIC}"}}', "v{{version}} {{metric}}"),
                (f"shipway_estimated_quality{{{m}}}", "v{{version}} {{metric}} (estimated)"),
            ],
            "short",
            "Predictions joined with labels as they land, over the policy's window, beside the "
            "quality estimated before labels (CBPE or DLE, on every prediction); the lines are "
            "the monitoring.quality limits.",
            [limit for r in quality for limit in (r.min, r.max) if limit is not None],
        ),
        _panel(
            "Label coverage",
            [(f"shipway_label_coverage{{{m}}}", "v{{version}}")],
            "percentunit",
            f"Share of the window's predictions whose label has landed (labels mature after "
            f"{declaration.label.maturity_days} days).",
        ),
        _panel(
            "CPU seconds per 1,000 predictions",
            [(f"shipway:cpu_seconds_per_1000_predictions:rate5m{{{m}}}", "v{{version}}")],
            "s",
            "The cost of inference: what each version's model servers spend (all replicas, all "
            "their work) per 1,000 rows scored, from their own process CPU time.",
        ),
        _panel(
            "Prediction log rows per second",
            [(f"rate(shipway_prediction_log_rows_total{{{m}}}[5m])", "rows")],
            "short",
            f"Rows written to {declaration.name}_predictions.",
        ),
    ]
    cost = declaration.release.cost
    if cost is not None:
        found.append(
            _panel(
                f"Live cost per 1,000 decisions ({cost.currency})",
                [(f'shipway_live_quality{{{m},metric="{COST_METRIC}"}}', "v{{version}}")],
                "short",
                "What each version's decisions cost as their labels land, priced by the "
                "release's cost model (release.cost): reviews and missed positives.",
                [cost.max_per_1000] if cost.max_per_1000 is not None else None,
            )
        )
    for i, panel in enumerate(found):
        panel["id"] = i + 1
        panel["gridPos"] = {"x": (i % 2) * WIDTH, "y": (i // 2) * HEIGHT, "w": WIDTH, "h": HEIGHT}
    return found


def dashboard(declaration: ModelDeclaration) -> dict[str, Any]:
    m = f'model="{declaration.name}"'
    board = {
        "uid": f"shipway-{declaration.name}"[:40],
        "title": f"Shipway: {declaration.name}",
        "description": declaration.description,
        "tags": ["shipway", declaration.name],
        "timezone": "utc",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Rollout steps",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "blue",
                    "expr": f"changes(shipway_traffic_weight{{{m}}}[1m]) > 0",
                    "titleFormat": "traffic moved",
                    "textFormat": "v{{version}}",
                },
                {
                    "name": "Rollout phases (retrains)",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "orange",
                    "expr": f"changes(shipway_rollout_phase{{{m}}}[1m]) > 0 or "
                    f"(shipway_rollout_phase{{{m}}} unless shipway_rollout_phase{{{m}}} offset 1m)",
                    "titleFormat": "rollout",
                    "textFormat": "v{{version}} {{phase}}",
                },
            ]
        },
        "panels": panels(declaration),
    }
    validate(board)
    return board


@cache
def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def validate(board: dict[str, Any]) -> None:
    """Raise BadRequest naming the field and the rule a dashboard breaks."""
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(_schema()).iter_errors(board)
    )
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise BadRequest(f"dashboard {board.get('uid', '?')}: {where}: {error.message}")


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target and annotation."""
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]
    found += [(a["name"], a["expr"]) for a in board["annotations"]["list"]]
    return found


def write(declaration: ModelDeclaration, folder: Path = GRAFANA_DIR) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{declaration.name}.json"
    path.write_text(json.dumps(dashboard(declaration), indent=1) + "\n")
    return path


def push(boards: list[dict[str, Any]], folder_uid: str | None = None) -> list[str]:
    """Create or update each dashboard in the Grafana of `GRAFANA_URL` / `GRAFANA_TOKEN`;
    the URL of each, as Grafana answers it. The token is never printed."""

    if not os.environ.get("GRAFANA_URL"):
        raise ShipwayError(
            "GRAFANA_URL is not set: point it at Grafana (and GRAFANA_TOKEN at a service "
            "account token with dashboard write access)"
        )
    api = GrafanaApi.from_env()
    urls = []
    for board in boards:
        validate(board)
        body: dict[str, Any] = {"dashboard": {**board, "id": None}, "overwrite": True}
        if folder_uid:
            body["folderUid"] = folder_uid
        try:
            answer = api.dashboard.update_dashboard(body)
        except GrafanaException as exc:
            raise ShipwayError(
                f"Grafana refused dashboard {board['uid']}: {exc.status_code} {exc.message}"
            ) from None
        except RequestException as exc:
            raise ServiceError(
                f"Grafana at {os.environ['GRAFANA_URL']} unreachable: {exc}"
            ) from None
        urls.append(str(answer.get("url", board["uid"])))
    return urls
