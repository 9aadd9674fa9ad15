"""Release rules on constructed scores: metrics agree with scikit-learn, the paired bootstrap is
seeded and paired, each rule blocks what it should and names observed against expected, too
little evidence is never a pass, tiers ask for approval, and the audit table keeps decisions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, PERMISSION_DENIED
from mlflow.tracking import MlflowClient
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)

from shipway.errors import BadRequest, NotFound, ServiceError, ShipwayError
from shipway.models.declaration import ApprovalPolicy, ModelDeclaration, load_declaration
from shipway.models.tracking import champion_version
from shipway.paths import ASSETS_DIR, ShipwayHome
from shipway.processes import free_port
from shipway.release.audit import Audit, AuditEntry
from shipway.release.evaluation import current_champion
from shipway.release.judge import Judge
from shipway.rollout.deploy import baseline
from shipway.stats.metrics import metric_functions, paired_bootstrap, point_values

FRAUD = load_declaration(ASSETS_DIR / "fraud" / "model.yaml")


def _fraud(**release: object) -> ModelDeclaration:
    """fraud_model's policy without slices, fairness rules or cost model (tests/test_fairness.py
    and tests/test_cost.py have those), and without the calibration limit unless given (the
    constructed scores are not calibrated)."""
    operational = FRAUD.release.operational.model_copy(update={"max_calibration_error": None})
    update = {"slices": [], "fairness": None, "cost": None, "operational": operational, **release}
    policy = FRAUD.release.model_copy(update=update)
    return FRAUD.model_copy(update={"release": policy})


def _scores(rows: int, skill: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels at a 10% rate, and scores whose separation grows with `skill` (rounded, so tied)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < 0.1).astype(float)
    return labels, np.round(1 / (1 + np.exp(-(skill * (labels - 0.5) + rng.normal(size=rows)))), 2)


def test_metrics_at_unit_weights_equal_scikit_learn_with_ties() -> None:
    labels, scores = _scores(3000, 2.0, 1)
    values = point_values(metric_functions("binary_classification", labels, scores, None), 3000)
    assert values["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert values["pr_auc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert values["brier"] == pytest.approx(brier_score_loss(labels, scores), abs=1e-12)
    assert values["log_loss"] == pytest.approx(log_loss(labels, scores), abs=1e-9)
    y = np.random.default_rng(2).gamma(2.0, 50.0, 500)
    predicted = y + np.random.default_rng(3).normal(0, 20, 500)
    reg = point_values(metric_functions("regression", y, predicted, y * 0.9), 500)
    assert reg["mae"] == pytest.approx(mean_absolute_error(y, predicted))
    assert reg["r2"] == pytest.approx(r2_score(y, predicted))
    assert reg["mae_to_baseline"] == pytest.approx(
        mean_absolute_error(y, predicted) / mean_absolute_error(y, y * 0.9)
    )


def test_the_paired_bootstrap_is_seeded_and_pairs_the_rows() -> None:
    labels, good = _scores(4000, 3.0, 4)
    _, weak = _scores(4000, 1.0, 4)
    a = metric_functions("binary_classification", labels, good, None)
    b = metric_functions("binary_classification", labels, weak, None)
    first = paired_bootstrap(a, b, ["roc_auc", "brier"], 4000, 300, 0.95, seed=5)
    again = paired_bootstrap(a, b, ["roc_auc", "brier"], 4000, 300, 0.95, seed=5)
    assert first == again
    assert 0 < first["roc_auc"].low < first["roc_auc"].delta < first["roc_auc"].high
    assert first["brier"].improvement[1] > 0  # lower Brier is better: an improvement
    same = paired_bootstrap(a, a, ["roc_auc"], 4000, 300, 0.95, seed=5)["roc_auc"]
    assert (same.low, same.high) == (0.0, 0.0)


def _judge(declaration: ModelDeclaration, good: float, champion: float | None) -> Judge:
    labels, mine = _scores(4000, good, 6)
    theirs = None if champion is None else _scores(4000, champion, 6)[1]
    return Judge(declaration, labels, mine, theirs)


def test_a_challenger_significantly_worse_than_the_champion_is_blocked_naming_the_interval() -> (
    None
):
    report = _judge(_fraud(), good=3.0, champion=5.0).report("2", "1", [])
    assert report.verdict == "blocked"
    assert {o.kind for o in report.failures} == {"versus_champion"}
    text = report.summary("model.yaml")
    assert "pr_auc vs champion: observed improvement -0.1001, 95% CI [-0.1245, -0.0775]" in text
    assert "not worse than the champion by more than 0.05: CI above -0.0500" in text


def test_with_no_champion_absolute_gates_decide_alone_and_the_report_says_so() -> None:
    report = _judge(_fraud(), good=0.2, champion=None).report("1", None, ["first_version"])
    assert report.verdict == "blocked"
    assert [o.rule for o in report.failures] == ["roc_auc", "pr_auc"]
    assert "roc_auc: observed 0.5" in report.summary("model.yaml")
    assert "absolute gates decide alone" in report.summary("model.yaml")


def test_too_few_positives_is_insufficient_evidence_never_a_pass() -> None:
    report = _judge(_fraud(min_positives=10_000), good=5.0, champion=None).report("1", None, [])
    assert report.verdict == "insufficient_evidence"
    assert "positive labels: observed 383" in report.summary("model.yaml")
    assert "expected >= 10000" in report.summary("model.yaml")


def test_changes_the_policy_names_wait_for_a_named_approver() -> None:
    judge = _judge(_fraud(), good=3.0, champion=3.0)
    assert judge.report("2", "1", []).verdict == "promoted"
    waiting = judge.report("2", "1", ["parameters"])
    assert waiting.verdict == "awaiting_approval"
    assert waiting.approval_reasons == ["parameters changed"]
    high_risk = _fraud(approval=ApprovalPolicy(high_risk=True, needs_approval=[]))
    assert _judge(high_risk, good=3.0, champion=3.0).report("2", "1", []).approval_reasons == [
        "fraud_model is declared high-risk: every release needs a named approver"
    ]


def test_an_uncalibrated_model_fails_the_calibration_limit() -> None:
    report = _judge(
        FRAUD.model_copy(
            update={
                "release": FRAUD.release.model_copy(
                    update={"slices": [], "fairness": None, "cost": None}
                )
            }
        ),
        good=3.0,
        champion=None,
    ).report("1", None, [])
    (failure,) = report.failures
    assert failure.kind == "operational"
    assert failure.line().startswith("calibration error (ECE): observed 0.1")
    assert failure.expected == "<= 0.05"


def _awaiting(home: ShipwayHome, version: str) -> None:
    Audit(home).append(
        AuditEntry(
            "fraud_model",
            version,
            "gate",
            "awaiting_approval",
            "shipway release gate",
            details={"approval_reasons": ["parameters changed"]},
        )
    )


def test_of_an_approval_and_a_rejection_at_once_the_first_decides_and_the_second_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both read "awaiting approval" before either writes, as two people at once would: without
    # one lock over read and append, both succeed and the approval wins over a final rejection.
    home = ShipwayHome(tmp_path)
    _awaiting(home, "5")
    read = Audit.state

    def slow_state(self: Audit, model: str, version: str) -> AuditEntry | None:
        found = read(self, model, version)
        time.sleep(0.5)
        return found

    monkeypatch.setattr(Audit, "state", slow_state)
    outcomes: dict[str, str] = {}

    def decide(approve: bool) -> None:
        try:
            entry = Audit(home).decide("fraud_model", "5", approve, "at once")
            outcomes["approve" if approve else "reject"] = entry.state
        except BadRequest as exc:
            outcomes["approve" if approve else "reject"] = f"refused: {exc}"

    threads = [threading.Thread(target=decide, args=(a,)) for a in (False, True)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    assert outcomes["reject"] == "rejected"
    assert outcomes["approve"].startswith("refused: fraud_model v5 is not awaiting approval")
    states = [e.state for e in Audit(home).entries("fraud_model", "5") if e.event == "approval"]
    assert states == ["rejected"]


def test_an_approval_records_identity_and_a_rejection_is_final(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = ShipwayHome(tmp_path)
    audit = Audit(home)
    monkeypatch.setenv("SHIPWAY_IDENTITY", "alice@risk")
    _awaiting(home, "3")
    _awaiting(home, "4")
    assert [e.version for e in audit.pending()] == ["3", "4"]
    approved = audit.decide("fraud_model", "3", approve=True, reason="slices reviewed")
    assert (approved.state, approved.actor, approved.reason) == (
        "approved",
        "alice@risk",
        "slices reviewed",
    )
    audit.decide("fraud_model", "4", approve=False, reason="worse on online")
    with pytest.raises(BadRequest, match=r"v4 is not awaiting approval: it is rejected .* final"):
        audit.decide("fraud_model", "4", approve=True, reason="changed my mind")
    with pytest.raises(BadRequest, match="--reason is required"):
        audit.decide("fraud_model", "3", approve=True, reason=" ")
    with pytest.raises(NotFound, match="v9 has no release verdict"):
        audit.decide("fraud_model", "9", approve=True, reason="x")
    assert audit.pending() == []
    states = [(e.version, e.event, e.state) for e in audit.entries("fraud_model")]
    assert states == [
        ("3", "gate", "awaiting_approval"),
        ("4", "gate", "awaiting_approval"),
        ("3", "approval", "approved"),
        ("4", "approval", "rejected"),
    ]


def test_a_registry_that_cannot_be_read_is_never_taken_for_no_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken for "no champion", an unreachable MLflow let the gate judge absolute rules alone
    # and the deployment go to 100% at once.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    unreachable = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceError, match="cannot say which fraud_model version is the champion"):
        current_champion(unreachable, "fraud_model", tmp_path)

    def no_alias(self: MlflowClient, model: str, alias: str) -> None:
        raise MlflowException(f"Registered model alias {alias} not found.", INVALID_PARAMETER_VALUE)

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", no_alias)
    assert current_champion(unreachable, "fraud_model", tmp_path) is None

    def refused(self: MlflowClient, model: str, alias: str) -> None:
        raise MlflowException("Permission denied", PERMISSION_DENIED)

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", refused)
    with pytest.raises(ServiceError, match="PERMISSION_DENIED"):
        champion_version(unreachable, "fraud_model")


def test_a_champion_serving_does_not_run_stops_a_deployment_instead_of_skipping_its_canary() -> (
    None
):
    running: dict[str, object] = {"3": {}, "4": {}}
    assert baseline("fraud_model", "4", None, running) is None
    assert baseline("fraud_model", "4", "4", running) is None
    assert baseline("fraud_model", "4", "3", running) == "3"
    with pytest.raises(ShipwayError, match=r"champion v2, which serving does not run .*v2 again"):
        baseline("fraud_model", "4", "2", running)


def test_the_operational_gate_gives_the_same_verdict_on_a_busy_machine(tmp_path: Path) -> None:
    """A good model failed a fresh-clone CI run while another process loaded the machine: its
    wall-clock single-row p99 read 35.9 ms against 25 ms. The gate now measures the model's own
    CPU time per predict: with four processes spinning on the two cores, the figure stays
    under twice the quiet one, so a limit with that margin gives the same verdict."""
    import subprocess
    import sys

    import xgboost as xgb

    from shipway.release.evaluation import Candidate
    from shipway.release.operational import measure

    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(400, 8))
    labels = (matrix[:, 0] + rng.normal(size=400) > 0).astype(int)
    booster = xgb.train(
        {"max_depth": 6, "objective": "binary:logistic"}, xgb.DMatrix(matrix, labels), 100
    )
    model_file = tmp_path / "model.json"
    booster.save_model(model_file)
    candidate = Candidate("m", "1", "run", {"features": "a"}, {}, model_file)
    quiet = measure(candidate, matrix)
    limit = 2 * quiet.predict_cpu_p99_ms
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        time.sleep(0.3)
        busy = measure(candidate, matrix)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert quiet.predict_cpu_p99_ms <= limit and busy.predict_cpu_p99_ms <= limit, (quiet, busy)
