"""`/metrics` never fails as a whole: a state or report file with a wrong-typed value, or a
folder where the file should be, is a missing series plus a count, and every other file's
series are exported as they were."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shipway.features.online_state import OnlineState, ViewState
from shipway.features.server import FeatureServer
from shipway.monitoring.quality import Quality, QualityCollector, QualityReport
from shipway.monitoring.skew import FeatureSkew, SkewCollector, SkewReport
from shipway.paths import ServingHome, ShipwayHome
from shipway.rollout.metrics import RolloutCollector
from shipway.rollout.state import RolloutState, RolloutStore
from shipway.scrape import FileErrors
from shipway.serving.control_plane import ControlPlane
from shipway.serving.dataplane import DataPlane
from tests.conftest import tree_paths


def _documents(model: str) -> dict[str, dict[str, Any]]:
    """A valid file of each kind the collectors read, for `model`."""
    rollout = RolloutState(
        model, "2", "1", "canary", 0, 0.0, 0.0, decisions=[{"analysis": {"success_rate": 0.99}}]
    )
    quality = QualityReport(
        model,
        "2026-10-01T00:00:00",
        "2026-09-24T00:00:00",
        [Quality("1", 100, 40, {"roc_auc": 0.9}, "", {"roc_auc": 0.88}, {"roc_auc": -0.02})],
        [],
    )
    skew = SkewReport(model, 50, 40, [FeatureSkew("amount", 40, 2, 0.5)], 0.01, 20)
    online = {"views": {f"{model}_view": asdict(ViewState(f"{model}_table", 0.0, 1e9, 1, 1e9))}}
    return {"rollout": asdict(rollout), "quality": asdict(quality), "skew": asdict(skew)} | {
        "online": online
    }


def _place(root: Path, kind: str, model: str) -> Path:
    """Where a file of `kind` lives, as the collectors look for it."""
    served = ShipwayHome(root).served
    folder = {
        "rollout": served.rollouts,
        "quality": served.quality_reports,
        "skew": served.skew_reports,
    }.get(kind)
    if folder is None:
        return OnlineState.path(ShipwayHome(root))
    return folder / f"{model}.json"


def _scrape(root: Path) -> str:
    """Both `/metrics` that read files: the control plane's and the feature service's."""
    served = ServingHome(root / "serving")
    errors = FileErrors(served.root)
    plane = ControlPlane(
        served.root,
        DataPlane(root / "dataplane"),
        root / "logs",
        None,
        collectors=[
            RolloutCollector(RolloutStore(served.rollouts), errors),
            QualityCollector(served.quality_reports, errors),
            SkewCollector(served.skew_reports, errors),
            errors,
        ],
    )
    features = FeatureServer(ShipwayHome(root))
    return generate_latest(plane.registry).decode() + generate_latest(features.registry).decode()


def _series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.startswith(("shipway_state_file_errors", "shipway_feature_freshness"))
        and s.name.startswith(("shipway_rollout", "shipway_live", "shipway_label", "shipway_est",
                               "shipway_feature_skew", "shipway_feature_online"))
    }  # fmt: skip


def _write(root: Path, kind: str, model: str, document: Any) -> Path:
    path = _place(root, kind, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def _replaced(document: Any, at: tuple[object, ...], value: Any) -> Any:
    if not at:
        return value
    copy = json.loads(json.dumps(document))
    holder = copy
    for step in at[:-1]:
        holder = holder[step]
    holder[at[-1]] = value
    return copy


_wrong = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


@pytest.fixture
def good(tmp_path: Path) -> tuple[Path, set[Any]]:
    """A home with one good file of each kind, and the series they export."""
    root = tmp_path / "home"
    for kind, document in _documents("good_model").items():
        _write(root, kind, "good_model", document)
    series = _series(_scrape(root))
    assert {name for name, _, _ in series} >= {
        "shipway_rollout_phase",
        "shipway_rollout_analysis",
        "shipway_live_quality",
        "shipway_estimated_quality_error",
        "shipway_feature_skew_share",
        "shipway_feature_online_lag_seconds",
    }
    return root, series


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_wrong_typed_value_in_any_file_never_fails_the_scrape_or_another_file_s_series(
    good: tuple[Path, set[Any]], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    source, series = good
    root = tmp_path_factory.mktemp("scrape") / "home"
    shutil.copytree(source, root)
    kind = data.draw(st.sampled_from(["rollout", "quality", "skew", "online"]))
    document = _documents("bad_model")[kind]
    at = data.draw(st.sampled_from([(), *tree_paths(document)]))
    if kind == "online":
        # One online state file per home: the good model's views are what is corrupted.
        document = _documents("good_model")["online"]
        at = data.draw(st.sampled_from([(), *tree_paths(document)]))
    _write(root, kind, "bad_model", _replaced(document, at, data.draw(_wrong)))
    text = _scrape(root)
    exported = _series(text)
    kept = {s for s in series if kind != "online" or not s[0].startswith("shipway_feature_online")}
    assert kept <= exported, sorted(kept - exported)


@pytest.mark.parametrize(
    ("kind", "at", "value"),
    [
        ("rollout", ("challenger",), 2),  # a version as a number
        ("rollout", ("decisions", 0), "promote"),  # a decision that is not an object
        ("rollout", ("decisions", 0, "analysis", "success_rate"), "high"),  # a metric as text
        ("quality", ("window", 0, "version"), 1),
        ("quality", ("window", 0, "metrics", "roc_auc"), "0.9"),
        ("quality", ("window", 0, "metrics"), [0.9]),
        ("skew", ("features", 0, "compared"), "forty"),
        ("skew", ("model",), None),
        ("online", ("views", "bad_model_view", "window_end"), "yesterday"),
    ],
)
def test_a_named_corruption_is_a_missing_series_and_a_count(
    good: tuple[Path, set[Any]], kind: str, at: tuple[Any, ...], value: Any
) -> None:
    root, series = good
    # A home has one online state: the corrupted one replaces the good model's.
    document = _documents("bad_model")[kind]
    path = _write(root, kind, "bad_model", _replaced(document, at, value))
    text = _scrape(root)
    name = str(path.relative_to(root / "serving" if kind != "online" else root))
    assert f'shipway_state_file_errors_total{{file="{name}"}} 1.0' in text, text
    exported = _series(text)
    assert not [s for s in exported if "bad_model" in str(s)]
    others = {s for s in series if kind != "online" or "online" not in s[0]}
    assert others <= exported


@pytest.mark.parametrize("kind", ["rollout", "quality", "skew", "online"])
def test_a_folder_where_a_file_should_be_is_a_count_not_a_500(
    good: tuple[Path, set[Any]], kind: str
) -> None:
    root, series = good
    path = _place(root, kind, "bad_model")
    path.unlink(missing_ok=True)
    path.mkdir(parents=True)
    text = _scrape(root)
    assert "shipway_state_file_errors_total{file=" in text
    others = {s for s in series if kind != "online" or "online" not in s[0]}
    assert others <= _series(text)
