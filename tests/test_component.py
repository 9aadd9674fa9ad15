"""The model component's run-scoped version: a gate and a deployment act on the version their
own run trained, never on whatever another run materialized last."""

from __future__ import annotations

import pytest
from dagster import (
    DagsterInstance,
    MaterializeResult,
    asset,
    materialize,
)

from shipway.defs.versions import latest_model_version, version_in_run
from shipway.errors import ShipwayError


def _trainer(version: str):  # type: ignore[no-untyped-def]
    @asset(name="fraud_model")
    def trained() -> MaterializeResult:
        return MaterializeResult(metadata={"model_version": version})

    return trained


def test_each_run_sees_its_own_version_while_the_latest_moves_on() -> None:
    with DagsterInstance.ephemeral() as instance:
        first = materialize([_trainer("7")], instance=instance)
        second = materialize([_trainer("8")], instance=instance)
        assert version_in_run(instance, first.run_id, "fraud_model") == "7"
        assert version_in_run(instance, second.run_id, "fraud_model") == "8"
        assert latest_model_version(instance, "fraud_model") == "8"
        assert version_in_run(instance, first.run_id, "customer_spend") is None


def test_a_model_never_materialized_is_named() -> None:
    with (
        DagsterInstance.ephemeral() as instance,
        pytest.raises(
            ShipwayError, match="fraud_model has no materialization yet: materialize it first"
        ),
    ):
        latest_model_version(instance, "fraud_model")
