"""Fault injection: each kind of bad batch is stopped by the right gate with a message that names
it, nothing downstream runs, no Delta version is lost and the accepted data stays as it was.
Batches go through the real landing job (Dagster, Delta, pandera), as `shipway data land` does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance

from shipway.data.admission import Ledger
from shipway.data.commands import LandingOutcome, export, land, readmit
from shipway.data.contracts import GATES
from shipway.data.events import generate_events
from shipway.data.lake import read_table, table_info
from shipway.paths import ShipwayHome
from tests.conftest import landing_job

EVENTS_PER_DAY = 300
BASELINE_START = date(2026, 9, 1)
BASELINE_AS_OF = "2026-09-15T01:00:00+00:00"
NEXT_START = date(2026, 9, 15)
NEXT_AS_OF = "2026-09-18T01:00:00+00:00"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShipwayHome]:
    """A lake with 14 accepted baseline days: the reference every fault is judged against."""
    home = ShipwayHome(tmp_path_factory.mktemp("gates"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHIPWAY_HOME", str(home.root))
        baseline = _land_frame(
            home,
            generate_events(BASELINE_START, 14, "baseline", 7, EVENTS_PER_DAY),
            BASELINE_AS_OF,
            "baseline",
        )
        assert baseline.accepted, baseline.gate_lines
        yield home


def _land_frame(home: ShipwayHome, frame: pd.DataFrame, as_of: str, name: str) -> LandingOutcome:
    path = home.root / "incoming" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return land(home, landing_job(), {"from_file": str(path), "as_of": as_of})


def _next_batch(events_per_day: int = EVENTS_PER_DAY) -> pd.DataFrame:
    return generate_events(NEXT_START, 3, "baseline", 7, events_per_day)


def _rows(frame: pd.DataFrame, share: float, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(len(frame)) < share


def _renamed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"amount": "txn_amount"})


def _dropped(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="channel")


def _retyped(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(amount=frame["amount"].map(lambda a: f"{a:.2f} EUR"))


def _nulls(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(merchant_category=frame["merchant_category"].mask(_rows(frame, 0.05)))


def _negative(frame: pd.DataFrame) -> pd.DataFrame:
    amount = frame["amount"].copy()
    amount.iloc[[5, 50, 500]] = -amount.iloc[[5, 50, 500]]
    return frame.assign(amount=amount)


def _unknown_category(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(
        merchant_category=frame["merchant_category"].mask(_rows(frame, 0.02), "crypto")
    )


def _nested(frame: pd.DataFrame) -> pd.DataFrame:
    nested: list[Any] = [[c] for c in frame["channel"]]
    return frame.assign(channel=nested)


def _huge_value(frame: pd.DataFrame) -> pd.DataFrame:
    huge = frame.copy()
    huge.loc[0, "merchant_category"] = "x" * 5_000_000
    return huge


def _duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[100:130]], ignore_index=True)


def _outliers(frame: pd.DataFrame) -> pd.DataFrame:
    # A unit bug on a few rows: small amounts x500, still below the hard maximum.
    hit = _rows(frame, 0.01) & (frame["amount"] < 80)
    return frame.assign(amount=frame["amount"].where(~hit, frame["amount"] * 500))


def _empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def _label_rate(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(is_fraud=frame["is_fraud"].where(~_rows(frame, 0.3), 1))


def _late_labels(frame: pd.DataFrame) -> pd.DataFrame:
    late = frame["event_timestamp"] + pd.Timedelta(days=60)
    return frame.assign(
        label_available_at=frame["label_available_at"].where(~_rows(frame, 0.1), late)
    )


def _leaking(frame: pd.DataFrame) -> pd.DataFrame:
    # Every fraud gets an amount just above the largest legitimate one: amount alone now
    # separates the classes, though no single value is out of range or an outlier.
    fraud = frame["is_fraud"] == 1
    top = frame.loc[~fraud, "amount"].max()
    rng = np.random.default_rng(5)
    return frame.assign(
        amount=frame["amount"].where(~fraud, np.round(top * rng.uniform(1.01, 1.5, len(frame)), 2))
    )


def _cents(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(amount=frame["amount"] * 100)


@dataclass(frozen=True)
class Fault:
    gate: str
    inject: Callable[[pd.DataFrame], pd.DataFrame]
    message: tuple[str, ...]
    as_of: str = NEXT_AS_OF
    events_per_day: int = EVENTS_PER_DAY


FAULTS = {
    "renamed column": Fault(
        "schema", _renamed, ("column `amount`", "missing, found `txn_amount` instead")
    ),
    "missing column": Fault("schema", _dropped, ("column `channel`, rule required column",)),
    "type change": Fault(
        "types", _retyped, ("column `amount`, rule type: float", "observed string")
    ),
    "missing values": Fault(
        "nulls", _nulls, ("column `merchant_category`, rule not null", "expected <= 0.00%")
    ),
    "out of range": Fault(
        "ranges", _negative, ("column `amount`, rule range [0.01, 50000.0]", "(3 offending rows)")
    ),
    "unknown category": Fault(
        "categories", _unknown_category, ("column `merchant_category`", "unknown 'crypto'")
    ),
    # Crashed after its Delta write before: exit 2, and a version no ledger entry covered.
    "list-typed column": Fault(
        "types", _nested, ("column `channel`, rule type: string", "observed list<")
    ),
    # Copied whole into every message, Dagster's metadata and the ledger before (40 MB).
    "5 MB value": Fault(
        "categories", _huge_value, ("column `merchant_category`", "... (5000000 characters)")
    ),
    "duplicate keys": Fault(
        "keys", _duplicates, ("column `transaction_id`, rule unique key", "30 key values repeated")
    ),
    "outliers": Fault("outliers", _outliers, ("column `amount`, rule robust z",)),
    "stale batch": Fault(
        "freshness",
        lambda f: f,
        ("column `event_timestamp`, rule max_age_hours: 48.0", "h old at 2026-09-25"),
        as_of="2026-09-25T00:00:00+00:00",
    ),
    "empty batch": Fault("volume", _empty, ("rule min_rows: 1", "observed 0 rows")),
    "10x batch": Fault(
        "volume",
        lambda f: f,
        ("rule volume ratio in [0.1, 10.0]", "12.00 x the accepted median 300"),
        events_per_day=EVENTS_PER_DAY * 12,
    ),
    "label rate": Fault("labels", _label_rate, ("column `is_fraud`, rule label rate in",)),
    "labels past their delay": Fault(
        "labels", _late_labels, ("rule label within 45.0 days", "overdue or missing their label")
    ),
    "leakage": Fault("leakage", _leaking, ("column `amount`, rule single-column AUC < 0.97",)),
    "distribution shift": Fault(
        "shift", _cents, ("column `amount`, rule distribution shift", "against raw_events")
    ),
}


@pytest.mark.parametrize("fault_name", list(FAULTS))
def test_a_bad_batch_is_stopped_by_its_gate_and_nothing_is_lost(
    home: ShipwayHome, fault_name: str
) -> None:
    fault = FAULTS[fault_name]
    accepted_before = table_info(home.table("raw_events"), digest=True)
    batch = fault.inject(_next_batch(fault.events_per_day))
    outcome = _land_frame(home, batch, fault.as_of, fault_name.replace(" ", "_"))

    assert outcome.admission is not None
    assert outcome.admission.status == "rejected"
    assert fault.gate in outcome.admission.failed_gates
    line = next(g for g in outcome.gate_lines if g.split()[1] == fault.gate)
    assert line.startswith("error"), line
    for fragment in fault.message:
        assert fragment in line, line
    assert line.count("raw_events: ") == 1

    # Nothing downstream: raw_events is exactly as before, in version and content.
    accepted_after = table_info(home.table("raw_events"), digest=True)
    assert accepted_after.version == accepted_before.version
    assert accepted_after.content_digest == accepted_before.content_digest
    instance = DagsterInstance.from_config(str(home.dagster))
    published = instance.get_latest_materialization_event(AssetKey("raw_events"))
    assert published is not None and published.run_id != outcome.admission.run_id

    # Nothing lost: the rejected batch is its own version, and every older one still reads.
    rejected = outcome.admission.version
    assert table_info(home.table("raw_events_batch"), rejected).row_count == len(batch)
    for version in range(rejected):
        table_info(home.table("raw_events_batch"), version)
    reasons = Ledger(home).rejected(outcome.admission.id).reasons
    assert reasons and sum(map(len, reasons)) < 5000, "offending values are echoed cut"


def test_a_clean_batch_passes_every_gate(home: ShipwayHome) -> None:
    outcome = _land_frame(home, _next_batch(), NEXT_AS_OF, "clean")
    assert outcome.accepted, outcome.gate_lines
    assert len(outcome.gate_lines) == len(GATES)
    assert all(line.startswith("ok") for line in outcome.gate_lines), outcome.gate_lines
    published = table_info(home.table("raw_events"))
    assert published.commit_metadata["batch"] == outcome.admission.id  # type: ignore[union-attr]
    assert len(read_table(home.table("raw_events"))) == 17 * EVENTS_PER_DAY


@pytest.mark.parametrize("seed", [1, 42, 2026])
def test_no_false_alarms_on_the_generators_normal_output(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = ShipwayHome(tmp_path)
    monkeypatch.setenv("SHIPWAY_HOME", str(home.root))
    first = generate_events(BASELINE_START, 14, "baseline", seed, EVENTS_PER_DAY)
    second = generate_events(NEXT_START, 3, "baseline", seed, EVENTS_PER_DAY)
    for frame, as_of, name in ((first, BASELINE_AS_OF, "first"), (second, NEXT_AS_OF, "next")):
        outcome = _land_frame(home, frame, as_of, name)
        assert outcome.accepted, outcome.gate_lines
        assert all(line.startswith("ok") for line in outcome.gate_lines), outcome.gate_lines


def test_drift_in_the_world_warns_but_is_admitted(home: ShipwayHome) -> None:
    drifted = generate_events(date(2026, 9, 18), 3, "drift", 7, EVENTS_PER_DAY)
    outcome = _land_frame(home, drifted, "2026-09-21T01:00:00+00:00", "drift")
    assert outcome.accepted, outcome.gate_lines
    shift = next(g for g in outcome.gate_lines if g.split()[1] == "shift")
    assert shift.startswith("warn") and "column `amount`" in shift


def test_a_fixed_batch_is_readmitted_and_published(home: ShipwayHome, tmp_path: Path) -> None:
    bad = _unknown_category(generate_events(date(2026, 9, 21), 2, "baseline", 7, EVENTS_PER_DAY))
    rejected = _land_frame(home, bad, "2026-09-23T01:00:00+00:00", "to_fix")
    assert rejected.admission is not None and not rejected.accepted
    before = table_info(home.table("raw_events"))

    fixed_path = tmp_path / "fixed.parquet"
    assert export(home, rejected.admission.id, fixed_path) == len(bad)
    fixed = pd.read_parquet(fixed_path)
    fixed["merchant_category"] = fixed["merchant_category"].replace("crypto", "online_retail")
    fixed.to_parquet(fixed_path, index=False)

    outcome = readmit(home, landing_job(), rejected.admission.id, fixed_path, None)
    assert outcome.accepted, outcome.gate_lines
    assert outcome.admission is not None
    assert outcome.admission.readmits == rejected.admission.id
    after = table_info(home.table("raw_events"))
    assert after.version == before.version + 1
    days = set(read_table(home.table("raw_events"), columns=["event_date"])["event_date"])
    assert {date(2026, 9, 21), date(2026, 9, 22)} <= days
    quarantine = dict((e.id, again) for e, again in Ledger(home).quarantine())
    assert quarantine[rejected.admission.id] == outcome.admission.id


def test_two_landings_at_once_each_audit_and_publish_their_own_batch(
    home: ShipwayHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another landing writes its batch (with duplicate keys) between this landing's write
    and its audit. Before, this landing's contract audited the newest version, the other's:
    its own clean batch was never judged, and the run reported the other's verdict. Each now
    audits the version its own run wrote; publishing takes only accepted batches."""
    import shipway.defs.data as landing_defs

    real = landing_defs.write_batch
    other = _duplicates(generate_events(date(2026, 9, 27), 2, "baseline", 8, EVENTS_PER_DAY))
    written: list[int] = []

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        mine = real(*args, **kwargs)
        theirs = real(home, other, "another landing", NEXT_AS_OF, "", 365, "another-run")
        written.extend([mine.version, theirs.version])
        return mine

    monkeypatch.setattr(landing_defs, "write_batch", meanwhile)
    clean = generate_events(date(2026, 9, 25), 2, "baseline", 9, EVENTS_PER_DAY)
    outcome = _land_frame(home, clean, "2026-09-27T01:00:00+00:00", "at_once")
    mine, theirs = written
    assert theirs == mine + 1
    assert outcome.accepted and outcome.admission is not None, "\n".join(outcome.gate_lines)
    assert outcome.admission.version == mine
    assert all(e.version != theirs for e in Ledger(home).entries("raw_events"))
    assert table_info(home.table("raw_events")).commit_metadata["batch"] == outcome.admission.id


