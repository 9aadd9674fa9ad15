"""The declared models, as the commands see them: the code location's catalog, imported only
when a command needs it (importing it loads Dagster, dbt, Feast and MLflow)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shipway.models.catalog import DeclaredModel

DEFAULT_MODEL = "fraud_model"


def declared_models() -> list[DeclaredModel]:
    from assets.definitions import models

    return models


def model_named(model: str) -> DeclaredModel:
    """The declared model of that name, or a one-line error listing the declared ones."""
    from shipway.models.catalog import declared_model

    return declared_model(declared_models(), model)


def training_sets() -> list[str]:
    return [m.declaration.training_set for m in declared_models()]
