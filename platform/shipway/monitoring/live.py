"""A served model's live monitoring from the lake: its prediction log against the labels as
they land (quality), against each version's training reference day by day (drift), and
against Feast's point-in-time offline vectors (training/serving skew).

The `<model>_live_quality`, `<model>_live_drift` and `<model>_feature_skew` assets
(`shipway.defs.monitoring`) call these and show the results; the pure computations are
`shipway.monitoring.quality`, `.live_drift` and `.skew`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from shipway.data.lake import read_table, table_exists
from shipway.errors import ShipwayError
from shipway.features.service import feature_frame, registry_spec
from shipway.features.store import feature_store, historical_features
from shipway.features.version_store import features_home, is_built
from shipway.models.catalog import DeclaredModel
from shipway.models.estimation import QualityEstimator
from shipway.monitoring.figures import markdown_image, plt
from shipway.monitoring.live_drift import DailyDrift, daily_drift
from shipway.monitoring.quality import QualityReport, live_quality
from shipway.monitoring.skew import SkewReport, as_floats, feature_skew
from shipway.names import EVENT_TIMESTAMP
from shipway.paths import ShipwayHome
from shipway.serving.bundle import ESTIMATOR_FILE, REFERENCE_FILE, read_bundle
from shipway.serving.prediction_log import maintain, read_predictions
from shipway.stats.drift import DriftRules, ReferenceProfile


def label_rows(
    home: ShipwayHome, declared: DeclaredModel, columns: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """The label table's `columns` (and its key columns), with each row's prediction key."""
    declaration = declared.declaration
    label = declaration.label
    path = home.table(label.table)
    if not table_exists(path):
        raise ShipwayError(
            f"label table {label.table} does not exist yet: land events and build it first"
        )
    keys = [label.row_id] if label.row_id else [*declaration.entity_keys]
    frame = read_table(path, columns=list(dict.fromkeys([*keys, EVENT_TIMESTAMP, *columns])))
    row_keys = declared.prediction_keys(frame)
    assert row_keys is not None, "the catalog checked the label table's key columns"
    return frame, row_keys


def labels_of(home: ShipwayHome, declared: DeclaredModel) -> pd.DataFrame:
    """The label table as `row_key`, `label`, `available_at`, `event_timestamp`, and the
    columns the release's cost model prices by."""
    label = declared.declaration.label
    cost = declared.declaration.release.cost
    priced = cost.columns if cost is not None else []
    extra = [label.available_at] if label.available_at else []
    frame, row_keys = label_rows(home, declared, [label.column, *extra, *priced])
    available = (
        pd.to_datetime(frame[label.available_at], utc=True)
        if label.available_at
        else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    )
    return pd.DataFrame(
        {
            "row_key": row_keys,
            "label": frame[label.column].astype(float).to_numpy(),
            "available_at": available.to_numpy(),
            EVENT_TIMESTAMP: pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True).to_numpy(),
            **{column: frame[column].to_numpy() for column in priced},
        }
    )


def entity_rows_of(home: ShipwayHome, declared: DeclaredModel, columns: list[str]) -> pd.DataFrame:
    """The label table's rows as the requests they were: `row_key` and the lookup's columns."""
    frame, row_keys = label_rows(home, declared, columns)
    frame[EVENT_TIMESTAMP] = pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True)
    return frame.assign(row_key=row_keys)


@dataclass(frozen=True)
class LiveQuality:
    report: QualityReport
    predictions: int
    upkeep: dict[str, int]
    """What the prediction log's upkeep did: rows past retention deleted, files compacted."""


def refresh_live_quality(home: ShipwayHome, declared: DeclaredModel) -> LiveQuality:
    """Keep the prediction log in shape (retention, compaction), join it with the labels as of
    the lake's newest event, and save the report where the control plane exports it."""
    declaration = declared.declaration
    name, policy = declaration.name, declaration.monitoring
    upkeep = maintain(home.lake, name, policy.prediction_log_retention_days)
    predictions = read_predictions(home.lake, name)
    labels = labels_of(home, declared)
    as_of = pd.Timestamp(labels[EVENT_TIMESTAMP].max()).to_pydatetime()
    estimators = {}
    for version in sorted(set(predictions["version"].astype(str))):
        path = home.served.bundle(name, version) / ESTIMATOR_FILE
        if path.is_file():
            estimators[version] = QualityEstimator.load(path)
    report = live_quality(
        name,
        declaration.problem,
        predictions,
        labels,
        as_of,
        policy,
        estimators,
        declaration.release.cost,
    )
    report.save(home.served.quality_reports / f"{name}.json")
    return LiveQuality(report, len(predictions), upkeep)


