"""Training: a time-based split, XGBoost for the declared problem, validation metrics, and
the MLflow run + registered version.

The feature vector is the one the training set recorded (its feature service's, in order); it
travels with the model as the MLflow signature and the drift reference's feature order.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    precision_recall_curve,
    r2_score,
    roc_auc_score,
)

from shipway.errors import ShipwayError
from shipway.models.declaration import ModelDeclaration
from shipway.models.distributed import IN_PROCESS, DaskCluster, fit_on_dask
from shipway.models.estimation import ESTIMATOR_ARTIFACT, QualityEstimator, fit_estimator
from shipway.models.tracking import (
    FEATURE_VERSION_TAG,
    git_commit,
    lock_hash,
    model_version_url,
    run_artifact,
    run_url,
)
from shipway.names import SCORE
from shipway.serving.bundle import ESTIMATOR_FILE, MODEL_FILE, REFERENCE_FILE, Bundle, write_bundle
from shipway.serving.explanations import reference_attributions
from shipway.stats.drift import HOUR_OF_DAY, ReferenceProfile, build_reference

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = f"drift/{REFERENCE_FILE}"
ENGINE_TAG = "shipway.training_engine"


@dataclass(frozen=True)
class TrainedModel:
    model: xgb.XGBModel
    features: list[str]
    metrics: dict[str, float]
    reference: ReferenceProfile
    split_at: pd.Timestamp
    train_rows: int
    validation_rows: int
    estimator: QualityEstimator
    """How monitoring estimates its quality before labels land, fitted on the validation rows."""
    engine: str = IN_PROCESS
    """Where the trees were fitted: in-process, or on a Dask cluster of so many workers."""


@dataclass(frozen=True)
class OnDask:
    """Fit on a Dask cluster, its workers reading `table` v`version` (the training set the
    frame handed to `train` was read from)."""

    cluster: DaskCluster
    table: Path
    version: int


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str
    run_url: str
    version_url: str


def time_split(
    frame: pd.DataFrame, validation_fraction: float, label: str, classification: bool
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Train on the past, validate on the most recent `validation_fraction` of time."""
    ts = pd.to_datetime(frame["event_timestamp"], utc=True)
    ordered = ts.sort_values(ignore_index=True)
    if ordered.empty:
        raise ShipwayError("the training set has no rows; land more days of events")
    split_at = pd.Timestamp(ordered.iloc[int(len(ordered) * (1.0 - validation_fraction))])
    train, valid = frame[ts < split_at], frame[ts >= split_at]
    for name, part in (("training", train), ("validation", valid)):
        if part.empty or (classification and part[label].nunique() < 2):
            raise ShipwayError(
                f"the {name} split (split at {split_at}) has "
                + ("no rows" if part.empty else "only one label value")
                + "; land more days of events before training"
            )
    return train, valid, split_at


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    precision, recall, _ = precision_recall_curve(labels, scores)
    at_p50 = recall[precision >= 0.5]
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "log_loss": float(log_loss(labels, scores)),
        "brier": float(brier_score_loss(labels, scores)),
        "recall_at_precision_50": float(at_p50.max()) if len(at_p50) else 0.0,
        "label_rate": float(np.mean(labels)),
    }


def regression_metrics(
    labels: np.ndarray, predictions: np.ndarray, baseline: np.ndarray
) -> dict[str, float]:
    """Errors of the model and of the naive baseline forecast on the same rows."""

    def rmse(forecast: np.ndarray) -> float:
        return float(np.sqrt(np.mean((labels - forecast) ** 2)))

    mae, baseline_mae = (float(mean_absolute_error(labels, f)) for f in (predictions, baseline))
    model_rmse, baseline_rmse = rmse(predictions), rmse(baseline)
    return {
        "mae": mae,
        "rmse": model_rmse,
        "r2": float(r2_score(labels, predictions)),
        "baseline_mae": baseline_mae,
        "baseline_rmse": baseline_rmse,
        "mae_to_baseline": mae / baseline_mae if baseline_mae > 0 else float("nan"),
        "rmse_to_baseline": model_rmse / baseline_rmse if baseline_rmse > 0 else float("nan"),
        "label_mean": float(np.mean(labels)),
    }


