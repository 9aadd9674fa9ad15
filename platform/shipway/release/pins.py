"""Which feature versions models pin: what must stay built, online, and never be collected.

A version is pinned by every model version that serves (any weight, or as the shadow), and by
the model versions MLflow's `champion` and `challenger` aliases name (a challenger in rollout
or waiting for approval). Unreadable serving state or an unreachable registry is an error, not
"nothing pinned": collecting on a guess would delete what a served model reads.
"""

from __future__ import annotations

from shipway.errors import ServiceError
from shipway.features.versions import applied_versions
from shipway.models.tracking import CHALLENGER, CHAMPION, FEATURE_VERSION_TAG
from shipway.paths import ShipwayHome
from shipway.serving.state import SavedState

Pins = dict[str, list[str]]
"""Feature version digest → why it is pinned (`fraud_model v3 serves`)."""


def served_pins(home: ShipwayHome) -> Pins:
    pins: Pins = {}
    state = SavedState.load(home.served.state)
    for model in sorted(state.models):
        for version, bundle in sorted(state.bundles(model).items()):
            if bundle is None:
                raise ServiceError(
                    f"{model} v{version} serves from an unreadable bundle: its feature version "
                    "is unknown, so no version can be collected until it is redeployed"
                )
            if bundle.feature_version:
                pins.setdefault(bundle.feature_version, []).append(f"{model} v{version} serves")
    return pins


def registry_pins(tracking_uri: str) -> Pins:
    """The versions the `champion` and `challenger` aliases of every registered model name."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    pins: Pins = {}
    try:
        for model in client.search_registered_models():
            for alias in (CHAMPION, CHALLENGER):
                version = model.aliases.get(alias) if model.aliases else None
                if version is None:
                    continue
                found = client.get_model_version(model.name, str(version))
                digest = found.tags.get(FEATURE_VERSION_TAG)
                if digest:
                    pins.setdefault(digest, []).append(
                        f"{model.name} v{found.version} is the {alias}"
                    )
    except MlflowException as exc:
        raise ServiceError(
            f"the MLflow registry at {tracking_uri} cannot say which versions are champions "
            f"or challengers ({exc.error_code}); no feature version is collected until it can"
        ) from None
    return pins


def pinned(home: ShipwayHome, tracking_uri: str) -> Pins:
    """Every pinned version and why, from serving and the registry."""
    pins = served_pins(home)
    for digest, reasons in registry_pins(tracking_uri).items():
        pins.setdefault(digest, []).extend(reasons)
    return pins


def in_use(home: ShipwayHome, tracking_uri: str) -> Pins:
    """What is kept built: every pinned version, and the version each service's sources
    compute now (the next challenger trains on it)."""
    pins = pinned(home, tracking_uri)
    for service, digest in applied_versions(home).items():
        pins.setdefault(digest, []).append(f"{service}'s sources compute it now")
    return pins
