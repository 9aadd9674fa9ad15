"""Deploying a released version: its bundle (signed, with a signing key at hand) served beside
the champion, and its rollout started. The first version takes all traffic at once and
becomes the `champion`; a later one starts in shadow or at its first canary step, and
`<model>_rollout_sensor` takes it from there.

What `<model>_deployment` (`shipway.defs.deployment`) runs; testable without Dagster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlflow.tracking import MlflowClient

from shipway.errors import ShipwayError
from shipway.models.declaration import ModelDeclaration, RolloutPolicy
from shipway.models.tracking import CHAMPION, RELEASE_TAG, champion_version
from shipway.models.training import registered_bundle
from shipway.paths import ShipwayHome
from shipway.release.audit import RELEASABLE, Audit, AuditEntry
from shipway.release.commands import package_bundle
from shipway.release.report import AWAITING_APPROVAL
from shipway.rollout.controller import Decision, Serving, start
from shipway.rollout.effects import recorder
from shipway.rollout.state import RolloutState, RolloutStore
from shipway.serving.package import signing_configured


class Deployer(Serving, Protocol):
    """Serving as a deployment uses it: the embedded control plane's client or Seldon Core."""

    def deploy(self, model: str, version: str, bundle: Path) -> dict[str, Any]: ...

    def endpoint(self, model: str) -> str: ...


class Log(Protocol):
    def info(self, msg: str, *args: Any) -> None: ...

    def warning(self, msg: str, *args: Any) -> None: ...


@dataclass(frozen=True)
class Deployment:
    version: str
    release: AuditEntry
    """The audit entry that released it (the gate's promotion, or a person's approval)."""
    champion: str | None
    """The champion it rolls out against; None: it is the champion."""
    rollout: RolloutState
    bundle: Path
    """What serving loads: the signed package's bundle, or the plain bundle."""
    signed_by: str
    endpoint: str


class Rolled(Protocol):
    """What a rollout needs of a declaration: a model's or an LLM application's."""

    @property
    def name(self) -> str: ...

    @property
    def rollout(self) -> RolloutPolicy: ...


def begin(
    home: ShipwayHome,
    declaration: Rolled,
    client: Serving,
    challenger: str,
    champion: str | None,
    dagster_run_id: str,
) -> RolloutState:
    """Start `challenger`'s rollout against `champion` (None: it is the first version) and
    serve its first point: shadow, the first canary step, or all traffic."""
    store = RolloutStore(home.served.rollouts)
    policy = declaration.rollout
    with store.locked(declaration.name):
        current = store.load(declaration.name)
        if current is not None and not current.finished and current.challenger != challenger:
            raise ShipwayError(
                f"{declaration.name} v{current.challenger} is still rolling out ({current.phase}); "
                f"`shipway rollout abort {declaration.name}` or wait for it before v{challenger}"
            )
        if current is not None and current.challenger == challenger:
            return current
        state = start(declaration.name, challenger, champion, policy, time.time())
        # Audited before it takes effect: a start the audit cannot hold does not happen.
        recorder(home, dagster_run_id)(state, Decision("start", state.reason))
        store.save(state)
        weights, shadow = state.traffic(policy)
        client.set_traffic(declaration.name, weights, shadow)
    return state


def baseline(model: str, version: str, champion: str | None, running: Any) -> str | None:
    """The champion `version` rolls out against: None when there is none yet (or it is this
    version). A champion that serving does not run is no reason to skip the canary: it stops
    the deployment, saying how to serve the champion again."""
    if champion is None or champion == version:
        return None
    if champion not in running:
        raise ShipwayError(
            f"{model} v{version} would roll out against champion v{champion}, which serving "
            f"does not run (it runs {sorted(running) or 'nothing'}); nothing was deployed. Serve "
            f"v{champion} again first: run {model}_release with run tag "
            f"shipway/model_version={champion}"
        )
    return champion


def deploy_release(
    home: ShipwayHome,
    declaration: ModelDeclaration,
    tracking_uri: str,
    client: Deployer,
    version: str,
    dagster_run_id: str,
    log: Log,
    fault: dict[str, float] | None = None,
) -> Deployment | None:
    """Serve `version` and start its rollout; None when it awaits a person's approval (and
    nothing is deployed). A version its gate did not release is refused, naming its state.
    `fault` serves it with injected errors and latency (rehearsing a rollback)."""
    name = declaration.name
    state = Audit(home).state(name, version)
    if state is not None and state.state == AWAITING_APPROVAL:
        log.warning(
            "%s v%s awaits approval (%s); nothing deployed. `shipway models approve %s %s "
            "--reason ...` records it, and %s deploys it",
            name,
            version,
            "; ".join(state.details.get("approval_reasons", [])),
            name,
            version,
            declaration.release_sensor,
        )
        return None
    if state is None or state.state not in RELEASABLE:
        raise ShipwayError(
            f"{name} v{version} is not released ({RELEASE_TAG}="
            f"{state.state if state else 'never gated'}); nothing was deployed. Materialize "
            f"{name} to train and gate a new version"
        )
    registry = MlflowClient(tracking_uri)
    # Before anything is served: an unreadable registry, or a champion serving does not run,
    # stops the deployment instead of releasing at 100% without a canary.
    running = client.status().get(name, {}).get("versions", {})
    champion = baseline(name, version, champion_version(tracking_uri, name), running)
    bundle = registered_bundle(
        tracking_uri, declaration, version, home.served.bundle(name, version), fault=fault
    )
    if bundle.fault:
        log.warning("%s v%s is served with injected faults %s", name, version, bundle.fault)
    served, signed_by = bundle.path, ""
    if signing_configured():
        package = package_bundle(home, tracking_uri, declaration, bundle.path, home.served.packages)
        served, signed_by = package.bundle, package.key_id
        log.info(
            "%s v%s packaged and signed with key %s: %s", name, version, signed_by, package.path
        )
    client.deploy(name, version, served)
    rollout = begin(home, declaration, client, version, champion, dagster_run_id)
    if champion is None:
        registry.set_registered_model_alias(name, CHAMPION, version)
        log.info("%s v%s is the champion with 100%% of traffic", name, version)
    else:
        policy = declaration.rollout
        log.info(
            "%s v%s deployed beside champion v%s: %s rollout started at %s; %s moves it "
            "through %s%% every %ss",
            name,
            version,
            champion,
            policy.strategy,
            rollout.phase,
            declaration.rollout_sensor,
            policy.steps,
            policy.interval_seconds,
        )
    return Deployment(version, state, champion, rollout, served, signed_by, client.endpoint(name))
