"""What `shipway models ...` does: pending releases, approvals, history, lineage, reproduce,
package, card."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from shipway.errors import NotFound
from shipway.models.catalog import DeclaredModel
from shipway.models.declaration import ModelDeclaration
from shipway.models.distributed import configured_cluster
from shipway.models.estimation import ESTIMATOR_ARTIFACT
from shipway.models.tracking import RELEASE_TAG, run_artifact
from shipway.models.training import registered_bundle
from shipway.paths import ShipwayHome
from shipway.release.audit import APPROVED, Audit, AuditEntry
from shipway.release.card import ModelCard, card_documents, log_card, model_card
from shipway.release.evaluation import Candidate, candidate
from shipway.release.reproduce import Reproduction, reproduce
from shipway.serving.bundle import ESTIMATOR_FILE, MODEL_FILE, read_bundle
from shipway.serving.package import Package, build_package, signing_key

DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"


def tracking_uri() -> str:
    """The MLflow server `shipway up` starts, unless $MLFLOW_TRACKING_URI names another."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def _entry_line(e: AuditEntry) -> str:
    who = f" by {e.actor}" if e.actor else ""
    run = f" dagster run {e.dagster_run_id[:8]}" if e.dagster_run_id else ""
    text = f"{e.at:%Y-%m-%d %H:%M:%S} {e.model} v{e.version} {e.event}: {e.state}{who}{run}"
    return f"{text}\n    {e.reason}" if e.reason else text


def pending_lines(home: ShipwayHome, model: str | None) -> list[str]:
    waiting = Audit(home).pending(model)
    if not waiting:
        return ["no release is awaiting approval"]
    return [
        f"{e.model} v{e.version} awaiting approval since {e.at:%Y-%m-%d %H:%M:%S} UTC: "
        + "; ".join(e.details.get("approval_reasons", []))
        + f"\n    shipway models approve {e.model} {e.version} --reason ..."
        for e in waiting
    ]


def decide(
    home: ShipwayHome, uri: str, model: str, version: str, approve: bool, reason: str
) -> str:
    entry = Audit(home).decide(model, version, approve, reason)
    MlflowClient(uri).set_model_version_tag(model, version, RELEASE_TAG, entry.state)
    follow = f"; {model}_release_sensor deploys it" if entry.state == APPROVED else "; it is final"
    return (
        f"{model} v{version} {entry.state} by {entry.actor} at "
        f"{entry.at:%Y-%m-%d %H:%M:%S} UTC: {entry.reason}{follow}"
    )


def history_lines(home: ShipwayHome, model: str) -> list[str]:
    entries = Audit(home).entries(model)
    return [_entry_line(e) for e in entries] or [f"no audit entries for {model} yet"]


def _candidate(
    uri: str, model: str, version: str, dest: Path, model_file: Path | None = None
) -> Candidate:
    try:
        return candidate(uri, model, version, dest, model_file)
    except MlflowException as exc:
        raise NotFound(f"{model} v{version} is not a registered version in {uri}") from exc


def lineage_lines(home: ShipwayHome, uri: str, model: str, version: str) -> list[str]:
    """The chain commit -> data versions -> feature service -> parameters -> gate -> approval."""
    with tempfile.TemporaryDirectory() as tmp:
        found = _candidate(uri, model, version, Path(tmp))
    tags = found.tags
    data = ", ".join(f"{t} v{v or '?'}" for t, v in found.data_versions.items())
    training = ", ".join(f"{k}={v}" for k, v in sorted(found.training_params.items()))
    lines = [
        f"{model} v{version} (MLflow run {found.run_id})",
        f"  code commit      {tags.get('shipway.git_commit', 'unrecorded')}",
        f"  lock file        uv.lock sha256 {tags.get('shipway.lock_sha256', 'unrecorded')}",
        f"  data             {data} -> {model}_training_set "
        f"v{found.training_set_version} (digest {tags.get('shipway.training_set_digest', '?')})",
        f"  feature service  {found.feature_service} ({len(found.features)} features), "
        f"trained on features {found.feature_version}",
        f"  parameters       {training}",
    ]
    audit = Audit(home).entries(model, version)
    gates = [e for e in audit if e.event == "gate"]
    approvals = [e for e in audit if e.event == "approval"]
    reproductions = [e for e in audit if e.event == "reproduce"]
    for label, entries in (("gate report", gates), ("approval", approvals)):
        if not entries:
            what = "none yet" if label == "gate report" else "none recorded"
            lines.append(f"  {label:<16} {what}")
        for e in entries:
            lines.append(f"  {label:<16} {e.state} by {e.actor} at {e.at:%Y-%m-%d %H:%M:%S}")
            lines.append(f"  {'':<16} {e.reason}")
    if gates and gates[-1].state == "promoted" and not approvals:
        lines.append(f"  {'':<16} (no approval needed: its tier auto-promotes)")
    for e in reproductions:
        lines.append(f"  reproduced       {e.state} at {e.at:%Y-%m-%d %H:%M:%S}: {e.reason}")
    lines.append(
        f"  artifact         sha256 {tags.get('shipway.artifact_sha256', 'not gated yet')}"
    )
    return lines


