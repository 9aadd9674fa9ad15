"""The distributed engine: both models trained on a real Dask cluster (a `dask scheduler` and
two `dask worker` processes on loopback), their quality compared with in-process training, the
engine in lineage, and the release gate reproducing a Dask-trained version on Dask."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from shipway.features.training_sets import read_version
from shipway.models.catalog import declared_model, load_models
from shipway.models.distributed import IN_PROCESS, SCHEDULER_ENV
from shipway.models.training import ENGINE_TAG, train
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT
from shipway.release.commands import reproduce_version
from tests.conftest import Platform, check_evaluation, definitions_of, materialization

pytestmark = pytest.mark.integration

# How far a validation metric of the same rows may move between one process and two workers:
# the workers build their histograms from their own halves, so the trees differ slightly.
QUALITY = {"fraud_model": ("roc_auc", 0.02), "customer_spend": ("mae_to_baseline", 0.03)}


@pytest.mark.parametrize("model", sorted(QUALITY))
def test_a_model_trains_on_dask_as_well_as_in_process_and_reproduces_there(
    platform: Platform, dask_scheduler: str, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCHEDULER_ENV, dask_scheduler)
    result = platform.materialize(
        definitions_of(), "__ASSET_JOB", f"{model}_training_set", model, raise_on_error=True
    )
    trained = materialization(result, model)
    version = str(trained["model_version"])
    assert trained["training_engine"] == "dask, 2 workers"
    tags = MlflowClient(platform.stack.mlflow_url).get_model_version(model, version).tags
    assert tags[ENGINE_TAG] == "dask, 2 workers"

    # The same rows trained in this process: a model of the same quality.
    declared = declared_model(load_models(ASSETS_DIR, RAW_EVENTS_CONTRACT), model)
    found = read_version(platform.home, declared.declaration.training_set, None)
    assert str(found.info.version) == trained["training_set_version"]
    local = train(found.frame, declared.declaration, found.features)
    assert local.engine == IN_PROCESS
    metric, tolerance = QUALITY[model]
    on_dask = float(str(trained[f"validation_{metric}"]))
    print(f"{model} {metric}: dask {on_dask:.4f}, in-process {local.metrics[metric]:.4f}")
    assert on_dask == pytest.approx(local.metrics[metric], abs=tolerance)
    assert trained["train_rows"] == local.train_rows

    # The gate fitted it again on the cluster from the recorded lineage: the same bytes (its
    # reproducibility rule), so it passed.
    gate = check_evaluation(result, f"{model}_gate")
    assert gate.passed, gate.description
    # In-process, the trees differ, and the report names the engine as the reason.
    monkeypatch.delenv(SCHEDULER_ENV)
    elsewhere, _ = reproduce_version(
        platform.home, platform.stack.mlflow_url, declared, version, print
    )
    assert not elsewhere.result.identical
    assert elsewhere.result.differences == [
        f"training engine: recorded dask, 2 workers, retrained {IN_PROCESS} "
        f"(set ${SCHEDULER_ENV} to a cluster of that shape)"
    ]
