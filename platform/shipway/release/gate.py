"""The release gate of one registered version: evaluation set, every rule, the report in MLflow,
the verdict in the audit table.

Called by the `<model>_gate` asset check; everything it needs is the lake, the MLflow registry
and the model's declaration, so it is tested without Dagster too.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mlflow.tracking import MlflowClient
from sklearn.metrics import precision_recall_curve, roc_curve

from shipway.models.catalog import DeclaredModel
from shipway.models.distributed import DaskCluster
from shipway.models.tracking import CHALLENGER, RELEASE_TAG
from shipway.monitoring.skew import SkewReport
from shipway.monitoring.skew import latest as latest_skew
from shipway.paths import ShipwayHome
from shipway.release.audit import Audit, AuditEntry
from shipway.release.evaluation import (
    Candidate,
    EvaluationSet,
    build_evaluation_set,
    candidate,
    current_champion,
)
from shipway.release.explanations import global_importance, importance_figure
from shipway.release.judge import Judge
from shipway.release.operational import measure
from shipway.release.report import PROMOTED, Outcome, ReleaseReport
from shipway.release.reproduce import reproduce

GATE_ACTOR = "shipway release gate"
REPORT_DIR = "release"


def change_kinds(challenger: Candidate, champion: Candidate | None) -> list[str]:
    """What changed against the champion, for the approval tier."""
    if champion is None:
        return ["first_version"]
    kinds = []
    if challenger.problem != champion.problem:
        kinds.append("problem")
    if challenger.feature_service != champion.feature_service:
        kinds.append("feature_service")
    elif challenger.features != champion.features:
        kinds.append("features")
    if challenger.feature_version != champion.feature_version:
        kinds.append("feature_version")
    if challenger.training_params != champion.training_params:
        kinds.append("parameters")
    return kinds


def skew_outcome(skew: SkewReport | None, asset: str) -> Outcome | None:
    """The latest skew verdict as a gate rule: training/serving skew blocks the next rollout
    until a skew run finds none. No run yet, or too few rows for a verdict: no rule."""
    if skew is None or not skew.judged:
        return None
    return Outcome(
        "skew",
        "feature_skew",
        ", ".join(f"{f.feature} {f.share:.2%}" for f in skew.skewed)
        or f"none on {skew.compared} rows",
        f"each feature <= {skew.max_share:.2%} differing ({asset} at {skew.at[:19]})",
        not skew.skewed,
    )


def _parameter_changes(challenger: Candidate, champion: Candidate | None) -> list[str]:
    if champion is None:
        return []
    mine, theirs = challenger.training_params, champion.training_params
    return [
        f"{k}: {theirs.get(k, 'absent')} -> {mine.get(k, 'absent')}"
        for k in sorted(set(mine) | set(theirs))
        if mine.get(k) != theirs.get(k)
    ]


def _judge(
    declared: DeclaredModel,
    evaluation: EvaluationSet,
    challenger: Candidate,
    champion: Candidate | None,
) -> Judge:
    declaration = declared.declaration
    rows = evaluation.rows
    baseline = declaration.training.baseline
    return Judge(
        declaration=declaration,
        labels=rows[declaration.label.column].to_numpy(dtype=np.float64),
        challenger_scores=challenger.score(evaluation.challenger_matrix)
        if len(rows)
        else np.empty(0),
        champion_scores=(champion.score(evaluation.champion_matrix) if len(rows) else np.empty(0))
        if champion is not None and evaluation.champion_matrix is not None
        else None,
        baseline=rows[baseline].to_numpy(dtype=np.float64) if baseline else None,
        slice_columns={rule.column: rows[rule.column] for rule in declaration.release.slices},
        sensitive_columns={column: rows[column] for column in declaration.sensitive},
        cost_columns={
            column: rows[column]
            for column in (declaration.release.cost.columns if declaration.release.cost else [])
        },
        seed=declaration.training.seed,
    )


def _curves(judge: Judge, report: ReleaseReport, path: Path) -> Path:
    """ROC and PR curves of both models (classification), or predicted against actual."""
    scored = [("challenger v" + report.version, judge.challenger_scores)]
    if judge.champion_scores is not None:
        scored.append((f"champion v{report.champion}", judge.champion_scores))
    y = judge.labels
    if judge.classification and 0 < y.sum() < len(y):
        fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.5))
        for label, scores in scored:
            fpr, tpr, _ = roc_curve(y, scores)
            precision, recall, _ = precision_recall_curve(y, scores)
            roc.plot(fpr, tpr, label=label)
            pr.plot(recall, precision, label=label)
        roc.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        pr.set(xlabel="recall", ylabel="precision", title="Precision-recall")
        roc.legend(loc="lower right")
    else:
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for label, scores in scored:
            ax.scatter(y, scores, s=4, alpha=0.4, label=label)
        ax.set(xlabel="actual", ylabel="predicted", title="Predicted against actual")
        ax.legend()
    fig.suptitle(f"{report.model} v{report.version}: {report.verdict}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def release_gate(
    home: ShipwayHome,
    declared: DeclaredModel,
    tracking_uri: str,
    version: str,
    dagster_run_id: str,
    log: Callable[[str], None],
    cluster: DaskCluster | None = None,
) -> ReleaseReport:
    declaration = declared.declaration
    name = declaration.name
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="shipway-release-") as tmp:
        scratch = Path(tmp)
        challenger = candidate(tracking_uri, name, version, scratch)
        champion = current_champion(tracking_uri, name, scratch)
        if champion is not None and champion.version == version:
            champion = None
        cost = declaration.release.cost
        columns = [
            *(rule.column for rule in declaration.release.slices),
            *declaration.sensitive,
            *(cost.columns if cost is not None else []),
        ]
        # First, and alone: at 4M training rows the retraining and the evaluation set would
        # otherwise be in memory together.
        reproduction = None
        if declaration.release.reproducible:
            reproduction = reproduce(home, declared, challenger, log, cluster).result
        evaluation = build_evaluation_set(home, declared, challenger, champion, columns)
        log(
            f"evaluating {name} v{version}"
            + (f" against champion v{champion.version}" if champion else " (no champion)")
            + f" on {len(evaluation.rows)} rows of {evaluation.training_set} "
            f"v{evaluation.training_set_version} from {evaluation.start}"
        )
        judge = _judge(declared, evaluation, challenger, champion)
        operational = (
            measure(challenger, evaluation.challenger_matrix) if len(evaluation.rows) else None
        )
        kinds = change_kinds(challenger, champion)
        lineage = {
            **evaluation.lineage(),
            "feature_version": f"trained on features {challenger.feature_version}",
        }
        if champion is not None and evaluation.champion_joined:
            lineage["champion_features"] = f"joined from {champion.feature_service}"
        report = judge.report(
            version,
            champion.version if champion else None,
            kinds,
            operational=operational,
            reproducibility=reproduction,
            lineage=lineage,
        )
        skew = skew_outcome(latest_skew(home.served.skew_reports, name), declaration.feature_skew)
        if skew is not None:
            report.outcomes.append(skew)
        report.importance = global_importance(
            challenger,
            evaluation.challenger_matrix,
            champion,
            evaluation.champion_matrix,
            declaration.training.seed,
        )
        parameter_changes = _parameter_changes(challenger, champion)
        if parameter_changes:
            report.notes.append("Parameters changed: " + ", ".join(parameter_changes))
        (scratch / REPORT_DIR).mkdir()
        figures = [_curves(judge, report, scratch / REPORT_DIR / "curves.png")]
        if report.importance:
            figures.append(
                importance_figure(
                    report.importance,
                    f"{name} v{version}: global importance",
                    report.champion,
                    scratch / REPORT_DIR / "importance.png",
                )
            )
        (scratch / REPORT_DIR / "report.md").write_text(report.markdown())
        (scratch / REPORT_DIR / "report.json").write_text(
            json.dumps(report.as_dict(), indent=2, default=str)
        )
        for artifact in (*figures, scratch / REPORT_DIR / "report.md"):
            client.log_artifact(challenger.run_id, str(artifact), REPORT_DIR)
        client.log_artifact(
            challenger.run_id, str(scratch / REPORT_DIR / "report.json"), REPORT_DIR
        )
    verdict = report.verdict
    summary = report.summary(str(declared.path))
    Audit(home).append(
        AuditEntry(
            model=name,
            version=version,
            event="gate",
            state=verdict,
            actor=GATE_ACTOR,
            reason=summary,
            mlflow_run_id=challenger.run_id,
            dagster_run_id=dagster_run_id,
            data_versions={
                "training_set": f"{evaluation.training_set} v{evaluation.training_set_version}",
                "feature_version": challenger.feature_version,
                **evaluation.data_versions,
            },
            details={
                "champion": report.champion,
                "failures": [o.line() for o in report.failures],
                "approval_reasons": report.approval_reasons,
                "change": report.change,
                "artifact_sha256": reproduction.registered_sha256 if reproduction else None,
            },
        )
    )
    client.set_model_version_tag(name, version, RELEASE_TAG, verdict)
    if reproduction is not None:
        client.set_model_version_tag(
            name, version, "shipway.artifact_sha256", reproduction.registered_sha256
        )
    if verdict == PROMOTED:
        client.set_registered_model_alias(name, CHALLENGER, version)
    log(summary)
    return report
