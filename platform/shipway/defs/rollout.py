"""Rollouts in Dagster: the deployment starts one (`shipway.rollout.deploy`),
`<model>_rollout_sensor` drives it with `shipway.rollout.controller`.

Every decision that changes something is an observation of `<model>_deployment` (analysis
values, checks, weights: the Dagster UI shows the rollout's history on the asset) and an entry
of the release audit. (No `from __future__ import annotations`: Dagster reads these hints.)
"""

import time
from collections.abc import Callable
from functools import partial

from dagster import (
    AssetKey,
    AssetObservation,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from shipway.defs.resources import (
    MlflowResource,
    PrometheusResource,
    ServingResource,
    ShipwayHomeResource,
)
from shipway.models.application import ApplicationDeclaration
from shipway.models.declaration import ModelDeclaration
from shipway.rollout.analysis import Analysis, analyse
from shipway.rollout.controller import Controller
from shipway.rollout.effects import champion_setter, recorder
from shipway.rollout.state import RolloutState, RolloutStore


def rollout_sensor(
    declaration: ModelDeclaration | ApplicationDeclaration,
    deployment: AssetKey,
    set_champion: Callable[[str, str], None] | None = None,
) -> SensorDefinition:
    """`set_champion(tracking_uri, version)` moves more than the model's alias on promotion
    (an application's prompt alias too)."""
    policy = declaration.rollout
    name = declaration.name
    monitoring = declaration.monitoring if isinstance(declaration, ModelDeclaration) else None

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
            return analyse(client, name, state.challenger, state.champion, seconds, monitoring)

        champion = (
            partial(set_champion, mlflow.tracking_uri)
            if set_champion
            else champion_setter(mlflow.tracking_uri, name)
        )
        controller = Controller(
            name,
            policy,
            RolloutStore(home.served.rollouts),
            serving.client(),
            champion,
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
