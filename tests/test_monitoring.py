"""A real Prometheus on 127.0.0.1: config, rules, scraping, PromQL errors, and the retraining
decisions the drift and quality sensors make from it."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from assets.definitions import models
from shipway.defs.resources import PrometheusResource, ShipwayHomeResource
from shipway.errors import ServiceError
from shipway.features.service import repository
from shipway.models.catalog import declared_model
from shipway.models.declaration import DriftPolicy, MonitoringPolicy, QualityRule, RolloutPolicy
from shipway.monitoring import alerts
from shipway.monitoring.prometheus import (
    PROMETHEUS_CONFIG_DIR,
    PrometheusClient,
    PrometheusServer,
    write_targets,
)
from shipway.monitoring.retraining import decide, decide_quality, waiting_for_labels
from shipway.paths import REPO_ROOT, ShipwayHome
from shipway.processes import free_port
from shipway.rollout.analysis import analyse, live_quality_checks
from shipway.rollout.controller import start
from shipway.rollout.state import RolloutStore


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True)


def test_the_committed_config_passes_promtool() -> None:
    result = _promtool("check", "config", str(PROMETHEUS_CONFIG_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("rules", ["shipway", "callers", "prediction_log", "platform"])
def test_the_recording_and_alert_rules_pass_their_unit_tests(rules: str) -> None:
    result = _promtool(
        "test", "rules", str(PROMETHEUS_CONFIG_DIR / "tests" / f"{rules}_rules_test.yml")
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_feature_freshness_alerts_are_generated_from_the_feature_views_and_pass_their_tests() -> (
    None
):
    freshness = repository().freshness
    assert {r.view for r in freshness} == {"customer_features", "merchant_features"}
    rendered = alerts.render_features(freshness, "feature_repo")
    for relative, text in rendered.items():
        committed = (PROMETHEUS_CONFIG_DIR / relative).read_text()
        assert committed == text, f"{relative} is stale: run `shipway render alerts`"
    tested = _promtool(
        "test", "rules", str(PROMETHEUS_CONFIG_DIR / "tests" / "features_rules_test.yml")
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # A limit is data on the view: a tighter lag limit is a different rule.
    tight = [replace(r, max_lag_hours=1.0) for r in freshness]
    assert "> 3600" in str(alerts.feature_rules(tight))


@pytest.mark.parametrize("name", [m.declaration.name for m in models])
def test_each_model_s_alert_rules_are_generated_from_its_declaration_and_pass_their_tests(
    name: str,
) -> None:
    declared = declared_model(models, name)
    rendered = alerts.render(declared.declaration, str(declared.path.relative_to(REPO_ROOT)))
    for relative, text in rendered.items():
        committed = (PROMETHEUS_CONFIG_DIR / relative).read_text()
        assert committed == text, f"{relative} is stale: run `shipway render alerts`"
    checked = _promtool("check", "rules", str(PROMETHEUS_CONFIG_DIR / "rules" / f"{name}.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool(
        "test", "rules", str(PROMETHEUS_CONFIG_DIR / "tests" / f"{name}_rules_test.yml")
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {r["alert"] for r in alerts.rules(declared.declaration)["groups"][0]["rules"]}
    assert names == {
        "ShipwayFeatureDrift",
        "ShipwayPredictionDrift",
        "ShipwayAttributionDrift",
        "ShipwayErrorRate",
        "ShipwayLatencyP99",
        "ShipwayLiveQuality",
        "ShipwayNoTraffic",
        "ShipwayPredictionLogStale",
    }


def test_a_policy_change_is_a_rule_change_and_no_threshold_is_global() -> None:
    import yaml

    declaration = declared_model(models, "fraud_model").declaration
    monitoring = declaration.monitoring
    stricter = declaration.model_copy(
        update={
            "monitoring": monitoring.model_copy(
                update={"alerts": monitoring.alerts.model_copy(update={"latency_p99_ms": 40.0})}
            )
        }
    )
    found = {r["alert"]: r["expr"] for r in alerts.rules(stricter)["groups"][0]["rules"]}
    assert found["ShipwayLatencyP99"] == (
        'shipway:request_duration_seconds:p99_1m{model="fraud_model"} > 0.04'
    )
    # Drift limits are per feature: the runtime applies them, the alert reads its judgement.
    assert "shipway_feature_drifted" in found["ShipwayFeatureDrift"]
    shared = yaml.safe_load((PROMETHEUS_CONFIG_DIR / "rules" / "shipway.yml").read_text())
    assert all("alert" not in r for g in shared["groups"] for r in g["rules"])


@pytest.mark.parametrize("rules_file", ["shipway", "callers"])
def test_rule_names_follow_prometheus_naming(rules_file: str) -> None:
    import yaml

    rules = yaml.safe_load((PROMETHEUS_CONFIG_DIR / "rules" / f"{rules_file}.yml").read_text())
    records = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]
    assert records
    for name in records:
        level, metric, operations = name.split(":")
        assert level == "shipway" and metric and operations


def _exporter() -> tuple[int, dict[str, Gauge], Any]:
    registry = CollectorRegistry()
    gauges = {
        "psi": Gauge(
            "shipway_feature_drift_psi", "psi", ["model", "version", "feature"], registry=registry
        ),
        "drifted": Gauge(
            "shipway_feature_drifted", "0/1", ["model", "version", "feature"], registry=registry
        ),
        "samples": Gauge(
            "shipway_drift_window_samples", "n", ["model", "version"], registry=registry
        ),
        "quality": Gauge(
            "shipway_live_quality", "q", ["model", "version", "metric"], registry=registry
        ),
        "labelled": Gauge(
            "shipway_live_labelled_predictions", "n", ["model", "version"], registry=registry
        ),
        "estimated": Gauge(
            "shipway_estimated_quality", "q", ["model", "version", "metric"], registry=registry
        ),
    }
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return port, gauges, server


@pytest.fixture(scope="module")
def exporter() -> Iterator[tuple[int, dict[str, Gauge]]]:
    port, gauges, server = _exporter()
    yield port, gauges
    server.shutdown()


@pytest.fixture(scope="module")
def second_pod() -> Iterator[tuple[int, dict[str, Gauge]]]:
    """A second model server of the same version, as a Seldon `Model` with replicas has: it
    exports nothing until a test sets its gauges."""
    port, gauges, server = _exporter()
    yield port, gauges
    server.shutdown()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory,
    exporter: tuple[int, dict[str, Gauge]],
    second_pod: tuple[int, dict[str, Gauge]],
) -> Iterator[PrometheusServer]:
    home = ShipwayHome(tmp_path_factory.mktemp("prom"))
    server = PrometheusServer(home, free_port()).start()
    pods = [f"127.0.0.1:{exporter[0]}", f"127.0.0.1:{second_pod[0]}"]
    write_targets(server.config_dir, "shipway_serving", pods)
    yield server
    server.stop()


POLICY = DriftPolicy(
    psi_threshold=0.25, min_window_samples=300, cooldown_minutes=30, evaluation_interval_seconds=30
)


def _set(gauges: dict[str, Gauge], samples: int, amount_psi: float, drifted: bool | None) -> None:
    """What the runtime exports for v1: `drifted` None is a window under its minimum count,
    which has no drift series at all."""
    gauges["samples"].labels("fraud_model", "1").set(samples)
    for feature, value, judged in (("amount", amount_psi, drifted), ("hour_of_day", 0.02, False)):
        if drifted is None:
            for name in ("psi", "drifted"):
                # feast's import sets PROMETHEUS_MULTIPROC_DIR process-wide, so
                # prometheus_client warns that removal is not multi-process safe; this
                # exporter is one process.
                with warnings.catch_warnings(), contextlib.suppress(KeyError):
                    warnings.simplefilter("ignore", UserWarning)
                    gauges[name].remove("fraud_model", "1", feature)
            continue
        gauges["psi"].labels("fraud_model", "1", feature).set(value)
        gauges["drifted"].labels("fraud_model", "1", feature).set(float(bool(judged)))


def _scraped(client: PrometheusClient, samples: int, amount_psi: float | None) -> None:
    client.wait_for(
        "shipway_drift_window_samples", lambda f: any(s.value == samples for s in f), timeout=30
    )
    client.wait_for(
        'shipway_feature_drift_psi{feature="amount"}',
        lambda found: (
            not found
            if amount_psi is None
            else any(abs(s.value - amount_psi) < 1e-9 for s in found)
        ),
        timeout=30,
    )


@pytest.mark.integration
def test_prometheus_scrapes_the_targets_shipway_writes_and_evaluates_rules(
    prometheus: PrometheusServer, exporter: tuple[int, dict[str, Gauge]]
) -> None:
    _set(exporter[1], 500, 0.42, True)
    client = PrometheusClient(prometheus.url)
    found = client.wait_for(
        "shipway:feature_drift_psi:max", lambda s: bool(s) and s[0].value == 0.42, timeout=30
    )
    assert found[0].labels == {
        "__name__": "shipway:feature_drift_psi:max",
        "model": "fraud_model",
        "version": "1",
    }
    targets = json.loads((prometheus.config_dir / "targets" / "shipway_serving.json").read_text())
    assert targets[0]["targets"][0] == f"127.0.0.1:{exporter[0]}"


@pytest.mark.integration
def test_a_bad_query_names_prometheus_parse_error(prometheus: PrometheusServer) -> None:
    with pytest.raises(ServiceError, match=r"rejected 'max by \(': .*parse error"):
        PrometheusClient(prometheus.url).query("max by (")


def test_an_unreachable_prometheus_is_named() -> None:
    with pytest.raises(ServiceError, match="unreachable"):
        PrometheusClient(f"http://127.0.0.1:{free_port()}").query("up")


@pytest.mark.integration
def test_no_retrain_on_a_window_too_small_to_judge(
    prometheus: PrometheusServer, exporter: tuple[int, dict[str, Gauge]]
) -> None:
    client = PrometheusClient(prometheus.url)
    _set(exporter[1], 120, 0.9, None)
    _scraped(client, 120, None)
    decision = decide(client, "fraud_model", POLICY, None, time.time())
    assert not decision.retrain
    assert "window samples {'1': 120.0} < 300 required in 15 min" in decision.reason


@pytest.mark.integration
def test_no_retrain_when_the_runtime_judged_no_feature_drifted(
    prometheus: PrometheusServer, exporter: tuple[int, dict[str, Gauge]]
) -> None:
    client = PrometheusClient(prometheus.url)
    _set(exporter[1], 1000, 0.31, False)
    _scraped(client, 1000, 0.31)
    decision = decide(client, "fraud_model", POLICY, None, time.time())
    assert not decision.retrain
    assert "no feature past its PSI and p-value limits (max PSI 0.310, v1:amount)" in (
        decision.reason
    )


@pytest.mark.integration
def test_drift_over_the_threshold_requests_one_retrain_per_cooldown(
    prometheus: PrometheusServer, exporter: tuple[int, dict[str, Gauge]]
) -> None:
    client = PrometheusClient(prometheus.url)
    _set(exporter[1], 1000, 0.61, True)
    _scraped(client, 1000, 0.61)
    now = time.time()
    first = decide(client, "fraud_model", POLICY, None, now)
    assert first.retrain
    assert first.drifted == {"v1:amount": 0.61}
    assert first.run_key == decide(client, "fraud_model", POLICY, None, now + 1).run_key
    cooling = decide(client, "fraud_model", POLICY, first.cursor, now + 60)
    assert not cooling.retrain
    assert "in cooldown" in cooling.reason
    later = decide(client, "fraud_model", POLICY, first.cursor, now + 31 * 60)
    assert later.retrain
    assert later.run_key != first.run_key


@pytest.mark.integration
def test_drift_judged_by_two_pods_of_a_version_counts_once_per_feature(
    prometheus: PrometheusServer,
    exporter: tuple[int, dict[str, Gauge]],
    second_pod: tuple[int, dict[str, Gauge]],
) -> None:
    client = PrometheusClient(prometheus.url)
    _set(exporter[1], 400, 0.61, True)
    _set(second_pod[1], 400, 0.22, False)
    try:
        client.wait_for(
            "shipway_drift_window_samples", lambda f: sorted(s.value for s in f) == [400, 400]
        )
        decision = decide(client, "fraud_model", POLICY, None, time.time())
        assert decision.retrain, decision.reason
        assert decision.drifted == {"v1:amount": 0.61}
        _set(exporter[1], 120, 0.9, None)
        _set(second_pod[1], 150, 0.9, None)
        client.wait_for(
            "shipway_drift_window_samples", lambda f: sorted(s.value for s in f) == [120, 150]
        )
        # Two windows of 120 and 150 rows are one of 270: still under the minimum of 300.
        waiting = decide(client, "fraud_model", POLICY, None, time.time())
        assert "window samples {'1': 270.0} < 300 required" in waiting.reason
    finally:
        with warnings.catch_warnings():  # not multi-process safe: one process here (see _set)
            warnings.simplefilter("ignore", UserWarning)
            for gauge in second_pod[1].values():
                gauge.clear()


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = PrometheusServer(ShipwayHome(tmp_path), port)
        with pytest.raises(ServiceError, match=f"port 127.0.0.1:{port} is already in use"):
            server.start()
    assert server.process is None


def test_a_missing_binary_names_the_setup_step(tmp_path: Path) -> None:
    server = PrometheusServer(ShipwayHome(tmp_path), free_port(), binary="/nowhere/prometheus")
    with pytest.raises(ServiceError, match=r"run deploy/setup\.sh"):
        server.start()
    assert server.process is None


def test_drift_waits_for_labels_when_nothing_landed_after_the_last_training_set() -> None:
    cutoff = datetime(2026, 11, 14, tzinfo=UTC)
    waiting = waiting_for_labels(cutoff, cutoff, maturity_days=7)
    assert waiting is not None
    assert "waiting for labels until events after 2026-11-14 00:00 land" in waiting
    assert "labels mature 7 days after their event" in waiting
    later = waiting_for_labels(cutoff, cutoff + timedelta(hours=1), maturity_days=7)
    assert later is None, "a landing after the cutoff brings new matured labels"
    assert waiting_for_labels(None, cutoff, 7) is None, "never trained: nothing to wait for"


QUALITY = MonitoringPolicy(
    min_labelled=300,
    quality=[QualityRule(metric="roc_auc", min=0.8), QualityRule(metric="brier", max=0.1)],
    cooldown_minutes=60,
)


def _quality(
    client: PrometheusClient, gauges: dict[str, Gauge], version: str, labelled: int, roc: float
) -> None:
    """Export a version's live quality and wait until Prometheus has scraped it."""
    gauges["labelled"].labels("fraud_model", version).set(labelled)
    gauges["quality"].labels("fraud_model", version, "roc_auc").set(roc)
    gauges["quality"].labels("fraud_model", version, "brier").set(0.03)
    client.wait_for(
        'shipway_live_quality{metric="roc_auc"}',
        lambda found: any(
            s.labels["version"] == version and abs(s.value - roc) < 1e-9 for s in found
        ),
        timeout=30,
    )
    client.wait_for(
        "shipway_live_labelled_predictions",
        lambda found: any(s.labels["version"] == version and s.value == labelled for s in found),
        timeout=30,
    )


