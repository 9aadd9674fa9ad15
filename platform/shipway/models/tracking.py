"""MLflow: the tracking server Shipway starts, and the lineage it records with every run."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from shipway.errors import ServiceError
from shipway.git import git
from shipway.paths import REPO_ROOT, ShipwayHome
from shipway.processes import LOOPBACK, ManagedProcess, ensure_port_free

CHAMPION = "champion"
CHALLENGER = "challenger"
# Model version tag mirroring the release state in the audit table: promoted, blocked,
# awaiting_approval, insufficient_evidence, approved or rejected.
RELEASE_TAG = "shipway.release"


def mlflow_server_process(home: ShipwayHome, port: int) -> ManagedProcess:
    """An MLflow tracking server with a SQLite backend and local artifacts, on 127.0.0.1."""
    ensure_port_free(port, "MLflow server")
    home.mlflow.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    return ManagedProcess(
        name="mlflow server",
        argv=[
            str(mlflow),
            "server",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{home.mlflow / 'mlflow.db'}",
            "--artifacts-destination",
            str(home.mlflow / "artifacts"),
            "--serve-artifacts",
        ],
        log_path=home.logs / "mlflow.log",
        ready_url=f"http://{LOOPBACK}:{port}/health",
        ready_timeout=180.0,
    )


def git_commit() -> str:
    """The code commit a run was trained from; `unknown` outside a git checkout."""
    try:
        sha = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def lock_hash() -> str:
    """sha256 of uv.lock: the locked environment a run was trained in."""
    lock = REPO_ROOT / "uv.lock"
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else "unknown"


# What MLflow answers when a model has no alias of that name (or is not registered yet).
_NO_ALIAS = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def champion_version(tracking_uri: str, model: str) -> str | None:
    """The version MLflow's `champion` alias names, None when the model has none yet. Any other
    failure (the registry unreachable, a refused read) raises, naming it: a gate or a
    deployment never takes a registry it cannot read for "no champion", which would release a
    version without comparing it and without a canary."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient(tracking_uri).get_model_version_by_alias(model, CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code in _NO_ALIAS and "not found" in str(exc).lower():
            return None
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise ServiceError(
            f"the MLflow registry at {tracking_uri} cannot say which {model} version is the "
            f"champion ({exc.error_code}: {str(exc)[:300]}); nothing is released until it can"
        ) from None


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def registered_run_url(tracking_uri: str, model: str, version: str) -> str:
    """The MLflow run page of a registered version (its artifacts hold the release report)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run_id = client.get_model_version(model, version).run_id or ""
    experiment = client.get_run(run_id).info.experiment_id if run_id else "0"
    return run_url(tracking_uri, experiment, run_id)


def model_version_url(tracking_uri: str, model: str, version: str) -> str:
    return f"{tracking_uri.rstrip('/')}/#/models/{model}/versions/{version}"
