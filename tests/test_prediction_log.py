"""The prediction log without servers: the spool's files, their move into Delta exactly once,
retention, and the keys that join a prediction to its label."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric

from assets.definitions import models
from shipway.errors import BadRequest
from shipway.models.catalog import declared_model
from shipway.paths import ServingHome
from shipway.rollout.metrics import RolloutCollector, rollout_phase
from shipway.rollout.state import RolloutState, RolloutStore
from shipway.scrape import FileErrors
from shipway.serving.bundle import MODEL_FILE, Bundle, PredictionKeys, read_bundle, write_bundle
from shipway.serving.control_plane import ControlPlane
from shipway.serving.dataplane import DataPlane
from shipway.serving.prediction_log import (
    CLAIMED,
    SCHEMA,
    ingest,
    maintain,
    read_predictions,
    table_name,
)
from shipway.serving.prediction_spool import PredictionSpool, Scored
from shipway.serving.protocol import parse_row_keys
from shipway.serving.scoring import row_keys_of

FEATURES = ["amount", "hour"]


def _spool(root: Path, version: str = "1") -> PredictionSpool:
    return PredictionSpool(root, "toy_model", version, FEATURES, flush_seconds=3600)


def _scored(request_id: str, rows: int, at: float, keys: bool = True) -> Scored:
    matrix = np.arange(rows * 2, dtype=float).reshape(rows, 2)
    return Scored(
        request_id=request_id,
        at=at,
        served=True,
        rows=matrix,
        scores=matrix[:, 0] / 100,
        row_keys=[f"{request_id}-{i}" for i in range(rows)] if keys else None,
    )


def test_spooled_rows_land_in_the_days_they_were_scored_with_vector_score_and_key(
    tmp_path: Path,
) -> None:
    spool = _spool(tmp_path / "spool")
    spool.add(_scored("a", 3, datetime(2026, 11, 30, 23, 59, tzinfo=UTC).timestamp()))
    spool.add(_scored("b", 2, datetime(2026, 12, 1, 0, 1, tzinfo=UTC).timestamp(), keys=False))
    spool.close()
    written = ingest(tmp_path / "spool", tmp_path / "lake", lambda m, v: f"canary: v{v} at 10%")
    assert written == {"toy_model": 5}
    logged = read_predictions(tmp_path / "lake", "toy_model")
    assert logged["request_id"].tolist() == ["a"] * 3 + ["b"] * 2
    assert logged["day"].tolist() == ["2026-11-30"] * 3 + ["2026-12-01"] * 2
    assert logged["row_key"].tolist()[:3] == ["a-0", "a-1", "a-2"]
    assert logged["row_key"].isna().tolist()[3:] == [True, True]
    assert [list(v) for v in logged["vector"]][:2] == [[0.0, 1.0], [2.0, 3.0]]
    assert logged["score"].tolist()[1] == pytest.approx(0.02)
    assert set(logged["rollout"]) == {"canary: v1 at 10%"}
    assert list(logged["features"][0]) == FEATURES
    partitions = DeltaTable(str(tmp_path / "lake" / table_name("toy_model"))).metadata()
    assert partitions.partition_columns == ["day"]
    assert list((tmp_path / "spool" / "toy_model").glob("*.json")) == [], "files are moved"


def test_a_pass_that_died_after_its_commit_writes_nothing_twice_and_one_before_it_loses_nothing(
    tmp_path: Path,
) -> None:
    spool = _spool(tmp_path / "spool")
    spool.add(_scored("first", 4, 1_764_547_200.0))
    first = spool.flush()
    spool.add(_scored("second", 3, 1_764_547_260.0))
    second = spool.flush()
    spool.close()
    assert first is not None and second is not None
    kept = tmp_path / "kept.json"
    shutil.copy(first, kept)
    # A pass committed `first`, then died before deleting its claimed copy...
    second.rename(tmp_path / "aside.json")
    ingest(tmp_path / "spool", tmp_path / "lake")
    shutil.copy(kept, first.with_name(first.name + CLAIMED))
    # ... and another pass died having claimed `second`, before committing it.
    (tmp_path / "aside.json").rename(second.with_name(second.name + CLAIMED))
    assert ingest(tmp_path / "spool", tmp_path / "lake") == {"toy_model": 3}
    logged = read_predictions(tmp_path / "lake", "toy_model")
    assert logged["request_id"].value_counts().to_dict() == {"first": 4, "second": 3}
    assert list((tmp_path / "spool" / "toy_model").iterdir()) == [
        tmp_path / "spool" / "toy_model" / ".lock"
    ]


def test_upkeep_deletes_the_days_older_than_the_policy_and_compacts_small_files(
    tmp_path: Path,
) -> None:
    spool = _spool(tmp_path / "spool")
    for day in (1, 20, 28):
        for hour in (10, 12):
            spool.add(_scored(f"d{day}", 1, datetime(2026, 11, day, hour, tzinfo=UTC).timestamp()))
            spool.flush()
            # One pass per spool file: a file per day each time, as 5-second appends leave them.
            ingest(tmp_path / "spool", tmp_path / "lake")
    spool.close()
    upkeep = maintain(
        tmp_path / "lake", "toy_model", retention_days=15, now=datetime(2026, 12, 1, tzinfo=UTC)
    )
    assert upkeep == {"deleted_rows": 2, "files_removed": 4, "files_added": 2}
    kept = read_predictions(tmp_path / "lake", "toy_model")
    assert sorted(set(kept["day"])) == ["2026-11-20", "2026-11-28"] and len(kept) == 4
    since = read_predictions(
        tmp_path / "lake", "toy_model", since=datetime(2026, 11, 25, tzinfo=UTC)
    )
    assert set(since["request_id"]) == {"d28"}


def test_row_keys_must_be_one_string_per_row() -> None:
    assert parse_row_keys({}, 2) is None
    assert parse_row_keys({"row_keys": ["a", "b"]}, 2) == ["a", "b"]
    with pytest.raises(BadRequest, match='"row_keys" has 1 keys for 2 rows'):
        parse_row_keys({"row_keys": ["a"]}, 2)
    with pytest.raises(BadRequest, match='"row_keys" must be a list of strings'):
        parse_row_keys({"row_keys": [1, 2]}, 2)
    # Over gRPC, whose parameters are scalars, the list is its JSON text.
    assert parse_row_keys({"row_keys": '["a", "b"]'}, 2) == ["a", "b"]
    for text in ("a,b", '"a"', "[1, 2]"):
        with pytest.raises(BadRequest, match='"row_keys" must be a list of strings'):
            parse_row_keys({"row_keys": text}, 2)


def test_prediction_keys_are_the_label_row_id_or_the_entity_keys_and_time() -> None:
    fraud, spend = declared_model(models, "fraud_model"), declared_model(models, "customer_spend")
    frame = pd.DataFrame(
        {
            "transaction_id": ["t1", "t2"],
            "customer_id": [7, 8],
            "event_timestamp": pd.to_datetime(["2026-11-30 10:00:05", "2026-11-30 11:00:00"]),
        }
    )
    assert fraud.prediction_keys(frame) == ["t1", "t2"]
    assert spend.prediction_keys(frame) == [
        "customer_id=7|at=2026-11-30T10:00:05",
        "customer_id=8|at=2026-11-30T11:00:00",
    ]
    assert spend.prediction_keys(frame[["customer_id"]]) is None


def test_a_bundle_carries_its_models_prediction_keys_so_scoring_needs_no_declaration(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    spend = declared_model(models, "customer_spend").declaration
    toy = bundles["1"]
    written = write_bundle(
        tmp_path / "1",
        toy.model,
        "1",
        toy.path / MODEL_FILE,
        toy.reference,
        toy.problem,
        toy.drift,
        prediction_keys=spend.prediction_keys,
    )
    keys = read_bundle(written.path).prediction_keys
    assert keys == PredictionKeys(None, ("customer_id",))
    entities = {"customer_id": [7], "event_timestamp": ["2026-11-30T10:00:05Z"]}
    assert keys.of(pd.DataFrame(entities)) == ["customer_id=7|at=2026-11-30T10:00:05"]
    assert read_bundle(toy.path).prediction_keys is None  # an older bundle: callers send row_keys


def test_an_unreadable_rollout_state_costs_its_row_labels_and_its_series_nothing_more(
    tmp_path: Path,
) -> None:
    # The control plane is handed the rollout's phase and collector; a state file it cannot
    # read must not set good spool files aside, nor take down /metrics for every model.
    rollouts = RolloutStore(tmp_path / "serving" / ".rollouts")
    rollouts.save(RolloutState("good_model", "2", "1", "canary", 0, 0.0, 0.0))
    rollouts.path("toy_model").write_text('{"model": "toy_model", "phase": ')
    plane = ControlPlane(
        tmp_path / "serving",
        DataPlane(tmp_path / "dataplane"),
        tmp_path / "logs",
        None,
        lake=tmp_path / "lake",
        collectors=[RolloutCollector(rollouts, FileErrors(tmp_path))],
        rollout_phase=rollout_phase(rollouts),
    )
    spool = PredictionSpool(ServingHome(plane.root).prediction_spool, "toy_model", "1", FEATURES)
    spool.add(_scored("r1", 3, 1_764_547_200.0))
    spool.close()
    assert plane.ingest() == {"toy_model": 3}
    logged = read_predictions(tmp_path / "lake", "toy_model")
    assert list(logged["rollout"]) == ["", "", ""]
    metrics = generate_latest(plane.registry).decode().splitlines()
    phases = [line for line in metrics if line.startswith("shipway_rollout_phase{")]
    assert phases == [
        'shipway_rollout_phase{champion="1",model="good_model",phase="canary",version="2"} 1.0'
    ]
    assert 'shipway_prediction_log_rows_total{model="toy_model"} 3.0' in metrics


def test_an_unreadable_spool_file_is_kept_aside_and_the_others_are_logged(tmp_path: Path) -> None:
    spool = _spool(tmp_path / "spool")
    spool.add(_scored("good", 2, 1_764_547_200.123456789))
    spool.close()
    folder = tmp_path / "spool" / "toy_model"
    (folder / "1-0-0-0.json").write_text('{"model": "toy_model", "score": [0.5]}')
    assert ingest(tmp_path / "spool", tmp_path / "lake") == {"toy_model": 2}
    assert [p.name for p in folder.glob("*.rejected")] == ["1-0-0-0.rejected"]
    logged = read_predictions(tmp_path / "lake", "toy_model")
    assert logged["at"][0] == pd.Timestamp("2025-12-01 00:00:00.123456", tz="UTC")


def test_a_full_disk_costs_the_spool_no_row_and_its_writer_no_life(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk refuses every write for a while (ENOSPC, injected into the spool's writes).
    The writer thread keeps running, keeps every row queued and counts the failures; once the
    disk takes writes again, every row lands, in order, and none is counted dropped."""
    import errno

    from shipway.serving import prediction_spool

    real = prediction_spool.write_atomic
    full = {"on": True}

    def write(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, mode)

    monkeypatch.setattr(prediction_spool, "write_atomic", write)
    spool = PredictionSpool(tmp_path / "spool", "toy_model", "1", FEATURES, flush_seconds=0.02)
    now = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    for i in range(5):
        spool.add(_scored(f"r{i}", 2, now + i))
        time.sleep(0.03)
    deadline = time.monotonic() + 5
    while spool.write_errors < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert spool.write_errors >= 3 and spool._thread.is_alive()
    assert sum(len(s.scores) for s in spool.queue) == 10 and spool.dropped_rows == 0
    full["on"] = False
    spool.add(_scored("r5", 2, now + 5))
    while spool.queue and time.monotonic() < deadline:
        time.sleep(0.01)
    spool.close()
    assert spool.written_rows == 12 and spool.dropped_rows == 0
    ingest(tmp_path / "spool", tmp_path / "lake")
    logged = read_predictions(tmp_path / "lake", "toy_model")
    assert logged["request_id"].tolist() == [f"r{i}" for i in range(6) for _ in range(2)]


