"""Per-model policy files: the committed one loads; a malformed one fails in one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from assets.fraud import POLICY_PATH
from shipway.errors import PolicyError
from shipway.models.declaration import load_policy
from shipway.models.gates import evaluate_gates


def test_the_fraud_policy_loads_and_names_the_feature_service_feast_defines() -> None:
    policy = load_policy(POLICY_PATH)
    assert policy.model == "fraud_model"
    assert (
        policy.training.feature_service
        in (POLICY_PATH.parents[2] / "feature_repo" / "fraud.py").read_text()
    )
    assert {g.metric for g in policy.gates} >= {"roc_auc"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace("min: 0.80", "min: high"),
            "gates.0.min: Input should be a valid number",
        ),
        (
            lambda t: t.replace("psi_threshold", "psi_treshold"),
            "drift.psi_treshold: Extra inputs are not permitted",
        ),
        (
            lambda t: t.replace("metric: roc_auc", "metric: accuracy"),
            "gates.0.metric: Input should be",
        ),
        (lambda t: t.replace("model: fraud_model\n", ""), "model: Field required"),
        (lambda t: t + "\n  - [unclosed", "is not valid YAML"),
    ],
)
def test_a_malformed_policy_fails_with_one_line_naming_the_field(
    tmp_path: Path, edit: object, message: str
) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(edit(POLICY_PATH.read_text()))  # type: ignore[operator]
    with pytest.raises(PolicyError) as raised:
        load_policy(bad)
    assert message in str(raised.value)
    assert str(bad) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_policy_file_is_named() -> None:
    with pytest.raises(PolicyError, match=r"nowhere\.yaml not found"):
        load_policy(Path("/nowhere.yaml"))


def test_gates_report_observed_against_expected_for_each_failure() -> None:
    policy = load_policy(POLICY_PATH)
    report = evaluate_gates("fraud_model", "3", policy.gates, {"roc_auc": 0.61, "pr_auc": 0.9})
    assert not report.passed
    summary = report.summary("policy.yaml")
    assert "roc_auc = 0.6100 is below the minimum 0.8" in summary
    assert "pr_auc" not in summary.split("blocked:")[1].split("(gates")[0]


def test_a_metric_the_run_did_not_record_fails_its_gate() -> None:
    policy = load_policy(POLICY_PATH)
    report = evaluate_gates("fraud_model", "1", policy.gates, {"roc_auc": 0.99})
    assert not report.passed
    assert "pr_auc was not recorded" in report.summary("policy.yaml")


def test_passing_metrics_pass_every_gate() -> None:
    policy = load_policy(POLICY_PATH)
    report = evaluate_gates("fraud_model", "1", policy.gates, {"roc_auc": 0.97, "pr_auc": 0.8})
    assert report.passed
    assert "passed every gate" in report.summary("policy.yaml")
