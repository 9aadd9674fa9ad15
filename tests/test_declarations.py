"""Model declarations: the committed models load, checked against the sources they name; a
malformed or inconsistent declaration fails at load in one line naming the file, the field and
what to do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shipway.errors import PolicyError
from shipway.models.catalog import load_models
from shipway.models.declaration import load_declaration
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT
from tests.conftest import assets_copy

FRAUD = ASSETS_DIR / "fraud" / "model.yaml"


def test_both_committed_models_load_with_the_vector_of_their_feature_service() -> None:
    models = {m.name: m for m in load_models(ASSETS_DIR, RAW_EVENTS_CONTRACT)}
    assert set(models) == {"fraud_model", "customer_spend"}
    fraud, spend = models["fraud_model"], models["customer_spend"]
    assert fraud.declaration.problem == "binary_classification"
    assert spend.declaration.problem == "regression"
    # Request-time features are Feast's on-demand view, computed from what the caller sends.
    assert fraud.service.feature_names[:6] == [
        "amount",
        "hour_of_day",
        "is_night",
        "is_online",
        "merchant_category_code",
        "amount_to_customer_avg_30d",
    ]
    assert set(fraud.service.request_fields) == {
        "event_timestamp",
        "amount",
        "channel",
        "merchant_category",
    }
    assert len(fraud.service.feature_names) == 16
    assert spend.service.join_keys == ("customer_id",)
    assert spend.service.request_fields == ()
    assert spend.declaration.training.baseline in spend.service.feature_names
    assert spend.declaration.training_set == "customer_spend_training_set"


def _edit(path: Path, old: str, new: str) -> None:
    """Replace the first occurrence of `old`: the field a case names."""
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


Edit = Callable[[Path], object]
CASES: list[tuple[str, Edit, str]] = [
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "min: 0.80", "min: high"),
        "gates.0.min: Input should be a valid number",
    ),
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "psi_threshold", "psi_treshold"),
        "drift.psi_treshold: Extra inputs are not permitted",
    ),
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "metric: roc_auc", "metric: mae"),
        "gates: [0].metric 'mae' is not a binary_classification metric; use one of",
    ),
    (
        "customer_spend",
        lambda d: _edit(d / "customer_spend/model.yaml", "\ngates:\n", "\ngates: []\nold_gates:\n"),
        "old_gates: Extra inputs",
    ),
    (
        "customer_spend",
        lambda d: d.joinpath("customer_spend/model.yaml").write_text(
            d.joinpath("customer_spend/model.yaml").read_text().split("\ngates:\n")[0]
            + "\ngates: []\n"
            + "drift:\n"
            + d.joinpath("customer_spend/model.yaml").read_text().split("\ndrift:\n")[1]
        ),
        "gates: a regression model needs at least one gate; add one on a metric of ['mae'",
    ),
    (
        "customer_spend",
        lambda d: _edit(
            d / "customer_spend/model.yaml", "  baseline: customer_amount_sum_7d\n", ""
        ),
        "training: a regression model names its naive forecast in training.baseline",
    ),
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "name: fraud_model\n", ""),
        "name: Field required",
    ),
    ("fraud", lambda d: _edit(d / "fraud/model.yaml", "serving:", "serving: [unclosed"), "YAML"),
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "kind: categorical", "kind: ordinal"),
        "drift.features.merchant_category_code.kind: Input should be 'numeric', 'categorical' "
        "or 'hour_of_day'",
    ),
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "    merchant_category_code:\n", "    mcc:\n"),
        "drift.features.mcc: 'mcc' is not a feature of fraud_model_v1",
    ),
    (
        "fraud",
        lambda d: _edit(
            d / "fraud/model.yaml", "min_window_samples: 300", "min_window_samples: 5000"
        ),
        "drift.min_window_samples 5000 > serving.drift_window 1000: the window could never",
    ),
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "fraud_model_v1\n", "fraud_model_v9\n"),
        "feature_service: no feature service 'fraud_model_v9' in feature_repo/ (known: "
        "['customer_spend_v1', 'fraud_model_v1']); define it there or fix the name",
    ),
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "column: is_fraud", "column: is_fraudulent"),
        "label.column: raw_events has no column(s) ['is_fraudulent']",
    ),
    (
        "customer_spend",
        lambda d: _edit(
            d / "customer_spend/model.yaml", "table: customer_spend_labels", "table: spend_labels"
        ),
        "label.table: 'spend_labels' is not a Delta table Shipway writes",
    ),
    (
        "fraud",
        lambda d: _edit(
            d / "fraud/model.yaml", "[customer_id, merchant_id]", "[customer_id, terminal_id]"
        ),
        "entity_keys: raw_events has no column(s) ['terminal_id']",
    ),
    (
        "customer_spend",
        lambda d: _edit(
            d / "customer_spend/model.yaml", "entity_keys: [customer_id]", "entity_keys: []"
        ),
        "entity_keys: List should have at least 1 item",
    ),
    (
        "customer_spend",
        lambda d: _edit(
            d / "customer_spend/model.yaml", "name: customer_spend\n", "name: fraud_model\n"
        ),
        "name: fraud_model is already declared in",
    ),
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "column: channel", "column: device"),
        "release.slices.0.column: 'device' is neither a column of raw_events nor a feature of",
    ),
    (
        "fraud",
        lambda d: _edit(
            d / "fraud/model.yaml",
            "non_inferiority_margin: 0.02",
            "non_inferiority_margin: 0.02\n      required_improvement: 0.01",
        ),
        "gates.0.versus_champion: give exactly one of non_inferiority_margin or",
    ),
    (
        "customer_spend",
        lambda d: _edit(
            d / "customer_spend/model.yaml",
            "max_model_mb: 5",
            "max_calibration_error: 0.1\n    max_model_mb: 5",
        ),
        "release: operational.max_calibration_error: calibration is gated for classifiers only",
    ),
    (
        "fraud",
        lambda d: _edit(
            d / "fraud/model.yaml", "needs_approval: [feature_service,", "needs_approval: [colour,"
        ),
        "release.approval.needs_approval.0: Input should be 'first_version'",
    ),
    (
        "fraud",
        lambda d: _edit(d / "fraud/model.yaml", "replicas: 1 ", "replicas: 9 "),
        "serving.replicas: Input should be less than or equal to 8",
    ),
    (
        "customer_spend",
        lambda d: (d / "customer_spend/contracts/training_set.yaml").unlink(),
        "the training set needs a contract at",
    ),
]


@pytest.mark.parametrize(("folder", "edit", "message"), CASES)
def test_a_bad_declaration_fails_at_load_in_one_line_naming_file_and_field(
    tmp_path: Path, folder: str, edit: Edit, message: str
) -> None:
    models_dir = assets_copy(tmp_path)
    edit(models_dir)
    with pytest.raises(PolicyError) as raised:
        load_models(models_dir, RAW_EVENTS_CONTRACT)
    text = str(raised.value)
    assert message in text
    assert str(models_dir / folder) in text
    assert "\n" not in text


def test_a_missing_declaration_file_is_named() -> None:
    with pytest.raises(PolicyError, match=r"nowhere\.yaml not found"):
        load_declaration(Path("/nowhere.yaml"))
