"""Batch scoring: `<model>_batch_scores` scores a day's population with the champion, the same
rows score the same online, the rows enter the prediction log once, and the Dask cluster gives
the same scores. The model is customer_spend's declaration under a name of its own, so its
champion and rollouts are this module's alone on the shared platform."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import httpx
import pandas as pd
import pytest

from shipway.data.lake import read_table, table_info
from shipway.errors import run_failures
from shipway.models.batch import population
from shipway.models.catalog import declared_model, load_models
from shipway.models.distributed import SCHEDULER_ENV
from shipway.names import EVENT_TIMESTAMP, SCORE
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT
from shipway.serving.prediction_log import BATCH_ROLLOUT, read_predictions
from shipway.serving.trees import MAX_TREE_ROWS
from tests.conftest import Platform, definitions_of, materialization

pytestmark = pytest.mark.integration
MODEL = "spend_batch"
SCORES = f"{MODEL}_batch_scores"
# The platform's events end on 2026-10-26 at 01:00: a day's end after that sees every feature
# row the online store holds, so batch and online look up the same values.
LAST_DAY = "2026-10-26"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of declarations holding customer_spend's, renamed."""
    folder = tmp_path_factory.mktemp("models") / MODEL
    (folder / "contracts").mkdir(parents=True)
    source = ASSETS_DIR / "customer_spend"
    declaration = (source / "model.yaml").read_text()
    assert "\nname: customer_spend\n" in declaration
    renamed = declaration.replace("\nname: customer_spend\n", f"\nname: {MODEL}\n")
    (folder / "model.yaml").write_text(renamed)
    contract = (source / "contracts" / "training_set.yaml").read_text()
    (folder / "contracts" / "training_set.yaml").write_text(
        contract.replace("dataset: customer_spend_training_set", f"dataset: {MODEL}_training_set")
    )
    return folder.parent


def _score(platform: Platform, models: Path, day: str) -> dict[str, object]:
    result = (
        definitions_of(models)
        .resolve_job_def(f"{MODEL}_batch_scoring")
        .execute_in_process(instance=platform.instance, partition_key=day, raise_on_error=False)
    )
    assert result.success, run_failures(result)
    return materialization(result, SCORES)


def _day(platform: Platform, day: str) -> pd.DataFrame:
    scores = read_table(platform.home.table(SCORES))
    return scores[scores["event_date"] == day].sort_values("customer_id", ignore_index=True)


def _batch_rows(platform: Platform) -> pd.DataFrame:
    logged = read_predictions(platform.home.lake, MODEL)
    return logged[logged["rollout"] == BATCH_ROLLOUT]


@pytest.fixture(scope="module")
def champion(platform: Platform, models: Path) -> str:
    deployed = platform.materialize(
        definitions_of(models),
        f"{MODEL}_lifecycle",
        f"{MODEL}_training_set",
        MODEL,
        f"{MODEL}_deployment",
    )
    assert deployed.success, run_failures(deployed)
    return str(materialization(deployed, MODEL)["model_version"])


def test_a_day_s_population_scores_as_it_does_online_and_is_logged_once(
    platform: Platform, models: Path, champion: str
) -> None:
    found = _score(platform, models, LAST_DAY)
    assert found["model_version"] == champion and found["engine"] == "in-process"
    declared = declared_model(load_models(models, RAW_EVENTS_CONTRACT), MODEL)
    entities = population(platform.home, declared, date.fromisoformat(LAST_DAY))
    scores = _day(platform, LAST_DAY)
    assert found["rows"] == len(scores) == len(entities) > 100
    assert scores["customer_id"].tolist() == entities["customer_id"].tolist()
    assert (
        pd.to_datetime(scores[EVENT_TIMESTAMP], utc=True) == pd.Timestamp("2026-10-27", tz="UTC")
    ).all()
    assert set(scores["model_version"]) == {champion}

    # Online, through the feature service's lookup and the front door, a request at a time of
    # up to MAX_TREE_ROWS rows (a serving team's call): the same score for every customer.
    customers = scores["customer_id"].astype(int).tolist()
    online: list[float] = []
    for start in range(0, len(customers), MAX_TREE_ROWS):
        answer = httpx.post(
            f"{platform.stack.features_url}/score/{MODEL}",
            json={"entities": {"customer_id": customers[start : start + MAX_TREE_ROWS]}},
            headers=platform.caller,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == champion
        online += answer.json()["scores"]
    assert online == scores[SCORE].tolist()

    # In the prediction log once, as batch rows with the vectors scored and joinable keys.
    logged = _batch_rows(platform)
    day_rows = logged[logged["request_id"] == f"batch-{LAST_DAY}-v{champion}"]
    assert len(day_rows) == len(scores) and set(day_rows["version"]) == {champion}
    assert day_rows["served"].all()
    assert sorted(day_rows["score"]) == sorted(scores[SCORE])
    assert day_rows["row_key"].iloc[0].startswith("customer_id=")
    assert day_rows["row_key"].iloc[0].endswith("|at=2026-10-27T00:00:00")

    # Scored again: the day's partition is replaced, the log is not written twice.
    before = table_info(platform.home.table(SCORES)).version
    again = _score(platform, models, LAST_DAY)
    assert again["prediction_log_rows"] == 0
    assert table_info(platform.home.table(SCORES)).version == before + 1
    assert _day(platform, LAST_DAY)[SCORE].tolist() == scores[SCORE].tolist()
    assert len(_batch_rows(platform)) == len(logged)


def test_on_dask_a_day_scores_the_same_as_in_process(
    platform: Platform,
    models: Path,
    champion: str,
    dask_scheduler: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    day = "2026-10-20"
    here = _score(platform, models, day)
    in_process = _day(platform, day)
    monkeypatch.setenv(SCHEDULER_ENV, dask_scheduler)
    there = _score(platform, models, day)
    assert there["engine"] == "dask, 2 workers" and here["engine"] == "in-process"
    on_dask = _day(platform, day)
    pd.testing.assert_frame_equal(on_dask, in_process)
    # The champion's rows of that day are logged once, whichever engine scored them.
    assert there["prediction_log_rows"] == 0 < int(str(here["prediction_log_rows"]))


def test_a_day_with_no_active_entity_writes_nothing(
    platform: Platform, models: Path, champion: str
) -> None:
    # The first label rows are stamped at 2026-09-01's end: none is before it.
    found = _score(platform, models, "2026-09-01")
    assert found["rows"] == 0 and found["prediction_log_rows"] == 0
    path = platform.home.table(SCORES)
    assert not path.exists() or "2026-09-01" not in set(read_table(path)["event_date"])