def _hour_feature(declaration: ModelDeclaration) -> str | None:
    """The feature drift compares hour by hour, if the model has one."""
    return next((n for n, k in declaration.drift.kinds().items() if k == HOUR_OF_DAY), None)


def train(
    training_set: pd.DataFrame,
    declaration: ModelDeclaration,
    features: list[str],
    on_dask: OnDask | None = None,
) -> TrainedModel:
    """Fit, validate and profile a model. The trees are fitted in-process, or with `on_dask` on
    that cluster; validation, the drift reference and the quality estimator are computed here
    from the fitted model either way."""
    training, label = declaration.training, declaration.label.column
    classification = declaration.problem == "binary_classification"
    train_part, valid_part, split_at = time_split(
        training_set, training.validation_fraction, label, classification
    )
    # The scikit-learn interface: MLServer's XGBoost runtime loads a classifier saved this way
    # as a classifier (so it answers `predict_proba`) and a regressor as a regressor.
    common = {"tree_method": "hist", "random_state": training.seed, "n_jobs": 0}
    model: xgb.XGBModel = (
        xgb.XGBClassifier(
            objective="binary:logistic", eval_metric="aucpr", **common, **training.params
        )
        if classification
        else xgb.XGBRegressor(
            objective="reg:squarederror", eval_metric="rmse", **common, **training.params
        )
    )
    # Plain matrices, no feature names: MLServer feeds unnamed tensors, and the feature order
    # travels with the model (its signature and drift reference).
    engine = IN_PROCESS
    if on_dask is None:
        model.fit(train_part[features].to_numpy(), train_part[label].to_numpy())
    else:
        model, engine = fit_on_dask(
            on_dask.cluster,
            model,
            on_dask.table,
            on_dask.version,
            features,
            label,
            split_at,
        )
    x_valid, y_valid = valid_part[features].to_numpy(), valid_part[label].to_numpy()
    x_train = train_part[features].to_numpy()
    if isinstance(model, xgb.XGBClassifier):
        valid_scores = model.predict_proba(x_valid)[:, 1]
        metrics = classification_metrics(y_valid, valid_scores)
        train_scores = model.predict_proba(x_train)[:, 1]
    else:
        baseline = valid_part[str(training.baseline)].to_numpy(dtype=float)
        valid_scores = model.predict(x_valid)
        metrics = regression_metrics(y_valid, valid_scores, baseline)
        train_scores = model.predict(x_train)
    estimator = fit_estimator(declaration.problem, x_valid, valid_scores, y_valid, training.seed)
    unknown = sorted(set(declaration.drift.features) - {*features, SCORE})
    if unknown:
        raise ShipwayError(
            f"{declaration.name}: drift.features names {unknown}, not features of "
            f"{declaration.feature_service} ({features}) nor {SCORE!r}"
        )
    reference = build_reference(
        train_part,
        features,
        declaration.serving.reference_bins,
        kinds=declaration.drift.kinds(),
        scores=train_scores,
        attributions=reference_attributions(
            model.get_booster(), x_train, features, _hour_feature(declaration), training.seed
        ),
    )
    return TrainedModel(
        model,
        features,
        metrics,
        reference,
        split_at,
        len(train_part),
        len(valid_part),
        estimator,
        engine,
    )


def signature(features: list[str]) -> ModelSignature:
    """The model's inputs by name and order, as MLflow shows and checks them."""
    return ModelSignature(
        inputs=Schema([ColSpec("double", name) for name in features]),
        outputs=Schema([ColSpec("double", SCORE)]),
    )