def reproduce_version(
    home: ShipwayHome,
    uri: str,
    declared: DeclaredModel,
    version: str,
    log: Callable[[str], None],
) -> tuple[Reproduction, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        found = _candidate(uri, declared.name, version, Path(tmp))
        result = reproduce(home, declared, found, log, configured_cluster())
    outcome = result.result
    verdict = "reproduced" if outcome.identical else "not_reproducible"
    lines = [
        f"{declared.name} v{version} from {result.training_set} v{result.training_set_version}",
        f"  registered artifact sha256 {outcome.registered_sha256}",
        f"  retrained artifact  sha256 {outcome.rebuilt_sha256}",
        *[f"  differs: {d}" for d in outcome.differences],
        "identical: reproducible from the recorded lineage"
        if outcome.identical
        else "DIFFERENT: not reproducible"
        + ("" if outcome.differences else " (same lineage: training is not deterministic)"),
    ]
    Audit(home).append(
        AuditEntry(
            model=declared.name,
            version=version,
            event="reproduce",
            state=verdict,
            actor="shipway models reproduce",
            reason="; ".join(outcome.differences) or "same lineage",
            mlflow_run_id=found.run_id,
            data_versions={"training_set": f"{result.training_set} v{result.training_set_version}"},
            details={"registered": outcome.registered_sha256, "rebuilt": outcome.rebuilt_sha256},
        )
    )
    return result, lines


def package_version(
    home: ShipwayHome, uri: str, declared: DeclaredModel, version: str, dest: Path
) -> Package:
    """The signed package of a registered version: its bundle as deployment writes it, and its
    lineage from MLflow and the release audit."""
    with tempfile.TemporaryDirectory(prefix="shipway-package-") as tmp:
        bundle = registered_bundle(uri, declared.declaration, version, Path(tmp) / "bundle")
        return package_bundle(home, uri, declared.declaration, bundle.path, dest)


def version_card(home: ShipwayHome, uri: str, declared: DeclaredModel, version: str) -> ModelCard:
    """The model card of a registered version (`shipway models card`)."""
    with tempfile.TemporaryDirectory(prefix="shipway-card-") as tmp:
        found = _candidate(uri, declared.name, version, Path(tmp))
        estimator = run_artifact(uri, found.run_id, ESTIMATOR_ARTIFACT, Path(tmp))
        return model_card(home, uri, declared.declaration, found, estimator)


def package_bundle(
    home: ShipwayHome, uri: str, declaration: ModelDeclaration, bundle_dir: Path, dest: Path
) -> Package:
    """The signed package of a registered version's bundle in `bundle_dir` (e.g. the one a
    deployment is about to serve), with its lineage from MLflow and the release audit, and its
    model card (also logged to the version's MLflow run)."""
    bundle = read_bundle(bundle_dir)
    model, version = bundle.model, bundle.version
    found = _candidate(uri, model, version, bundle_dir, bundle_dir / MODEL_FILE)
    card = model_card(home, uri, declaration, found, bundle_dir / ESTIMATOR_FILE)
    run = MlflowClient(uri).get_run(found.run_id)
    audit = Audit(home).entries(model, version)
    lineage = {
        "model": model,
        "version": version,
        "mlflow_run_id": found.run_id,
        "code_commit": found.tags.get("shipway.git_commit", "unrecorded"),
        "lock_sha256": found.tags.get("shipway.lock_sha256", "unrecorded"),
        "artifact_sha256": found.tags.get("shipway.artifact_sha256"),
        "data_versions": found.data_versions,
        "training_set_version": found.training_set_version,
        "feature_service": found.feature_service,
        "feature_version": found.feature_version,
        "parameters": found.training_params,
        "metrics": dict(run.data.metrics),
        "release": [
            {"event": e.event, "state": e.state, "actor": e.actor, "at": e.at.isoformat()}
            for e in audit
        ],
    }
    package = build_package(
        bundle_dir, lineage, found.features, dest, signing_key(), card_documents(card)
    )
    log_card(uri, card)
    return package
