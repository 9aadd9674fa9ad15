"""Each model's live monitoring in Dagster: `<model>_live_quality`, `<model>_live_drift`,
`<model>_quality_sensor` and, when the policy names a cadence, `<model>_retrain_schedule`.

`<model>_live_quality` joins the prediction log with the model's label table as of the lake's
newest event, applies the log's retention, writes the report where the serving control plane
exports it to Prometheus (`shipway_live_quality`, `shipway_live_labelled_predictions`,
`shipway_label_coverage`), and shows it as metadata: the table per version and day, the
judged window's values as numbers (Dagster plots them across materializations), and a figure.
`<model>_live_drift` shows each served version's drift day by day (`monitoring.live_drift`).
(No `from __future__ import annotations`: Dagster reads these hints.)
"""

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)

# Not exported by dagster, but what `define_asset_job` returns and schedules take.
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from shipway.data.lake import read_table, table_exists
from shipway.errors import ShipwayError
from shipway.features.service import feature_frame, registry_spec
from shipway.features.store import feature_store, historical_features
from shipway.models.catalog import DeclaredModel
from shipway.monitoring.figures import markdown_image, plt
from shipway.monitoring.live_drift import daily_drift, figure, markdown
from shipway.monitoring.quality import QualityReport, live_quality
from shipway.monitoring.retraining import RetrainDecision, decide_quality
from shipway.monitoring.skew import SkewReport, as_floats, feature_skew
from shipway.paths import ShipwayHome
from shipway.resources import PrometheusResource, ShipwayHomeResource
from shipway.rollout.state import PROMOTED, RolloutStore
from shipway.serving.bundle import REFERENCE_FILE, read_bundle
from shipway.serving.prediction_log import maintain, read_predictions, table_name
from shipway.stats.drift import DriftRules, ReferenceProfile

WaitingForLabels = Callable[[SensorEvaluationContext, ShipwayHome], str | None]
"""Why a retrain now would learn nothing new (no label matured since the last training set),
or None."""


def retrain_tick(
    context: SensorEvaluationContext,
    home: ShipwayHome,
    model: str,
    trigger: str,
    decide: Callable[[], RetrainDecision],
    waiting: WaitingForLabels,
) -> SensorResult | SkipReason:
    """One tick of a retraining sensor (drift, quality): never during a rollout (checked before
    Prometheus is asked), nor without new labels; one run per decision's run key."""
    rollout = RolloutStore(home.serving).load(model)
    if rollout is not None and not rollout.finished:
        return SkipReason(
            f"{model} v{rollout.challenger} is rolling out ({rollout.phase}); {trigger} is "
            "judged again once it is promoted or rolled back"
        )
    decision = decide()
    if not decision.retrain:
        return SkipReason(decision.reason)
    why_not = waiting(context, home)
    if why_not is not None:
        return SkipReason(f"{trigger} seen ({decision.reason}); {why_not}")
    context.log.info(decision.reason)
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=decision.run_key,
                tags={"shipway/trigger": trigger, "shipway/reason": decision.reason[:200]},
            )
        ],
        cursor=decision.cursor,
    )


def _label_rows(
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
    frame = read_table(path, columns=list(dict.fromkeys([*keys, "event_timestamp", *columns])))
    row_keys = declared.prediction_keys(frame)
    assert row_keys is not None, "the catalog checked the label table's key columns"
    return frame, row_keys


def labels_of(home: ShipwayHome, declared: DeclaredModel) -> pd.DataFrame:
    """The label table as `row_key`, `label`, `available_at`, `event_timestamp`."""
    label = declared.declaration.label
    extra = [label.available_at] if label.available_at else []
    frame, row_keys = _label_rows(home, declared, [label.column, *extra])
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
            "event_timestamp": pd.to_datetime(frame["event_timestamp"], utc=True).to_numpy(),
        }
    )


def _figure(report: QualityReport, metric: str) -> str:
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


