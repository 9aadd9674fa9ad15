"""Where Shipway keeps its state on one machine (the embedded default).

Everything lives under one folder, `SHIPWAY_HOME` (default `.shipway/` in the repository),
so a demo or a test run is one `rm -rf` away from a clean slate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
FEATURE_REPO_DIR = REPO_ROOT / "feature_repo"
DEPLOY_DIR = REPO_ROOT / "deploy"
ASSETS_DIR = REPO_ROOT / "assets"
PLATFORM_DIR = REPO_ROOT / "platform"
# The raw-events contract every model's data passes, shared by all of them.
RAW_EVENTS_CONTRACT = ASSETS_DIR / "contracts" / "raw_events.yaml"


@dataclass(frozen=True)
class ServingHome:
    """Serving's folder: each version's bundle (`<model>/<version>/`), and what the control
    plane and the platform keep beside them. The one place that names each of these files."""

    root: Path

    def bundle(self, model: str, version: str) -> Path:
        return self.root / model / version

    @property
    def state(self) -> Path:
        """What the control plane serves, to serve it again after a restart."""
        return self.root / ".control" / "state.json"

    @property
    def control_lock(self) -> Path:
        """Held by the one control plane serving this home (its pid inside)."""
        return self.root / ".control" / "control.lock"

    @property
    def endpoint(self) -> Path:
        """Where `shipway up` left serving's URLs and token for people (owner-only)."""
        return self.root / ".control" / "endpoint.json"

    @property
    def callers(self) -> Path:
        """Who may call the front door and the feature service: each caller's key digest and
        rate limit (owner-only)."""
        return self.root / ".control" / "callers.json"

    @property
    def access(self) -> Path:
        """Each caller's access level and nothing else (no digest): the control plane writes it
        from `callers` for the model servers, which read the rights of the caller Envoy names."""
        return self.root / ".control" / "access.json"

    @property
    def answers(self) -> Path:
        """Which caller each LLM application answer was given to (SQLite, owner-only): a rating
        is taken only from the caller who received the answer."""
        return self.root / ".control" / "answers.sqlite"

    @property
    def service_restarts(self) -> Path:
        """How often `shipway up`'s supervisor started each service again, this run: the
        control plane exports it."""
        return self.root / ".control" / "restarts.json"

    @property
    def rollouts(self) -> Path:
        """One rollout state file per model."""
        return self.root / ".rollouts"

    @property
    def quality_reports(self) -> Path:
        """Each model's latest live-quality report, exported by the control plane."""
        return self.root / ".quality"

    @property
    def skew_reports(self) -> Path:
        """Each model's latest training/serving skew report, exported by the control plane."""
        return self.root / ".skew"

    @property
    def prediction_spool(self) -> Path:
        """Scored rows the model servers wrote, on their way to the prediction log."""
        return self.root / ".predictions"

    @property
    def dataplane(self) -> Path:
        """Envoy's configuration files (filesystem xDS)."""
        return self.root / ".dataplane"

    @property
    def packages(self) -> Path:
        """Signed packages the deployment serves, one folder per model version."""
        return self.root / "packages"

    @property
    def verified(self) -> Path:
        """The control plane's read-only copies of the packages it verified, by manifest
        digest: what model servers load, verified again at every start."""
        return self.root / ".verified"


@dataclass(frozen=True)
class ShipwayHome:
    root: Path

    @classmethod
    def from_env(cls) -> ShipwayHome:
        return cls(Path(os.environ.get("SHIPWAY_HOME", REPO_ROOT / ".shipway")).resolve())

    @property
    def lake(self) -> Path:
        """Delta tables: raw events, feature tables, training sets."""
        return self.root / "lake"

    def table(self, name: str) -> Path:
        return self.lake / name

    @property
    def warehouse(self) -> Path:
        """The DuckDB file dbt builds in before publishing its outputs to Delta."""
        return self.root / "warehouse.duckdb"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def feature_repo(self) -> Path:
        """The Feast repository this home's store is applied from (the working tree's)."""
        return FEATURE_REPO_DIR

    def serves_table(self, name: str) -> bool:
        """Whether this home's online store loads the feature views reading table `name`."""
        return True

    @property
    def feast_project(self) -> str | None:
        """The Feast project of this home's store; None: the repository's own (`shipway`)."""
        return None

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def serving(self) -> Path:
        return self.root / "serving"

    @property
    def served(self) -> ServingHome:
        """The files in `serving`, by name: state, reports, spool, packages."""
        return ServingHome(self.serving)

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    def prepare_dagster(self) -> Path:
        """DAGSTER_HOME: local SQLite storage under the home, no usage telemetry, and one op at a
        time per pool (the dbt builds share one DuckDB file, which one process writes)."""
        self.dagster.mkdir(parents=True, exist_ok=True)
        config = self.dagster / "dagster.yaml"
        if not config.exists():
            config.write_text(
                "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
            )
        return self.dagster

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def environment(self) -> dict[str, str]:
        """Variables that dbt's profile and Feast's feature_store.yaml read."""
        return {
            "SHIPWAY_HOME": str(self.root),
            "SHIPWAY_LAKE": str(self.lake),
            "SHIPWAY_WAREHOUSE": str(self.warehouse),
            "SHIPWAY_FEAST_DIR": str(self.feast),
        }