@pytest.fixture
def quality_prometheus(
    prometheus: PrometheusServer, exporter: tuple[int, dict[str, Gauge]]
) -> tuple[PrometheusClient, dict[str, Gauge]]:
    """Each test exports the versions it reads (so tests do not see each other's)."""
    return PrometheusClient(prometheus.url), exporter[1]


@pytest.mark.integration
def test_a_live_quality_drop_of_the_champion_requests_one_retrain_per_cooldown(
    quality_prometheus: tuple[PrometheusClient, dict[str, Gauge]],
) -> None:
    client, gauges = quality_prometheus
    _quality(client, gauges, "3", labelled=500, roc=0.91)
    calm = decide_quality(client, "fraud_model", QUALITY, "3", None, 1_000.0)
    assert not calm.retrain and "within policy: brier=0.0300, roc_auc=0.9100" in calm.reason
    _quality(client, gauges, "3", labelled=500, roc=0.62)
    # Another version's numbers do not count: only the champion's.
    _quality(client, gauges, "4", labelled=500, roc=0.99)
    drop = decide_quality(client, "fraud_model", QUALITY, "3", None, 1_000.0)
    assert drop.retrain and drop.run_key == "fraud_model-quality-v3-0"
    assert drop.reason == "live quality of fraud_model v3 below policy: roc_auc 0.6200 < min 0.8"
    again = decide_quality(client, "fraud_model", QUALITY, "3", drop.cursor, 1_600.0)
    assert not again.retrain and "in cooldown" in again.reason