def live_quality_asset(declared: DeclaredModel, deployment: AssetKey) -> AssetsDefinition:
    declaration = declared.declaration
    name, policy = declaration.name, declaration.monitoring
    headline = "roc_auc" if declaration.problem == "binary_classification" else "mae"

    @asset(
        name=declaration.live_quality,
        group_name=name,
        deps=[AssetKey(declaration.label.table), deployment],
        description=f"Live quality of every served {name} version: its prediction log "
        f"({table_name(name)}) joined with {declaration.label.table} as labels land, per "
        f"version and day, judged over {policy.window_days} days with at least "
        f"{policy.min_labelled} labels. Exported to Prometheus for {declaration.quality_sensor}.",
    )
    def live_quality_of(
        context: AssetExecutionContext, lake: ShipwayHomeResource
    ) -> MaterializeResult:
        home = lake.home
        upkeep = maintain(home.lake, name, policy.prediction_log_retention_days)
        predictions = read_predictions(home.lake, name)
        labels = labels_of(home, declared)
        as_of = pd.Timestamp(labels["event_timestamp"].max()).to_pydatetime()
        report = live_quality(name, declaration.problem, predictions, labels, as_of, policy)
        report.save(home.serving / ".quality" / f"{name}.json")
        breaches = report.breaches(policy)
        for breach in breaches:
            context.log.warning("%s: %s", name, breach.line())
        metadata: dict[str, Any] = {
            "as_of": report.as_of,
            "window_start": report.window_start,
            "predictions": len(predictions),
            "retention_deleted_rows": upkeep["deleted_rows"],
            "compacted_files": f"{upkeep['files_removed']} into {upkeep['files_added']}",
            "report": MetadataValue.md(report.markdown()),
            "breaches": "; ".join(b.line() for b in breaches) or "none",
        }
        for quality in report.window:
            metadata[f"v{quality.version}_label_coverage"] = quality.coverage
            metadata[f"v{quality.version}_labelled"] = quality.labelled
            for metric, value in quality.metrics.items():
                metadata[f"v{quality.version}_{metric}"] = value
        if report.daily:
            metadata["figure"] = MetadataValue.md(_figure(report, headline))
        return MaterializeResult(metadata=metadata)

    return live_quality_of


def live_drift_asset(declared: DeclaredModel, deployment: AssetKey) -> AssetsDefinition:
    declaration = declared.declaration
    name, policy = declaration.name, declaration.monitoring

    @asset(
        name=declaration.live_drift,
        group_name=name,
        deps=[deployment],
        description=f"Drift of every served {name} version by day over the last "
        f"{policy.window_days} days: its prediction log ({table_name(name)}) against the "
        "version's training reference, with the rules its bundle serves with (the live "
        "window's statistics and decisions, per day).",
    )
    def live_drift_of(
        context: AssetExecutionContext, lake: ShipwayHomeResource
    ) -> MaterializeResult:
        home = lake.home
        since = datetime.now(UTC) - timedelta(days=policy.window_days)
        predictions = read_predictions(home.lake, name, since=since)
        versions: dict[str, tuple[ReferenceProfile, DriftRules]] = {}
        for version in sorted(set(predictions["version"])):
            folder = home.serving / name / str(version)
            if (folder / REFERENCE_FILE).is_file():
                bundle = read_bundle(folder)
                versions[str(version)] = (bundle.reference, bundle.drift)
            else:
                context.log.info("%s v%s has no bundle left: its drift is not shown", name, version)
        days = daily_drift(predictions, versions)
        rules = declaration.drift.rules(declaration.serving.drift_window)
        metadata: dict[str, Any] = {
            "predictions": len(predictions),
            "days": len({d.day for d in days}),
            "report": MetadataValue.md(markdown(days, rules.excluded)),
        }
        for version in versions:
            judged = [d for d in days if d.version == version and d.found]
            if judged:
                latest = judged[-1]
                worst = latest.worst
                metadata[f"v{version}_drifted_features"] = len(latest.drifted)
                metadata[f"v{version}_max_psi"] = worst.psi if worst else 0.0
                for item in latest.drifted:
                    context.log.warning("%s v%s on %s: %s", name, version, latest.day, item.line())
        if any(d.found for d in days):
            metadata["figure"] = MetadataValue.md(figure(days, rules))
        return MaterializeResult(metadata=metadata)

    return live_drift_of


NO_SKEW_CHECK = "no_feature_skew"


def entity_rows_of(home: ShipwayHome, declared: DeclaredModel, columns: list[str]) -> pd.DataFrame:
    """The label table's rows as the requests they were: `row_key` and the lookup's columns."""
    frame, row_keys = _label_rows(home, declared, columns)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame.assign(row_key=row_keys)


def skew_report(home: ShipwayHome, declared: DeclaredModel) -> SkewReport:
    """The served vectors of the last window against their point-in-time offline vectors."""
    declaration = declared.declaration
    name, policy = declaration.name, declaration.monitoring
    since = datetime.now(UTC) - timedelta(days=policy.window_days)
    predictions = read_predictions(home.lake, name, since=since)
    store = feature_store(home)
    spec = registry_spec(store, declaration.feature_service)
    columns = list(dict.fromkeys([*spec.join_keys, *spec.request_fields, "event_timestamp"]))
    rows = entity_rows_of(home, declared, columns)

    def offline(matched: pd.DataFrame) -> pd.DataFrame:
        joined = historical_features(store, matched[[*columns, "row_key"]], spec.name)
        joined = joined.set_index("row_key").loc[matched["row_key"]].reset_index()
        return as_floats(feature_frame(joined, spec)).set_axis(matched.index)

    return feature_skew(
        name, predictions, rows, offline, policy.skew, datetime.now(UTC).isoformat()
    )


