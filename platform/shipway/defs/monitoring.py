"""Each model's live monitoring in Dagster: `<model>_live_quality`, `<model>_live_drift`,
`<model>_feature_skew` and the `<model>_monitoring` job that refreshes them.

`<model>_live_quality` joins the prediction log with the model's label table as of the lake's
newest event, applies the log's retention, writes the report where the serving control plane
exports it to Prometheus (`shipway_live_quality`, `shipway_live_labelled_predictions`,
`shipway_label_coverage`, `shipway_estimated_quality` and its `_error`), and shows it as
metadata: the table per version and day (realized, estimated, estimation error), the judged
window's values as numbers (Dagster plots them across materializations), and a figure.
`<model>_live_drift` shows each served version's drift day by day; `<model>_feature_skew`
compares served vectors with Feast's offline ones. The logic is `shipway.monitoring.live`.
(No `from __future__ import annotations`: Dagster reads these hints.)
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)

from shipway.defs.resources import ShipwayHomeResource
from shipway.models.catalog import DeclaredModel
from shipway.monitoring.live import live_drift, quality_figure, refresh_live_quality, skew_report
from shipway.monitoring.live_drift import figure, markdown
from shipway.serving.prediction_log import table_name


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
        found = refresh_live_quality(lake.home, declared)
        report, upkeep = found.report, found.upkeep
        breaches = report.breaches(policy)
        for breach in breaches:
            context.log.warning("%s: %s", name, breach.line())
        metadata: dict[str, Any] = {
            "as_of": report.as_of,
            "window_start": report.window_start,
            "predictions": found.predictions,
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
            for metric, value in quality.estimated.items():
                metadata[f"v{quality.version}_estimated_{metric}"] = value
        if report.daily:
            metadata["figure"] = MetadataValue.md(quality_figure(report, headline))
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
        found = live_drift(lake.home, declared, context.log.info)
        days = found.days
        rules = declaration.drift.rules(declaration.serving.drift_window)
        metadata: dict[str, Any] = {
            "predictions": found.predictions,
            "days": len({d.day for d in days}),
            "report": MetadataValue.md(markdown(days, rules.excluded)),
        }
        for version in found.versions:
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
        report.save(home.served.skew_reports)
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


def monitoring_definitions(declared: DeclaredModel, deployment: AssetKey) -> Definitions:
    """The model's monitoring assets and the `<model>_monitoring` job that refreshes them."""
    name = declared.declaration.name
    quality = live_quality_asset(declared, deployment)
    drift = live_drift_asset(declared, deployment)
    skew = feature_skew_asset(declared, deployment)
    refresh = define_asset_job(
        f"{name}_monitoring",
        selection=AssetSelection.assets(quality.key, drift.key, skew.key),
        description=f"Recompute {name}'s live quality (prediction log and labels), its "
        "drift by day and its training/serving skew.",
    )
    return Definitions(assets=[quality, drift, skew], jobs=[refresh])
