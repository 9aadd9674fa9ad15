"""What a rollout's decisions do beyond the serving weights: each is appended to the release
audit, and a promotion moves MLflow's `champion` alias. The controller is handed these
(`shipway.rollout.controller.Controller`), so it can be tested without either."""

from __future__ import annotations

from collections.abc import Callable

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from shipway.models.tracking import CHAMPION
from shipway.paths import ShipwayHome
from shipway.release.audit import Audit, AuditEntry
from shipway.rollout.controller import Decision
from shipway.rollout.state import RolloutState

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
