"""Raw card transactions landing in the lake, one day at a time."""

from datetime import date

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset

from shipway.events import SCENARIOS, generate_events
from shipway.lake import land_days
from shipway.resources import ShipwayHomeResource


class LandingConfig(Config):
    """Which days to land from the event generator, and under which scenario."""

    start_date: str = "2026-09-01"
    days: int = 28
    scenario: str = "baseline"
    events_per_day: int = 2000
    seed: int = 7


@asset(
    group_name="data",
    kinds={"delta", "python"},
    description="Card transactions with late-arriving fraud labels, landed by day in Delta "
    "(re-landing a day replaces it). Source: Shipway's seeded event generator.",
)
def raw_events(
    context: AssetExecutionContext, config: LandingConfig, lake: ShipwayHomeResource
) -> MaterializeResult:
    start = date.fromisoformat(config.start_date)
    events = generate_events(
        start, config.days, config.scenario, config.seed, config.events_per_day
    )
    context.log.info(
        "landing %d events for %s + %d days (scenario %s)",
        len(events),
        start,
        config.days,
        config.scenario,
    )
    info = land_days(lake.home.table("raw_events"), events)
    return MaterializeResult(
        metadata={
            **info.metadata(),
            "landed_days": f"{start} .. {config.days} days",
            "landed_rows": len(events),
            "scenario": MetadataValue.text(f"{config.scenario}: {SCENARIOS[config.scenario]}"),
            "fraud_rate": float(events["is_fraud"].mean()),
        }
    )