@pytest.mark.integration
def test_live_quality_on_too_few_labels_waits_for_them(
    quality_prometheus: tuple[PrometheusClient, dict[str, Gauge]],
) -> None:
    client, gauges = quality_prometheus
    _quality(client, gauges, "5", labelled=120, roc=0.5)
    decision = decide_quality(client, "fraud_model", QUALITY, "5", None, 1_000.0)
    assert not decision.retrain
    assert decision.reason == (
        "waiting for labels: v5 has 120 labelled predictions in its window < 300 required"
    )


@pytest.mark.integration
def test_acting_on_the_estimate_the_sensor_and_the_rollout_judge_it_while_labels_are_pending(
    quality_prometheus: tuple[PrometheusClient, dict[str, Gauge]],
) -> None:
    client, gauges = quality_prometheus
    _quality(client, gauges, "7", labelled=40, roc=0.95)
    gauges["estimated"].labels("fraud_model", "7", "roc_auc").set(0.7)
    gauges["estimated"].labels("fraud_model", "7", "brier").set(0.03)
    client.wait_for(
        'shipway_estimated_quality{version="7"}', lambda found: len(found) == 2, timeout=30
    )
    selector = 'model="fraud_model",version="7"'
    # By default they wait for labels: 40 of 300.
    waiting = decide_quality(client, "fraud_model", QUALITY, "7", None, 1_000.0)
    assert not waiting.retrain and waiting.reason.startswith("waiting for labels: v7 has 40")
    assert live_quality_checks(client, selector, QUALITY) == ()

    acting = QUALITY.model_copy(update={"act_on_estimate": True})
    decision = decide_quality(client, "fraud_model", acting, "7", None, 1_000.0)
    assert decision.retrain and decision.run_key == "fraud_model-quality-v7-0"
    assert decision.reason == (
        "estimated quality of fraud_model v7 below policy: roc_auc 0.7000 < min 0.8"
    )
    checks = live_quality_checks(client, selector, acting)
    assert [(c.name, c.observed, c.passed) for c in checks] == [
        ("estimated_roc_auc", 0.7, False),
        ("estimated_brier", 0.03, True),
    ]
    # Enough labels again: the realized values decide (0.95 is within the policy).
    _quality(client, gauges, "7", labelled=500, roc=0.95)
    assert not decide_quality(client, "fraud_model", acting, "7", None, 1_000.0).retrain
    assert {c.name for c in live_quality_checks(client, selector, acting)} == {
        "live_roc_auc",
        "live_brier",
    }


