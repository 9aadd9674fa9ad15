"""The model card of a registered version: what it is for, what it was made from, how it was
judged, and who let it ship.

Built from what the platform already records, never typed by hand twice: the declaration
(owner, description, intended use and limitations), the MLflow run (code commit, lock file,
data versions, feature service, parameters, validation metrics), the release report the gate
logged (`release/report.json`: metrics with intervals, slices, fairness, global importance,
business cost, verdict), the release audit (gate, approvals, reproductions) and the quality
estimator the version carries. Written as Markdown and JSON (`shipway models card`), signed
into the version's package and logged to its MLflow run (`card/`).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from shipway.errors import ShipwayError, shown
from shipway.models.declaration import ModelDeclaration
from shipway.models.estimation import QualityEstimator
from shipway.models.tracking import run_artifact
from shipway.paths import ShipwayHome
from shipway.release.audit import Audit
from shipway.release.evaluation import Candidate
from shipway.release.gate import REPORT_DIR
from shipway.release.report import share_text

CARD_DIR = "card"
CARD_MARKDOWN, CARD_JSON = "card.md", "card.json"


@dataclass
class ModelCard:
    model: str
    version: str
    owner: str
    description: str
    problem: str
    intended_use: str
    limitations: list[str]
    lineage: dict[str, Any]
    validation_metrics: dict[str, float]
    release: dict[str, Any] | None
    """The gate's report (`release/report.json`); None when the version was never gated."""
    decisions: list[dict[str, str]] = field(default_factory=list)
    """Gate, approvals, rejections and reproductions from the release audit, oldest first."""
    estimation: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            f"# Model card: {self.model} v{self.version}",
            "",
            f"- Owner: {self.owner}",
            f"- Problem: {self.problem}",
            f"- {self.description}" if self.description else "",
            "",
            "## Intended use",
            "",
            self.intended_use or "Not declared (`card.intended_use` in the model's model.yaml).",
            "",
            "## Limitations",
            "",
            *(
                [f"- {item}" for item in self.limitations]
                or ["Not declared (`card.limitations` in the model's model.yaml)."]
            ),
            "",
            "## Lineage",
            "",
            *(f"- {key}: {_shown(value)}" for key, value in self.lineage.items()),
            "",
            "## Validation metrics (at training)",
            "",
            *(f"- {key}: {value:.4f}" for key, value in sorted(self.validation_metrics.items())),
        ]
        lines += self._release_lines()
        lines += ["", "## Decisions", ""]
        lines += [
            f"- {d['at']} {d['event']}: {d['state']} by {d['actor']}. {d['reason']}"
            for d in self.decisions
        ] or ["- none recorded"]
        if self.estimation is not None:
            lines += [
                "",
                "## Quality before labels",
                "",
                f"- {self.estimation['method'].upper()}, fitted on "
                f"{self.estimation['fitted_rows']} validation rows "
                + ", ".join(f"({k}: {_shown(v)})" for k, v in self.estimation["notes"].items()),
            ]
        return "\n".join(lines) + "\n"

    def _release_lines(self) -> list[str]:
        lines = ["", "## Release gate", ""]
        report = self.release
        if report is None:
            return [*lines, "Never gated: no release report on its MLflow run."]
        champion = report.get("champion")
        lines += [
            f"Verdict: **{report['verdict']}** against "
            + (f"champion v{champion}" if champion else "no champion")
            + f", on {report['rows']} evaluation rows"
            + (f" ({report['positives']} positive)" if report.get("positives") is not None else ""),
            "",
            "| metric | this version | champion | difference, 95% CI |",
            "|---|---|---|---|",
        ]
        intervals = {i["metric"]: i for i in report.get("intervals", [])}
        for metric, values in report.get("metrics", {}).items():
            interval = intervals.get(metric)
            ci = (
                f"{interval['challenger'] - interval['champion']:+.4f} "
                f"[{interval['low']:+.4f}, {interval['high']:+.4f}]"
                if interval and interval.get("low") is not None
                else "-"
            )
            lines.append(
                f"| {metric} | {_number(values.get('challenger'))} | "
                f"{_number(values.get('champion'))} | {ci} |"
            )
        lines += ["", "Rules:", ""]
        for o in report.get("outcomes", []):
            result = "pass" if o["passed"] else "FAIL"
            lines.append(
                f"- [{o['kind']}] {o['rule']}: {o['observed']} (expected {o['expected']}) {result}"
            )
        lines += _section(
            "Slices:",
            [
                f"- {s['column']}={s['value']}: {s['metric']} {_number(s['challenger'])} "
                f"on {s['rows']} rows (champion {_number(s['champion'])})"
                for s in report.get("slices", [])
            ],
        )
        lines += _section(
            "Fairness (per group):",
            [
                f"- {g['column']}={g['group']}: {g['rows']} rows, "
                + ", ".join(f"{k} {_number(v)}" for k, v in g["challenger"].items())
                for g in report.get("fairness", [])
            ],
        )
        lines += _section(
            "Explanations (mean |SHAP|, share of the total):",
            [
                f"- {r['feature']}: {_number(r['challenger'])} "
                f"({share_text(r['challenger_share'])}; champion {share_text(r['champion_share'])})"
                for r in report.get("importance", [])
            ],
        )
        cost = report.get("cost")
        if cost:
            lines += [
                "",
                f"Business cost: {cost['challenger']:.2f} {cost['currency']} per 1,000 "
                f"decisions at score >= {cost['decision_threshold']}"
                + (f" (champion {cost['champion']:.2f})" if cost.get("champion") else ""),
            ]
        return lines


