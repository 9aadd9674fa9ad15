"""A seeded, deterministic generator of card transactions with fraud and late labels.

A fixed population (customers with spend profiles, merchants with categories) is drawn from
the seed; each day's events depend only on (seed, day, scenario, sizes), so landing days one
by one gives the same rows as landing them together. Fraud follows patterns a model can
learn: compromised cards spend big, at night, online, at risky merchants. Labels arrive late:
chargebacks take days to weeks, legitimate transactions are confirmed after settlement.

Each customer has an age band, an attribute a fairness review looks at and no model may use
as a feature. In every scenario but `biased` it has no bearing on spending or fraud; in
`biased`, half of one band's legitimate payments look like fraud (at night, online, bigger),
so a model trained on them holds that band's good customers for review more often.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa

CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurants",
    "fuel",
    "pharmacy",
    "apparel",
    "travel",
    "electronics",
    "online_retail",
    "gaming",
    "jewelry",
)
RISKY_CATEGORIES = ("electronics", "online_retail", "gaming", "jewelry")
AGE_BANDS: tuple[str, ...] = ("18-25", "26-40", "41-60", "61+")
AGE_BAND_SHARES = (0.2, 0.35, 0.3, 0.15)
RAW_EVENTS_COLUMNS = [
    "transaction_id",
    "event_timestamp",
    "event_date",
    "customer_id",
    "merchant_id",
    "merchant_category",
    "channel",
    "amount",
    "age_band",
    "is_fraud",
    "label_available_at",
]
SETTLEMENT_DAYS = 7


@dataclass(frozen=True)
class Scenario:
    """Knobs of the world that generated a day of events."""

    description: str
    amount_scale: float = 1.0
    category_boost: tuple[tuple[str, float], ...] = ()
    night_share: float = 0.06
    online_share: float = 0.25
    compromised_rate: float = 0.01
    look_risky: tuple[str, float] | None = None
    """(age band, share): that share of the band's legitimate payments move to the night,
    go online and grow 1.8x: what fraud looks like, without being fraud."""

    def __str__(self) -> str:
        return self.description


SCENARIOS: dict[str, Scenario] = {
    "baseline": Scenario("normal spending"),
    "drift": Scenario(
        "amounts x2.2, merchant mix shifts to online retail, electronics and travel, more night "
        "and online spending",
        amount_scale=2.2,
        category_boost=(("online_retail", 4.0), ("electronics", 3.0), ("travel", 2.5)),
        night_share=0.18,
        online_share=0.55,
    ),
    "biased": Scenario(
        "half of the 18-25 band's legitimate payments look like fraud: at night, online, 1.8x "
        "bigger",
        look_risky=("18-25", 0.5),
    ),
}


@dataclass(frozen=True)
class Population:
    customer_amount: np.ndarray  # typical ticket per customer
    customer_active_hour: np.ndarray  # centre of the customer's day
    merchant_category: np.ndarray  # category index per merchant
    merchant_amount_factor: np.ndarray
    merchants_by_category: tuple[np.ndarray, ...]
    customer_age_band: np.ndarray  # index into AGE_BANDS


@cache
def _population(seed: int, n_customers: int, n_merchants: int) -> Population:
    rng = np.random.default_rng([seed, 0])
    weights = np.array([0.2, 0.18, 0.12, 0.08, 0.1, 0.05, 0.07, 0.12, 0.04, 0.04])
    merchant_category = rng.choice(len(CATEGORIES), size=n_merchants, p=weights / weights.sum())
    # Every category needs at least one merchant, whatever the population size.
    merchant_category[: len(CATEGORIES)] = np.arange(len(CATEGORIES))
    return Population(
        customer_amount=rng.lognormal(3.3, 0.5, n_customers),
        customer_active_hour=rng.normal(14.0, 2.5, n_customers),
        merchant_category=merchant_category,
        merchant_amount_factor=np.array([1.0, 1.1, 1.2, 0.8, 1.6, 4.0, 3.0, 1.4, 0.9, 5.0])[
            merchant_category
        ]
        * rng.lognormal(0.0, 0.2, n_merchants),
        merchants_by_category=tuple(
            np.flatnonzero(merchant_category == c) for c in range(len(CATEGORIES))
        ),
        # Its own stream: the draws above (and every day's events) are as they were before.
        customer_age_band=np.random.default_rng([seed, 1]).choice(
            len(AGE_BANDS), size=n_customers, p=AGE_BAND_SHARES
        ),
    )


def _category_probabilities(scenario: Scenario) -> np.ndarray:
    base = np.array([0.2, 0.18, 0.12, 0.08, 0.1, 0.05, 0.07, 0.12, 0.04, 0.04])
    boost = dict(scenario.category_boost)
    weights = base * np.array([boost.get(c, 1.0) for c in CATEGORIES])
    return weights / weights.sum()


CHANNELS = np.asarray(["card_present", "online"], dtype=object)


def _generate_day(
    day: date, scenario: Scenario, seed: int, n: int, pop: Population
) -> pd.DataFrame:
    rng = np.random.default_rng([seed, day.toordinal()])
    n_customers = len(pop.customer_amount)
    customers = rng.integers(0, n_customers, n)

    # Compromised cards today: their transactions are mostly fraud.
    compromised = rng.random(n_customers) < scenario.compromised_rate
    fraud = compromised[customers] & (rng.random(n) < 0.8)
    fraud |= rng.random(n) < 0.008  # opportunistic one-off fraud

    categories = rng.choice(len(CATEGORIES), size=n, p=_category_probabilities(scenario))
    risky = np.array([CATEGORIES.index(c) for c in RISKY_CATEGORIES])
    # Fraudsters favour resellable goods, but not always: some fraud hides in everyday spend.
    n_fraud = int(fraud.sum())
    categories[fraud] = np.where(
        rng.random(n_fraud) < 0.65, rng.choice(risky, size=n_fraud), categories[fraud]
    )
    merchants = np.empty(n, dtype=np.int64)
    for c, pool in enumerate(pop.merchants_by_category):
        picked = categories == c
        merchants[picked] = pool[rng.integers(0, len(pool), int(picked.sum()))]

    night = rng.random(n) < scenario.night_share
    hours = np.where(
        night,
        rng.uniform(0.0, 6.0, n),
        np.clip(rng.normal(pop.customer_active_hour[customers], 3.0), 6.0, 23.99),
    )
    hours[fraud] = np.where(rng.random(n_fraud) < 0.45, rng.uniform(0, 6, n_fraud), hours[fraud])
    seconds = (hours * 3600).astype(np.int64)

    online = rng.random(n) < scenario.online_share
    online[fraud] = rng.random(n_fraud) < 0.6

    amounts = (
        pop.customer_amount[customers]
        * pop.merchant_amount_factor[merchants]
        * rng.lognormal(0.0, 0.35, n)
        * scenario.amount_scale
    )
    amounts[fraud] *= rng.lognormal(0.6, 0.6, n_fraud)
    if scenario.look_risky is not None:
        band, share = scenario.look_risky
        bias = np.random.default_rng([seed, day.toordinal(), 2])  # the main stream is untouched
        looks = (
            (pop.customer_age_band[customers] == AGE_BANDS.index(band))
            & ~fraud
            & (bias.random(n) < share)
        )
        seconds[looks] = (bias.uniform(0.0, 6.0, int(looks.sum())) * 3600).astype(np.int64)
        online[looks] = True
        amounts[looks] *= 1.8
    amounts = np.round(np.maximum(amounts, 0.5), 2)

    day_start = pd.Timestamp(day, tz="UTC")
    timestamps = day_start + pd.to_timedelta(seconds, unit="s")
    # Chargebacks: most within two weeks, a long tail up to 40 days.
    chargeback = np.minimum(2.0 + rng.exponential(5.0, n), 40.0)
    delay_days = np.where(fraud, chargeback, float(SETTLEMENT_DAYS))
    order = np.argsort(seconds, kind="stable")
    prefix = f"tx-{day:%Y%m%d}-"
    frame = pd.DataFrame(
        {
            "transaction_id": [f"{prefix}{i:06d}" for i in range(n)],
            "event_timestamp": timestamps[order],
            "event_date": pd.Timestamp(day).date(),
            "customer_id": customers[order].astype(np.int64),
            "merchant_id": merchants[order].astype(np.int64),
            "merchant_category": np.asarray(CATEGORIES, dtype=object)[categories[order]],
            # Shared string objects, not one per row (np.where would make 10M of them).
            "channel": CHANNELS[online[order].astype(np.int8)],
            "amount": amounts[order],
            "age_band": np.asarray(AGE_BANDS, dtype=object)[pop.customer_age_band[customers]][
                order
            ],
            "is_fraud": fraud[order].astype(np.int8),
            "label_available_at": (timestamps + pd.to_timedelta(delay_days, unit="D"))[order],
        }
    )
    return frame


def generate_events(
    start: date,
    days: int,
    scenario: str = "baseline",
    seed: int = 7,
    events_per_day: int = 2000,
    n_customers: int = 2000,
    n_merchants: int = 300,
) -> pd.DataFrame:
    """Events for `days` days from `start`, columns as RAW_EVENTS_COLUMNS.

    `event_timestamp` and `label_available_at` are tz-aware UTC (microseconds); `event_date`
    holds `datetime.date` values, which Delta stores as a DATE column.
    """
    _check(scenario, days, events_per_day)
    return pd.concat(
        _days(start, days, scenario, seed, events_per_day, n_customers, n_merchants),
        ignore_index=True,
    )


def event_table(
    start: date, days: int, scenario: str = "baseline", seed: int = 7, events_per_day: int = 2000
) -> pa.Table:
    """The events `generate_events` makes, built a day at a time into Arrow: only one day is
    ever held in pandas (at 10M events, a landing's memory is Arrow's, a fraction of pandas')."""
    _check(scenario, days, events_per_day)
    return pa.concat_tables(
        pa.Table.from_pandas(day, preserve_index=False)
        for day in _days(start, days, scenario, seed, events_per_day, 2000, 300)
    )


def _check(scenario: str, days: int, events_per_day: int) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {sorted(SCENARIOS)}")
    if days < 1 or events_per_day < 1:
        raise ValueError(f"days and events_per_day must be positive, got {days}, {events_per_day}")


def _days(
    start: date,
    days: int,
    scenario: str,
    seed: int,
    events_per_day: int,
    n_customers: int,
    n_merchants: int,
) -> Iterator[pd.DataFrame]:
    pop = _population(seed, n_customers, n_merchants)
    for d in range(days):
        frame = _generate_day(
            start + timedelta(days=d), SCENARIOS[scenario], seed, events_per_day, pop
        )
        for column in ("event_timestamp", "label_available_at"):
            frame[column] = frame[column].astype("datetime64[us, UTC]")
        yield frame[RAW_EVENTS_COLUMNS]
