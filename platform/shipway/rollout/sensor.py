"""Rollouts in Dagster: the deployment starts one, `<model>_rollout_sensor` drives it.

Every decision that changes something is an observation of `<model>_deployment` (analysis
values, checks, weights: the Dagster UI shows the rollout's history on the asset) and an entry
of the release audit. (No `from __future__ import annotations`: Dagster reads these hints.)
"""

import time
from collections.abc import Callable

from dagster import (
    AssetKey,
    AssetObservation,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from shipway.errors import ShipwayError
from shipway.models.declaration import ModelDeclaration
from shipway.models.tracking import CHAMPION
from shipway.paths import ShipwayHome
from shipway.release.audit import Audit, AuditEntry
from shipway.resources import (
    MlflowResource,
    PrometheusResource,
    ServingResource,
    ShipwayHomeResource,
)
from shipway.rollout.analysis import Analysis, analyse
from shipway.rollout.controller import Controller, Decision, Serving, start
from shipway.rollout.state import RolloutState, RolloutStore

ROLLOUT_ACTOR = "rollout controller"


def recorder(
    home: ShipwayHome, dagster_run_id: str = ""
) -> Callable[[RolloutState, Decision], None]:
    def record(state: RolloutState, decision: Decision) -> None:
        Audit(home).append(
            AuditEntry(
                model=state.model,
                version=state.challenger,
                event="rollout",
                state=decision.action,
                actor=ROLLOUT_ACTOR,
                reason=decision.reason,
                dagster_run_id=dagster_run_id,
                details={
                    "champion": state.champion,
                    "phase": state.phase,
                    **decision.metadata(),
                },
            )
        )

    return record


def champion_setter(tracking_uri: str, model: str) -> Callable[[str], None]:
    def set_champion(version: str) -> None:
        registry = MlflowClient(tracking_uri)
        try:
            current = registry.get_model_version_by_alias(model, CHAMPION).version
        except MlflowException:
            current = None
        if current != version:
            registry.set_registered_model_alias(model, CHAMPION, version)

    return set_champion


def begin(
    home: ShipwayHome,
    declaration: ModelDeclaration,
    client: Serving,
    challenger: str,
    champion: str | None,
    dagster_run_id: str,
) -> RolloutState:
    """Start `challenger`'s rollout against `champion` (None: it is the first version) and
    serve its first point: shadow, the first canary step, or all traffic."""
    store = RolloutStore(home.serving)
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
        store.save(state)
        weights, shadow = state.traffic(policy)
        client.set_traffic(declaration.name, weights, shadow)
    recorder(home, dagster_run_id)(state, Decision("start", state.reason))
    return state


def rollout_sensor(declaration: ModelDeclaration, deployment: AssetKey) -> SensorDefinition:
    policy = declaration.rollout
    name = declaration.name

    @sensor(
        name=declaration.rollout_sensor,
        minimum_interval_seconds=max(5, policy.interval_seconds // 2),
        description=f"Drives {name}'s rollout ({policy.strategy}, steps {policy.steps}, every "
        f"{policy.interval_seconds}s): analyses Prometheus, moves traffic, promotes or rolls "
        "back. `shipway rollout status|pause|resume|promote|abort` for people.",
    )
    def drive(
        context: SensorEvaluationContext,
        lake: ShipwayHomeResource,
        mlflow: MlflowResource,
        serving: ServingResource,
        prometheus: PrometheusResource,
    ) -> SensorResult | SkipReason:
        home = lake.home
        client = prometheus.client()

        def analysis(state: RolloutState, seconds: int) -> Analysis:
            return analyse(
                client, name, state.challenger, state.champion, seconds, declaration.monitoring
            )

        controller = Controller(
            name,
            policy,
            RolloutStore(home.serving),
            serving.client(),
            champion_setter(mlflow.tracking_uri, name),
            recorder(home),
            analysis,
        )
        state, decision = controller.tick(time.time())
        if state is None or decision.action in ("wait", "paused", "done"):
            return SkipReason(decision.reason)
        context.log.info("%s v%s: %s", name, state.challenger, decision.reason)
        weights, shadow = state.traffic(policy)
        return SensorResult(
            asset_events=[
                AssetObservation(
                    asset_key=deployment,
                    metadata={
                        **decision.metadata(),
                        "model_version": state.challenger,
                        "champion": state.champion or "",
                        "phase": state.phase,
                        "traffic_weights": weights,
                        "shadow": shadow or "",
                    },
                )
            ]
        )

    return drive
