"""MLflow: the tracking server Shipway starts, and the lineage it records with every run."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from shipway.errors import ServiceError
from shipway.features.versions import UNRECORDED
from shipway.files import write_atomic
from shipway.git import git
from shipway.paths import REPO_ROOT, ShipwayHome
from shipway.processes import (
    LOOPBACK,
    ManagedProcess,
    ensure_port_free,
    environment,
    safe_environment,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
# Model version tag mirroring the release state in the audit table: promoted, blocked,
# awaiting_approval, insufficient_evidence, approved or rejected.
RELEASE_TAG = "shipway.release"
# Run and model version tag: the feature version the version was trained on (the training
# set's lineage `feature_version`, `shipway.features.versions`).
FEATURE_VERSION_TAG = "shipway.feature_version"


USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
PLATFORM_USER = "shipway"
"""MLflow's admin: the platform, which registers versions and moves aliases (`champion`)."""
VIEWER_USER = "viewer"
"""People: read everything (MLflow's default permission), change nothing."""
AUTHORIZATION_FUNCTION = "shipway.models.tracking_auth:authenticate"
"""MLflow's password check, then only the platform may change anything (`tracking_auth`)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def environment(self) -> dict[str, str]:
        """What MLflow's client reads (every request carries them)."""
        return {USERNAME_ENV: self.username, PASSWORD_ENV: self.password}


# The server's own secret (Flask's, for CSRF tokens), kept beside the users' passwords.
_SERVER_SECRET = "server_secret"


def _secrets(home: ShipwayHome) -> dict[str, str]:
    """A home's MLflow passwords and server secret, made on first use and kept owner-only
    (`<home>/mlflow/credentials.json`, mode 0600); never printed, never logged."""
    path = home.mlflow / "credentials.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    names = (PLATFORM_USER, VIEWER_USER, _SERVER_SECRET)
    if any(name not in known for name in names):
        known = {name: known.get(name) or secrets.token_urlsafe(24) for name in names}
        write_atomic(path, json.dumps(known), mode=0o600)
    return known


def credentials(home: ShipwayHome, user: str = PLATFORM_USER) -> Credentials:
    """A home's MLflow credentials for `user` (the platform's by default)."""
    return Credentials(user, _secrets(home)[user])


def use_platform_credentials(home: ShipwayHome) -> None:
    """For a command run by hand (`shipway models ...`): the home's platform credentials,
    unless the environment names others."""
    if not os.environ.get(USERNAME_ENV) and (home.mlflow / "credentials.json").exists():
        os.environ.update(credentials(home).environment())


def mlflow_server_process(home: ShipwayHome, port: int) -> ManagedProcess:
    """An MLflow tracking server on 127.0.0.1 with a SQLite backend, local artifacts and
    MLflow's own authentication (`--app-name basic-auth`): every request needs a user; the
    platform's may change anything, everyone else may only read (`default_permission = READ`,
    and `tracking_auth` refuses any other user's creating or changing anything, which MLflow's
    permissions alone allow), so only the platform registers models and moves the `champion`
    alias a gate compares against and a deployment trusts."""
    ensure_port_free(port, "MLflow server")
    home.mlflow.mkdir(parents=True, exist_ok=True)
    admin = credentials(home)
    config = write_atomic(
        home.mlflow / "basic_auth.ini",
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{home.mlflow / 'basic_auth.db'}\n"
        f"admin_username = {admin.username}\n"
        f"authorization_function = {AUTHORIZATION_FUNCTION}\n"
        # A password check is a scrypt hash, ~75 ms of CPU: without the cache every request of
        # a training run pays it. A password changed through the API takes effect at once on
        # the worker that changed it, on the others within the TTL.
        "auth_cache_ttl_seconds = 60\n",
        mode=0o600,
    )
    mlflow = Path(sys.executable).with_name("mlflow")
    return ManagedProcess(
        name="mlflow server",
        argv=[
            str(mlflow),
            "server",
            "--app-name",
            "basic-auth",
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
        env={
            **safe_environment(),
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            # Read when the user store is empty: the admin is created with it, once.
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin.password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": _secrets(home)[_SERVER_SECRET],
        },
        inherit_environment=False,
        ready_timeout=180.0,
    )


def ensure_viewer(tracking_uri: str, home: ShipwayHome) -> None:
    """The read-only user people log in to MLflow's UI with (password in the home's
    credentials file), made by the platform's admin once."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    viewer = credentials(home, VIEWER_USER)
    with environment(credentials(home).environment()):
        auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
        try:
            auth.get_user(viewer.username)
        except MlflowException:
            auth.create_user(viewer.username, viewer.password)


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


def run_artifact(tracking_uri: str, run_id: str, artifact_path: str, dest: Path) -> Path | None:
    """A run's artifact (`folder/file`) downloaded into `dest`, or None when the run has none
    (a version trained or gated before the platform logged it)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    folder = artifact_path.rsplit("/", 1)[0]
    logged = {a.path for a in MlflowClient(tracking_uri).list_artifacts(run_id, folder)}
    if artifact_path not in logged:
        return None
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=str(dest),
            tracking_uri=tracking_uri,
        )
    )


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


def feature_version_users(tracking_uri: str, model: str) -> dict[str, list[str]]:
    """Feature version → the model's registered versions trained on it, each with its aliases
    and release state (`v2 (champion, promoted)`), newest first."""
    from mlflow.tracking import MlflowClient

    users: dict[str, list[str]] = {}
    found = MlflowClient(tracking_uri).search_model_versions(f"name = '{model}'")
    for mv in sorted(found, key=lambda v: -int(v.version)):
        phase = [*sorted(mv.aliases or []), mv.tags.get(RELEASE_TAG, "not gated yet")]
        digest = mv.tags.get(FEATURE_VERSION_TAG, UNRECORDED)
        users.setdefault(digest, []).append(f"v{mv.version} ({', '.join(phase)})")
    return users