def quality_figure(report: QualityReport, metric: str) -> str:
    """Daily live `metric` and label coverage per version, as a markdown image."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for version in sorted({q.version for q in report.daily}):
        days = [q for q in report.daily if q.version == version]
        x = [pd.Timestamp(q.day) for q in days]
        top.plot(x, [q.metrics.get(metric, float("nan")) for q in days], marker="o")
        bottom.plot(x, [q.coverage for q in days], marker=".", label=f"v{version}")
    top.set_ylabel(f"live {metric}")
    bottom.set_ylabel("label coverage")
    bottom.legend(loc="best")
    fig.autofmt_xdate()
    return markdown_image(fig, f"live {metric} by day")


@dataclass(frozen=True)
class LiveDrift:
    days: list[DailyDrift]
    predictions: int
    versions: list[str]
    """The versions whose drift is shown: those with a bundle (and reference) left."""


def live_drift(home: ShipwayHome, declared: DeclaredModel, log: Callable[[str], None]) -> LiveDrift:
    """Each served version's prediction log of the last `window_days`, day by day, against the
    version's training reference with the rules its bundle serves with."""
    declaration = declared.declaration
    name, policy = declaration.name, declaration.monitoring
    since = datetime.now(UTC) - timedelta(days=policy.window_days)
    predictions = read_predictions(home.lake, name, since=since)
    versions: dict[str, tuple[ReferenceProfile, DriftRules]] = {}
    for version in sorted(set(predictions["version"])):
        folder = home.served.bundle(name, str(version))
        if (folder / REFERENCE_FILE).is_file():
            bundle = read_bundle(folder)
            versions[str(version)] = (bundle.reference, bundle.drift)
        else:
            log(f"{name} v{version} has no bundle left: its drift is not shown")
    return LiveDrift(daily_drift(predictions, versions), len(predictions), list(versions))


def skew_report(home: ShipwayHome, declared: DeclaredModel) -> SkewReport:
    """The served vectors of the last window against their point-in-time offline vectors,
    each row's from its own feature version's tables and registry (the working tree's for rows
    logged before versions were recorded). Rows of a version no longer built (collected:
    nothing serves it) are left out."""
    declaration = declared.declaration
    name, policy = declaration.name, declaration.monitoring
    since = datetime.now(UTC) - timedelta(days=policy.window_days)
    predictions = read_predictions(home.lake, name, since=since)
    built = {v: not v or is_built(home, v) for v in set(predictions["feature_version"])}
    predictions = predictions[predictions["feature_version"].map(built)]
    latest = predictions.sort_values("at").drop_duplicates("row_key", keep="last")
    version_of = dict(zip(latest["row_key"], latest["feature_version"], strict=True))
    spec = registry_spec(feature_store(home), declaration.feature_service)
    columns = list(dict.fromkeys([*spec.join_keys, *spec.request_fields, EVENT_TIMESTAMP]))
    rows = entity_rows_of(home, declared, columns)

    def offline(matched: pd.DataFrame) -> pd.DataFrame:
        parts = []
        versions = matched["row_key"].map(version_of).fillna("")
        for version, group in matched.groupby(versions):
            store = feature_store(features_home(home, str(version)))
            own = registry_spec(store, declaration.feature_service)
            joined = historical_features(store, group[[*columns, "row_key"]], own.name)
            joined = joined.set_index("row_key").loc[group["row_key"]].reset_index()
            parts.append(as_floats(feature_frame(joined, own)).set_axis(group.index))
        return pd.concat(parts).loc[matched.index]

    return feature_skew(
        name, predictions, rows, offline, policy.skew, datetime.now(UTC).isoformat()
    )
