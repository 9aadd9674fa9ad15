"""customer_spend, the second model: a regression on another entity, with its own label
table, feature service, gates and serving settings, through the same platform."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from shipway.data.lake import read_table
from shipway.features.service import registry_spec
from shipway.features.store import feature_store, online_features
from tests.conftest import Platform, check_evaluation, definitions_of, materialization

pytestmark = pytest.mark.integration
MODEL = "customer_spend"


def test_customer_spend_beats_its_naive_baseline_and_serves_forecasts(platform: Platform) -> None:
    definitions = definitions_of()
    result = platform.materialize(
        definitions,
        "customer_spend_lifecycle",
        "customer_spend_training_set",
        MODEL,
        "customer_spend_deployment",
    )
    gate = check_evaluation(result, "customer_spend_gate")
    assert result.success, gate.description
    trained = materialization(result, MODEL)
    version = str(trained["model_version"])
    assert float(str(trained["validation_mae_to_baseline"])) <= 0.95
    assert float(str(trained["validation_mae"])) < float(str(trained["validation_baseline_mae"]))

    # Rows are customer-days of the label table, each with a label 7 days of spend later.
    training_set = read_table(platform.home.table("customer_spend_training_set"))
    assert list(training_set.columns[:3]) == ["customer_id", "event_timestamp", "spend_next_7d"]
    assert (training_set["spend_next_7d"] >= 0).all()
    cutoff = read_table(platform.home.table("customer_spend_labels"))["event_timestamp"].max()
    assert training_set["event_timestamp"].max() <= cutoff - pd.Timedelta(days=7)

    # Serving: the feature service's vector from the online store, the forecast from MLServer,
    # identical to the registered model file's.
    store = feature_store(platform.home)
    spec = registry_spec(store, "customer_spend_v1")
    customers = pd.DataFrame({"customer_id": np.arange(600) % 400})
    vectors = online_features(store, customers, spec).to_numpy()
    serving = platform.stack.serving()
    answered, forecast = serving.infer(MODEL, vectors, spec.feature_names)
    assert answered == version
    regressor = xgb.XGBRegressor()
    regressor.load_model(platform.home.serving / MODEL / version / "model.ubj")
    np.testing.assert_allclose(forecast, regressor.predict(vectors), rtol=1e-4)
    # Its own serving settings: a drift window of 500 rows, whatever other models use.
    metrics = serving.version_metrics(MODEL, version)
    assert f'shipway_drift_window_samples{{model="{MODEL}",version="{version}"}} 500.0' in metrics
