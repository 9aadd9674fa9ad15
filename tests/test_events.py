"""The event generator: deterministic, realistic enough to learn from, with a drift scenario."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from shipway.data.events import AGE_BANDS, CATEGORIES, RAW_EVENTS_COLUMNS, generate_events

START = date(2026, 9, 1)


def test_the_same_arguments_give_the_same_events() -> None:
    pd.testing.assert_frame_equal(generate_events(START, 3), generate_events(START, 3))


def test_landing_days_one_by_one_gives_the_same_rows_as_together() -> None:
    together = generate_events(START, 4, events_per_day=300)
    apart = pd.concat(
        [generate_events(date(2026, 9, d), 1, events_per_day=300) for d in range(1, 5)],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(together, apart)


def test_events_follow_the_raw_events_contract() -> None:
    events = generate_events(START, 2)
    assert list(events.columns) == RAW_EVENTS_COLUMNS
    assert str(events["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert events["transaction_id"].is_unique
    assert (events["amount"] > 0).all()
    assert set(events["merchant_category"]) <= set(CATEGORIES)
    assert set(events["channel"]) == {"card_present", "online"}
    assert (events["event_timestamp"].dt.date == events["event_date"]).all()


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_fraud_is_rare_but_present_and_looks_like_fraud(seed: int) -> None:
    events = generate_events(START, 20, seed=seed)
    rate = events["is_fraud"].mean()
    assert 0.005 < rate < 0.04
    fraud, legit = events[events["is_fraud"] == 1], events[events["is_fraud"] == 0]
    assert fraud["amount"].median() > 1.5 * legit["amount"].median()
    night = lambda e: (e["event_timestamp"].dt.hour < 6).mean()  # noqa: E731
    assert night(fraud) > 3 * night(legit)
    assert (fraud["channel"] == "online").mean() > (legit["channel"] == "online").mean()


def test_labels_arrive_after_the_event() -> None:
    events = generate_events(START, 5)
    delay = (events["label_available_at"] - events["event_timestamp"]).dt.total_seconds() / 86400
    assert (delay >= 2).all()
    assert delay[events["is_fraud"] == 1].max() > 7, "chargebacks can take weeks"


def test_the_drift_scenario_shifts_amounts_and_merchant_mix() -> None:
    base = generate_events(START, 5, "baseline")
    drift = generate_events(START, 5, "drift")
    assert drift["amount"].median() > 1.8 * base["amount"].median()
    share = lambda e: e["merchant_category"].isin(["online_retail", "electronics"]).mean()  # noqa: E731
    assert share(drift) > 1.5 * share(base)


def test_an_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown scenario 'holiday'; known: \['baseline', 'biased', 'drift'\]"
    ):
        generate_events(START, 1, "holiday")


def test_each_customer_has_one_age_band_and_only_the_biased_scenario_lets_it_matter() -> None:
    base = generate_events(START, 10, events_per_day=1000)
    assert (base.groupby("customer_id")["age_band"].nunique() == 1).all()
    night = lambda e: (e["event_timestamp"].dt.hour < 6).mean()  # noqa: E731
    legit = base[base["is_fraud"] == 0]
    by_band = [night(legit[legit["age_band"] == band]) for band in AGE_BANDS]
    assert max(by_band) - min(by_band) < 0.03, "in baseline, bands spend alike"
    biased = generate_events(START, 10, "biased", events_per_day=1000)
    legit = biased[biased["is_fraud"] == 0]
    young, others = legit[legit["age_band"] == "18-25"], legit[legit["age_band"] != "18-25"]
    assert night(young) > 5 * night(others)
    assert (young["channel"] == "online").mean() > 2 * (others["channel"] == "online").mean()
    # Fraud itself is as it was: the scenario only moves good customers' payments.
    assert biased["is_fraud"].sum() == base["is_fraud"].sum()