@pytest.mark.integration
def test_the_quality_sensor_requests_a_retrain_unless_a_rollout_is_under_way(
    quality_prometheus: tuple[PrometheusClient, dict[str, Gauge]], tmp_path: Path
) -> None:
    from assets.definitions import defs

    client, gauges = quality_prometheus
    _quality(client, gauges, "6", labelled=900, roc=0.55)
    home = ShipwayHome(tmp_path)
    store = RolloutStore(home.served.rollouts)
    store.save(start("fraud_model", "6", None, RolloutPolicy(), 0.0))
    sensor = defs.resolve_sensor_def("fraud_model_quality_sensor")
    resources = {
        "prometheus": PrometheusResource(url=client.url),
        "lake": ShipwayHomeResource(path=str(home.root)),
    }
    with build_sensor_context(instance=DagsterInstance.ephemeral(), resources=resources) as ctx:
        result = sensor(ctx)
    assert isinstance(result, SensorResult) and result.run_requests
    (request,) = result.run_requests
    assert request.job_name in (None, "fraud_model_retrain")
    assert request.tags["shipway/trigger"] == "quality"
    assert "roc_auc 0.5500 < min 0.8" in request.tags["shipway/reason"]

    store.save(start("fraud_model", "7", "6", RolloutPolicy(), 0.0))
    with build_sensor_context(instance=DagsterInstance.ephemeral(), resources=resources) as ctx:
        skipped = sensor(ctx)
    assert isinstance(skipped, SkipReason)
    assert "fraud_model v7 is rolling out (shadow)" in str(skipped.skip_message)


@pytest.mark.integration
def test_the_rollout_analysis_reads_the_challenger_s_live_quality_once_it_has_the_labels(
    quality_prometheus: tuple[PrometheusClient, dict[str, Gauge]],
) -> None:
    client, gauges = quality_prometheus
    _quality(client, gauges, "8", labelled=QUALITY.min_labelled - 1, roc=0.6)
    early = analyse(client, "fraud_model", "8", None, 30, QUALITY)
    assert early.quality == (), "too few labels: not judged yet"
    _quality(client, gauges, "8", labelled=QUALITY.min_labelled, roc=0.6)
    judged = analyse(client, "fraud_model", "8", None, 30, QUALITY)
    assert [c.line() for c in judged.quality] == [
        "live_roc_auc 0.6 (limit 0.8) FAILED",
        "live_brier 0.03 (limit 0.1) ok",
    ]
    assert judged.as_dict()["live_roc_auc"] == 0.6
