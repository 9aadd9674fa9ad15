"""Serving an LLM application's gated version: its bundle from MLflow, deployed beside the
champion, and its rollout started (shadow, canary steps), as a model's is
(`shipway.rollout.deploy`). The first version is the champion at once; a later one becomes
champion when its rollout promotes it, and the `champion` alias of its prompt moves with it."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from shipway.errors import ShipwayError
from shipway.models.application import DeclaredApplication, download_version
from shipway.models.tracking import RELEASE_TAG, champion_version
from shipway.paths import ShipwayHome
from shipway.release.application_gate import set_champion
from shipway.release.report import PROMOTED
from shipway.rollout.deploy import Deployer, Log, baseline, begin
from shipway.rollout.state import RolloutState
from shipway.serving.bundle import APPLICATION_FILE, CORPUS_FILE, write_application_bundle


@dataclass(frozen=True)
class ApplicationDeployment:
    version: str
    champion: str | None
    rollout: RolloutState
    bundle: Path
    endpoint: str


def deploy_application(
    home: ShipwayHome,
    app: DeclaredApplication,
    tracking_uri: str,
    client: Deployer,
    version: str,
    dagster_run_id: str,
    log: Log,
    fault: dict[str, float] | None = None,
) -> ApplicationDeployment:
    """Serve `version` and start its rollout. A version its gate did not pass is refused."""
    d = app.declaration
    name = d.name
    registry = MlflowClient(tracking_uri)
    verdict = registry.get_model_version(name, version).tags.get(RELEASE_TAG)
    if verdict != PROMOTED:
        raise ShipwayError(
            f"{name} v{version} is not released ({RELEASE_TAG}={verdict or 'never gated'}); "
            f"nothing was deployed. Materialize {name} to build and gate a new version"
        )
    running = client.status().get(name, {}).get("versions", {})
    champion = baseline(name, version, champion_version(tracking_uri, name), running)
    with tempfile.TemporaryDirectory() as tmp:
        folder = download_version(tracking_uri, name, version, Path(tmp))
        bundle = write_application_bundle(
            home.served.bundle(name, version),
            name,
            version,
            json.loads((folder / APPLICATION_FILE).read_text()),
            pd.read_parquet(folder / CORPUS_FILE),
            fault=fault,
            replicas=d.serving.replicas,
        )
    if bundle.fault:
        log.warning("%s v%s is served with injected faults %s", name, version, bundle.fault)
    client.deploy(name, version, bundle.path)
    rollout = begin(home, d, client, version, champion, dagster_run_id)
    if champion is None:
        set_champion(tracking_uri, app, version)
        log.info("%s v%s is the champion with 100%% of traffic", name, version)
    else:
        log.info(
            "%s v%s deployed beside champion v%s: %s rollout started at %s; %s moves it",
            name, version, champion, d.rollout.strategy, rollout.phase, d.rollout_sensor,
        )  # fmt: skip
    return ApplicationDeployment(version, champion, rollout, bundle.path, client.endpoint(name))