def _section(title: str, items: list[str]) -> list[str]:
    """A titled list of the card, or nothing when it has no items."""
    return ["", title, "", *items] if items else []


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return _number(value)


def _report(uri: str, run_id: str) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory(prefix="shipway-card-") as tmp:
        path = run_artifact(uri, run_id, f"{REPORT_DIR}/report.json", Path(tmp))
        found: dict[str, Any] | None = None if path is None else json.loads(path.read_text())
        return found


def model_card(
    home: ShipwayHome,
    uri: str,
    declaration: ModelDeclaration,
    found: Candidate,
    estimator: Path | None = None,
) -> ModelCard:
    """The card of `found`, a registered version of the model `declaration` declares (its
    model file at hand); `estimator`: the version's quality estimator file, if it has one."""
    run = MlflowClient(uri).get_run(found.run_id)
    tags = found.tags
    lineage = {
        "mlflow_run_id": found.run_id,
        "code_commit": tags.get("shipway.git_commit", "unrecorded"),
        "lock_sha256": tags.get("shipway.lock_sha256", "unrecorded"),
        "data_versions": {t: v or "?" for t, v in found.data_versions.items()},
        "training_set": f"{declaration.training_set} v{found.training_set_version}",
        "feature_service": found.feature_service,
        "feature_version": found.feature_version,
        "features": found.features,
        "parameters": found.training_params,
        "artifact_sha256": tags.get("shipway.artifact_sha256", "not gated yet"),
    }
    decisions = [
        {
            "at": e.at.strftime("%Y-%m-%d %H:%M:%S"),
            "event": e.event,
            "state": e.state,
            "actor": e.actor,
            "reason": e.reason,
        }
        for e in Audit(home).entries(found.model, found.version)
    ]
    estimation = None
    if estimator is not None and estimator.is_file():
        loaded = QualityEstimator.load(estimator)
        estimation = {
            "method": loaded.method,
            "fitted_rows": loaded.fitted_rows,
            "notes": loaded.notes,
        }
    return ModelCard(
        model=found.model,
        version=found.version,
        owner=declaration.owner,
        description=declaration.description,
        problem=declaration.problem,
        intended_use=declaration.card.intended_use,
        limitations=list(declaration.card.limitations),
        lineage=lineage,
        validation_metrics=dict(run.data.metrics),
        release=_report(uri, found.run_id),
        decisions=decisions,
        estimation=estimation,
    )


def card_documents(card: ModelCard) -> dict[str, str]:
    """The card's files: name -> text."""
    return {
        CARD_MARKDOWN: card.markdown(),
        CARD_JSON: json.dumps(card.as_dict(), indent=1, default=str) + "\n",
    }


def write_card(card: ModelCard, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in card_documents(card).items():
        path = folder / f"{card.model}-{card.version}-{name}"
        path.write_text(text)
        written.append(path)
    return written


def log_card(uri: str, card: ModelCard) -> None:
    """Log the card's files to the version's MLflow run (`card/`)."""
    client = MlflowClient(uri)
    run_id = str(card.lineage["mlflow_run_id"])
    with tempfile.TemporaryDirectory(prefix="shipway-card-") as tmp:
        for name, text in card_documents(card).items():
            (Path(tmp) / name).write_text(text)
        try:
            client.log_artifacts(run_id, tmp, CARD_DIR)
        except (MlflowException, OSError) as exc:
            reason = exc.message if isinstance(exc, MlflowException) else str(exc)
            raise ShipwayError(
                f"{card.model} v{card.version}: the card could not be logged to MLflow run "
                f"{run_id} ({shown(reason, 200)}); log in as the platform or a user who may "
                "write to the run"
            ) from None