def feature_skew_asset(declared: DeclaredModel, deployment: AssetKey) -> AssetsDefinition:
    declaration = declared.declaration
    name, policy = declaration.name, declaration.monitoring
    key = declaration.feature_skew

    @asset(
        name=key,
        group_name=name,
        deps=[deployment],
        description=f"Training/serving skew of {name}: the newest {policy.skew.sample_rows} "
        f"served rows of {table_name(name)} against Feast's point-in-time offline vectors for "
        "the same requests, per feature. Skew past monitoring.skew.max_share fails its check, "
        "is exported as shipway_feature_skew_share, and blocks the next release gate.",
        check_specs=[
            AssetCheckSpec(
                NO_SKEW_CHECK,
                asset=key,
                description="No feature's served values differ from the offline ones on more "
                f"than {policy.skew.max_share:.2%} of compared rows",
            )
        ],
    )
    def feature_skew_of(
        context: AssetExecutionContext, lake: ShipwayHomeResource
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        home = lake.home
        report = skew_report(home, declared)
        report.save(home.serving)
        (context.log.warning if report.skewed else context.log.info)(report.summary())
        yield MaterializeResult(
            metadata={
                "logged_rows": report.logged,
                "compared_rows": report.compared,
                "skewed_features": len(report.skewed),
                "report": MetadataValue.md(report.markdown()),
            }
        )
        yield AssetCheckResult(
            check_name=NO_SKEW_CHECK,
            asset_key=key,
            passed=not report.skewed,
            severity=AssetCheckSeverity.ERROR,
            description=report.summary(),
            metadata={f.feature: round(f.share, 6) for f in report.features if f in report.skewed},
        )

    return feature_skew_of


def serving_champion(home: ShipwayHome, model: str) -> str | None:
    """The version serving all traffic, or the champion of a rollout under way (the rollout
    state is the serving truth; MLflow's `champion` alias follows it)."""
    state = RolloutStore(home.serving).load(model)
    if state is None:
        return None
    if state.phase == PROMOTED:
        return state.challenger
    return state.champion


def monitoring_definitions(
    declared: DeclaredModel,
    deployment: AssetKey,
    retrain: UnresolvedAssetJobDefinition,
    waiting: WaitingForLabels,
) -> Definitions:
    declaration = declared.declaration
    name, policy = declaration.name, declaration.monitoring
    quality = live_quality_asset(declared, deployment)
    drift = live_drift_asset(declared, deployment)
    skew = feature_skew_asset(declared, deployment)
    refresh = define_asset_job(
        f"{name}_monitoring",
        selection=AssetSelection.assets(quality.key, drift.key, skew.key),
        description=f"Recompute {name}'s live quality (prediction log and labels), its "
        "drift by day and its training/serving skew.",
    )

    @sensor(
        name=declaration.quality_sensor,
        job=retrain,
        minimum_interval_seconds=60,
        description=f"Queries Prometheus for {name}'s live quality (from {quality.key.path[-1]}); "
        f"requests a retrain when the champion breaks its monitoring.quality limits.",
    )
    def quality_sensor(
        context: SensorEvaluationContext,
        prometheus: PrometheusResource,
        lake: ShipwayHomeResource,
    ) -> SensorResult | SkipReason:
        return retrain_tick(
            context,
            lake.home,
            name,
            "quality",
            lambda: decide_quality(
                prometheus.client(),
                name,
                policy,
                serving_champion(lake.home, name),
                context.cursor,
                time.time(),
            ),
            waiting,
        )

    schedules = []
    if policy.retrain_schedule is not None:
        schedules.append(
            ScheduleDefinition(
                name=declaration.retrain_schedule,
                cron_schedule=policy.retrain_schedule,
                job=retrain,
                execution_timezone="UTC",
                default_status=DefaultScheduleStatus.STOPPED,
                tags={"shipway/trigger": "schedule"},
                description=f"Retrains {name} on its declared cadence "
                f"({policy.retrain_schedule}, UTC).",
            )
        )
    return Definitions(
        assets=[quality, drift, skew], jobs=[refresh], sensors=[quality_sensor], schedules=schedules
    )
