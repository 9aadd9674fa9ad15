"""A real Prometheus on 127.0.0.1: config, rules, scraping, PromQL errors, and the retraining
decision the drift sensor makes from it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from shipway.errors import ServiceError
from shipway.models.declaration import DriftPolicy
from shipway.monitoring.prometheus import (
    PROMETHEUS_CONFIG_DIR,
    PrometheusClient,
    PrometheusServer,
    write_targets,
)
from shipway.monitoring.retraining import decide, waiting_for_labels
from shipway.paths import ShipwayHome
from shipway.processes import free_port


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True)


def test_the_committed_config_passes_promtool() -> None:
    result = _promtool("check", "config", str(PROMETHEUS_CONFIG_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stderr


def test_the_recording_and_alert_rules_pass_their_unit_tests() -> None:
    result = _promtool(
        "test", "rules", str(PROMETHEUS_CONFIG_DIR / "tests" / "shipway_rules_test.yml")
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_names_follow_prometheus_naming() -> None:
    import yaml

    rules = yaml.safe_load((PROMETHEUS_CONFIG_DIR / "rules" / "shipway.yml").read_text())
    records = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]
    assert records
    for name in records:
        level, metric, operations = name.split(":")
        assert level == "shipway" and metric and operations


@pytest.fixture(scope="module")
def exporter() -> Iterator[tuple[int, dict[str, Gauge]]]:
    registry = CollectorRegistry()
    gauges = {
        "psi": Gauge(
            "shipway_feature_drift_psi", "psi", ["model", "version", "feature"], registry=registry
        ),
        "samples": Gauge(
            "shipway_drift_window_samples", "n", ["model", "version"], registry=registry
        ),
    }
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port, gauges
    server.shutdown()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, exporter: tuple[int, dict[str, Gauge]]
) -> Iterator[PrometheusServer]:
    home = ShipwayHome(tmp_path_factory.mktemp("prom"))
    server = PrometheusServer(home, free_port()).start()
    write_targets(server.config_dir, "shipway_serving", [f"127.0.0.1:{exporter[0]}"])
    yield server
    server.stop()
    assert server.process is not None and not server.process.running()


POLICY = DriftPolicy(
    psi_threshold=0.25, min_window_samples=300, cooldown_minutes=30, evaluation_interval_seconds=30
)


def _set(gauges: dict[str, Gauge], samples: int, amount_psi: float) -> None:
    gauges["samples"].labels("fraud_model", "1").set(samples)
    gauges["psi"].labels("fraud_model", "1", "amount").set(amount_psi)
    gauges["psi"].labels("fraud_model", "1", "hour_of_day").set(0.02)


def _scraped(client: PrometheusClient, samples: int, amount_psi: float) -> None:
    client.wait_for(
        'shipway_feature_drift_psi{feature="amount"}',
        lambda found: any(abs(s.value - amount_psi) < 1e-9 for s in found),
        timeout=30,
    )
    client.wait_for(
        "shipway_drift_window_samples", lambda f: any(s.value == samples for s in f), timeout=30
    )


def test_prometheus_scrapes_the_targets_shipway_writes_and_evaluates_rules(
    prometheus: PrometheusServer, exporter: tuple[int, dict[str, Gauge]]
) -> None:
    _set(exporter[1], 500, 0.42)
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
    assert targets[0]["targets"] == [f"127.0.0.1:{exporter[0]}"]


def test_a_bad_query_names_prometheus_parse_error(prometheus: PrometheusServer) -> None:
    with pytest.raises(ServiceError, match=r"rejected 'max by \(': .*parse error"):
        PrometheusClient(prometheus.url).query("max by (")


def test_an_unreachable_prometheus_is_named() -> None:
    with pytest.raises(ServiceError, match="unreachable"):
        PrometheusClient(f"http://127.0.0.1:{free_port()}").query("up")


def test_no_retrain_on_a_window_too_small_to_judge(
    prometheus: PrometheusServer, exporter: tuple[int, dict[str, Gauge]]
) -> None:
    client = PrometheusClient(prometheus.url)
    _set(exporter[1], 120, 0.9)
    _scraped(client, 120, 0.9)
    decision = decide(client, "fraud_model", POLICY, None, time.time())
    assert not decision.retrain
    assert "window samples {'1': 120.0} < 300 required" in decision.reason


def test_no_retrain_below_the_policy_threshold(
    prometheus: PrometheusServer, exporter: tuple[int, dict[str, Gauge]]
) -> None:
    client = PrometheusClient(prometheus.url)
    _set(exporter[1], 1000, 0.2)
    _scraped(client, 1000, 0.2)
    decision = decide(client, "fraud_model", POLICY, None, time.time())
    assert not decision.retrain
    assert "max PSI 0.200 (v1:amount) <= threshold 0.25" in decision.reason


def test_drift_over_the_threshold_requests_one_retrain_per_cooldown(
    prometheus: PrometheusServer, exporter: tuple[int, dict[str, Gauge]]
) -> None:
    client = PrometheusClient(prometheus.url)
    _set(exporter[1], 1000, 0.61)
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