def log_and_register(
    trained: TrainedModel,
    declaration: ModelDeclaration,
    tracking_uri: str,
    lineage: dict[str, str],
) -> RegisteredModel:
    """One MLflow run with params, metrics, lineage tags and artifacts; one new model version."""
    mlflow.set_tracking_uri(tracking_uri)
    name = declaration.name
    experiment = mlflow.set_experiment(name)
    tags = {
        "shipway.git_commit": git_commit(),
        "shipway.lock_sha256": lock_hash(),
        ENGINE_TAG: trained.engine,
        **{f"shipway.{k}": v for k, v in lineage.items()},
    }
    with mlflow.start_run(tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(
            {
                **declaration.training.params,
                "problem": declaration.problem,
                "feature_service": declaration.feature_service,
                "seed": declaration.training.seed,
                "validation_fraction": declaration.training.validation_fraction,
                "features": ",".join(trained.features),
                "split_at": trained.split_at.isoformat(),
                "train_rows": trained.train_rows,
                "validation_rows": trained.validation_rows,
            }
        )
        mlflow.log_metrics(trained.metrics)
        ref_path = trained.reference.save(Path(tmp) / REFERENCE_FILE)
        mlflow.log_artifact(str(ref_path), artifact_path="drift")
        estimator = trained.estimator.save(Path(tmp) / ESTIMATOR_FILE)
        mlflow.log_artifact(str(estimator), artifact_path=ESTIMATOR_ARTIFACT.rsplit("/", 1)[0])
        info = mlflow.xgboost.log_model(
            trained.model,
            name="model",
            model_format=MODEL_FILE.rsplit(".", 1)[1],
            registered_model_name=name,
            signature=signature(trained.features),
            tags=tags,
            # Explicit requirements: inferring them imports and probes the environment (slow).
            pip_requirements=[f"xgboost=={xgb.__version__}"],
        )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    log.info("registered %s version %s from run %s", name, version, run.info.run_id)
    return RegisteredModel(
        name=name,
        version=version,
        run_id=run.info.run_id,
        run_url=run_url(tracking_uri, experiment.experiment_id, run.info.run_id),
        version_url=model_version_url(tracking_uri, name, version),
    )


def download_model(tracking_uri: str, model: str, version: str, dest: Path) -> tuple[Path, Path]:
    """The XGBoost file and the drift reference of a registered version."""
    client = MlflowClient(tracking_uri)
    mv = client.get_model_version(model, version)
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model}/{version}",
            dst_path=str(dest / "model"),
            tracking_uri=tracking_uri,
        )
    )
    found = sorted(model_dir.rglob(f"*.{MODEL_FILE.rsplit('.', 1)[1]}"))
    if not found:
        raise ShipwayError(f"{model} v{version}: no {MODEL_FILE} in its MLflow artifacts")
    reference = Path(
        mlflow.artifacts.download_artifacts(
            run_id=mv.run_id,
            artifact_path=REFERENCE_ARTIFACT,
            dst_path=str(dest / "reference"),
            tracking_uri=tracking_uri,
        )
    )
    return found[0], reference


def registered_bundle(
    tracking_uri: str,
    declaration: ModelDeclaration,
    version: str,
    dest: Path,
    fault: dict[str, float] | None = None,
) -> Bundle:
    """The serving bundle of a registered version in `dest`: its model file, drift reference and
    quality estimator from MLflow, its serving settings from the declaration, its feature
    service and feature version from its run."""
    name = declaration.name
    model_file, reference_file = download_model(tracking_uri, name, version, dest / "src")
    registry = MlflowClient(tracking_uri)
    run_id = registry.get_model_version(name, version).run_id or ""
    run = registry.get_run(run_id)
    estimator_file = run_artifact(tracking_uri, run_id, ESTIMATOR_ARTIFACT, dest / "src")
    if estimator_file is None:
        log.warning("%s v%s has no quality estimator (trained before them)", name, version)
    return write_bundle(
        dest,
        name,
        version,
        model_file,
        ReferenceProfile.load(reference_file),
        declaration.problem,
        declaration.drift.rules(declaration.serving.drift_window),
        fault=fault,
        feature_service=run.data.params.get("feature_service"),
        replicas=declaration.serving.replicas,
        prediction_keys=declaration.prediction_keys,
        estimator_file=estimator_file,
        feature_version=run.data.tags.get(FEATURE_VERSION_TAG),
    )
