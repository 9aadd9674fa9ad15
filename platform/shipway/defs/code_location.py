"""Shipway's Dagster code location, built from a folder of model declarations.

Shared upstream assets (raw events and their contract, dbt's tables, the Feast repository and
online store) appear once; each declared model adds its own component's definitions. Resources
are configured at the edge (`shipway.defs.resources`), from the environment `shipway up`, the
demo and tests set. `assets/definitions.py` calls this; it only assembles.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions, build_defs_for_component

from shipway.defs.applications import application_definitions, help_centre_definitions
from shipway.defs.component import ShipwayModel
from shipway.defs.data import landing_definitions
from shipway.defs.dbt import dbt_models
from shipway.defs.features import feature_definitions
from shipway.defs.resources import resources
from shipway.models.application import DeclaredApplication
from shipway.models.catalog import DeclaredModel, keep_versions


def shared_definitions(
    raw_events_contract: Path, models: list[DeclaredModel] | None = None
) -> Definitions:
    """What every model builds on: landing, dbt, Feast, and the jobs that run them."""
    return Definitions.merge(
        landing_definitions(raw_events_contract),
        Definitions(assets=[dbt_models]),
        feature_definitions(keep_versions(models or [])),
    )


def code_location(
    models: list[DeclaredModel],
    raw_events_contract: Path,
    applications: list[DeclaredApplication] | None = None,
) -> Definitions:
    applications = applications or []
    return Definitions.merge(
        shared_definitions(raw_events_contract, models),
        *(build_defs_for_component(ShipwayModel(model)) for model in models),
        *([help_centre_definitions()] if applications else []),
        *(application_definitions(app) for app in applications),
        Definitions(resources=resources()),
    )