def test_a_batch_accepted_before_a_crash_is_published_by_the_next_landing(
    home: ShipwayHome,
) -> None:
    """The process dies after a batch's contract accepted it, before `raw_events` published it
    (here: the run stops after the checks). Before, the next landing published only its own
    batch and the first was lost to dbt; now every accepted batch is published, in order."""
    from dagster import AssetKey

    first = generate_events(date(2026, 10, 1), 2, "baseline", 10, EVENTS_PER_DAY)
    path = home.root / "incoming" / "before_crash.parquet"
    first.to_parquet(path, index=False)
    instance = DagsterInstance.from_config(str(home.prepare_dagster()))
    stopped = landing_job().execute_in_process(
        instance=instance,
        run_config={
            "ops": {
                "raw_events_batch": {
                    "config": {"from_file": str(path), "as_of": "2026-10-03T01:00:00+00:00"}
                }
            }
        },
        asset_selection=[AssetKey("raw_events_batch")],
    )
    assert stopped.success
    accepted = [e for e in Ledger(home).entries("raw_events") if e.run_id == stopped.run_id]
    assert [e.status for e in accepted] == ["accepted"]
    assert table_info(home.table("raw_events")).commit_metadata["batch"] != accepted[0].id

    second = generate_events(date(2026, 10, 3), 2, "baseline", 11, EVENTS_PER_DAY)
    outcome = _land_frame(home, second, "2026-10-05T01:00:00+00:00", "after_crash")
    assert outcome.accepted and outcome.admission is not None, outcome.gate_lines
    from shipway.data.landing import published_batches

    published = published_batches(home)
    assert published[accepted[0].id] < published[outcome.admission.id]
    days = set(read_table(home.table("raw_events"), columns=["event_date"])["event_date"])
    assert {date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)} <= days


def test_a_landing_that_fails_names_the_step_its_error_and_the_run(home: ShipwayHome) -> None:
    """Not a Parquet file: `shipway data land` said "Execution of step failed"; it names the
    step, the reader's own error and the run holding the full log, and writes no version."""
    from shipway.errors import ShipwayError

    before = table_info(home.table("raw_events_batch")).version
    broken = home.root / "incoming" / "broken.parquet"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ShipwayError) as raised:
        land(home, landing_job(), {"from_file": str(broken), "as_of": NEXT_AS_OF})
    message = str(raised.value)
    assert message.startswith("landing failed: raw_events_batch: ")
    assert "Parquet" in message and "in the Dagster UI" in message, message
    assert table_info(home.table("raw_events_batch")).version == before
