"""Training: a time-based split, XGBoost, validation metrics, and the MLflow run + version."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.tracking import MlflowClient
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

from shipway.errors import ShipwayError
from shipway.features.store import LABEL, MODEL_FEATURES
from shipway.models.declaration import ModelPolicy
from shipway.models.tracking import git_commit, model_version_url, run_url
from shipway.monitoring.drift import ReferenceProfile, build_reference
from shipway.serving.bundle import MODEL_FILE, REFERENCE_FILE

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = f"drift/{REFERENCE_FILE}"


@dataclass(frozen=True)
class TrainedModel:
    model: xgb.XGBClassifier
    metrics: dict[str, float]
    reference: ReferenceProfile
    split_at: pd.Timestamp
    train_rows: int
    validation_rows: int


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str
    run_url: str
    version_url: str


def time_split(
    frame: pd.DataFrame, validation_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Train on the past, validate on the most recent `validation_fraction` of time."""
    ts = pd.to_datetime(frame["event_timestamp"], utc=True)
    ordered = ts.sort_values(ignore_index=True)
    split_at = pd.Timestamp(ordered.iloc[int(len(ordered) * (1.0 - validation_fraction))])
    train, valid = frame[ts < split_at], frame[ts >= split_at]
    for name, part in (("training", train), ("validation", valid)):
        if part[LABEL].nunique() < 2:
            raise ShipwayError(
                f"the {name} split (split at {split_at}) has only one label value; "
                "land more days of events before training"
            )
    return train, valid, split_at


def evaluate(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
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


def train(training_set: pd.DataFrame, policy: ModelPolicy) -> TrainedModel:
    train_part, valid_part, split_at = time_split(training_set, policy.training.validation_fraction)
    # The scikit-learn interface: MLServer's XGBoost runtime loads a classifier saved this
    # way as a classifier, so it can answer `predict_proba`.
    model = xgb.XGBClassifier(
        objective="binary:logistic",
        tree_method="hist",
        eval_metric="aucpr",
        random_state=policy.training.seed,
        n_jobs=0,
        **policy.training.params,
    )
    # Plain matrices, no feature names: MLServer feeds unnamed tensors, and the feature order
    # travels with the model in its drift reference (and the run's `features` parameter).
    model.fit(train_part[MODEL_FEATURES].to_numpy(), train_part[LABEL].to_numpy())
    scores = model.predict_proba(valid_part[MODEL_FEATURES].to_numpy())[:, 1]
    metrics = evaluate(valid_part[LABEL].to_numpy(), scores)
    reference = build_reference(train_part, MODEL_FEATURES, policy.serving.reference_bins)
    return TrainedModel(model, metrics, reference, split_at, len(train_part), len(valid_part))


def log_and_register(
    trained: TrainedModel,
    policy: ModelPolicy,
    tracking_uri: str,
    lineage: dict[str, str],
) -> RegisteredModel:
    """One MLflow run with params, metrics, lineage tags and artifacts; one new model version."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(policy.model)
    tags = {"shipway.git_commit": git_commit(), **{f"shipway.{k}": v for k, v in lineage.items()}}
    with mlflow.start_run(tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(
            {
                **policy.training.params,
                "feature_service": policy.training.feature_service,
                "validation_fraction": policy.training.validation_fraction,
                "features": ",".join(MODEL_FEATURES),
                "split_at": trained.split_at.isoformat(),
                "train_rows": trained.train_rows,
                "validation_rows": trained.validation_rows,
            }
        )
        mlflow.log_metrics(trained.metrics)
        ref_path = trained.reference.save(Path(tmp) / REFERENCE_FILE)
        mlflow.log_artifact(str(ref_path), artifact_path="drift")
        info = mlflow.xgboost.log_model(
            trained.model,
            name="model",
            model_format=MODEL_FILE.rsplit(".", 1)[1],
            registered_model_name=policy.model,
            tags=tags,
            # Explicit requirements: inferring them imports and probes the environment (slow).
            pip_requirements=[f"xgboost=={xgb.__version__}"],
        )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(policy.model, version, key, value)
    log.info("registered %s version %s from run %s", policy.model, version, run.info.run_id)
    return RegisteredModel(
        name=policy.model,
        version=version,
        run_id=run.info.run_id,
        run_url=run_url(tracking_uri, experiment.experiment_id, run.info.run_id),
        version_url=model_version_url(tracking_uri, policy.model, version),
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