def test_rows_the_spool_cannot_keep_are_counted_and_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its queue limit on a full disk, the spool drops the oldest requests: counted in
    `shipway_prediction_rows_dropped_total`, which ShipwayPredictionRowsDropped alerts on."""
    import errno

    from prometheus_client import CollectorRegistry

    from shipway.serving import prediction_spool

    def full(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(prediction_spool, "write_atomic", full)
    monkeypatch.setattr(prediction_spool, "MAX_QUEUED", 3)
    spool = _spool(tmp_path / "spool")
    for i in range(5):
        spool.add(_scored(f"r{i}", 2, float(i)))
    assert spool.flush() is None and spool.write_errors == 1
    assert [s.request_id for s in spool.queue] == ["r2", "r3", "r4"]
    assert spool.dropped_rows == 4

    class Exported:
        def collect(self) -> Iterator[Metric]:
            yield from prediction_spool.spool_metrics(spool, ["toy_model", "1"])

    registry = CollectorRegistry()
    registry.register(Exported())
    text = generate_latest(registry).decode()
    assert 'shipway_prediction_rows_dropped_total{model="toy_model",version="1"} 4.0' in text
    assert 'shipway_prediction_spool_write_errors_total{model="toy_model",version="1"} 1.0' in text
    assert 'shipway_prediction_spool_queued_rows{model="toy_model",version="1"} 6.0' in text
    spool.close()
    assert spool.dropped_rows == 10, "rows still queued at exit are counted too"


def test_one_call_scoring_keys_an_epoch_time_as_the_label_will_name_it() -> None:
    """An epoch-seconds event_timestamp was read as nanoseconds: a 1970 key no label joins."""
    keys = PredictionKeys(None, ("customer_id",))
    at = 1_763_112_600  # 2025-11-14T09:30:00Z
    expected = ["customer_id=17|at=2025-11-14T09:30:00"]
    for stamp in (at, float(at), "2025-11-14T09:30:00Z", "2025-11-14T14:30:00+05:00"):
        entities = {"customer_id": [17], "event_timestamp": [stamp]}
        assert row_keys_of(entities, keys, 1) == expected, stamp
    assert row_keys_of({"customer_id": [17]}, keys, 1) is None
    with pytest.raises(BadRequest, match=r"entities\.event_timestamp: 'yesterday'"):
        row_keys_of({"customer_id": [17], "event_timestamp": ["yesterday"]}, keys, 1)
    fraud = PredictionKeys("transaction_id", ())
    assert row_keys_of({"transaction_id": ["t-81"]}, fraud, 1) == ["t-81"]


def test_each_row_names_the_feature_version_that_computed_it_and_older_tables_gain_the_column(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    # A table logged before the column existed: its rows read with no version.
    before = SCHEMA.remove(SCHEMA.get_field_index("feature_version"))
    at = datetime(2026, 12, 1, 8, tzinfo=UTC)
    row = {
        "request_id": "r0", "model": "toy_model", "version": "0", "served": True, "caller": "",
        "rollout": "", "at": at, "day": "2026-12-01", "row_key": "r0-0", "features": FEATURES,
        "vector": [1.0, 2.0], "score": 0.5, "batch": "old",
    }  # fmt: skip
    old_rows = pa.Table.from_pylist([row], schema=before)
    write_deltalake(str(lake / table_name("toy_model")), old_rows, partition_by=["day"])
    for version, feature_version in (("1", "aaaaaaaaaaaa"), ("2", "bbbbbbbbbbbb")):
        spool = PredictionSpool(
            tmp_path / "spool", "toy_model", version, FEATURES, feature_version, flush_seconds=3600
        )
        spool.add(_scored(f"r{version}", 2, datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp()))
        spool.close()
    legacy = _spool(tmp_path / "spool", "3")
    legacy.add(_scored("r3", 1, datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()))
    legacy.close()
    assert ingest(tmp_path / "spool", lake) == {"toy_model": 5}
    logged = read_predictions(lake, "toy_model")
    by_version = dict(zip(logged["version"], logged["feature_version"], strict=True))
    assert by_version == {"0": "", "1": "aaaaaaaaaaaa", "2": "bbbbbbbbbbbb", "3": ""}
