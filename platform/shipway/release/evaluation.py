"""The evaluation set: the most recent labelled rows that neither the challenger nor the
champion trained on, with each model's own feature vector for them.

Both versions record the training set version they were trained on and where their time split
fell (`split_at`): rows at or after it were validation rows, never fitted. The evaluation rows
are the challenger's training set version from the later of the two split points on. Each model
scores them with its own features: the same vector when both use the same feature service and
features, otherwise a point-in-time join of the same rows with the champion's service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.tracking import MlflowClient

from shipway.data.lake import read_table, table_info
from shipway.errors import ShipwayError
from shipway.features.service import feature_frame, registry_spec
from shipway.features.store import feature_store, historical_features
from shipway.features.training_sets import TrainingSetInputs
from shipway.features.version_store import features_home
from shipway.features.versions import UNRECORDED
from shipway.models.catalog import DeclaredModel
from shipway.models.tracking import FEATURE_VERSION_TAG, champion_version
from shipway.models.training import download_model
from shipway.names import EVENT_TIMESTAMP
from shipway.paths import ShipwayHome

# Run params that describe the run rather than how the model was trained.
BOOKKEEPING_PARAMS = frozenset(
    {"problem", "feature_service", "features", "split_at", "train_rows", "validation_rows"}
)


@dataclass(frozen=True)
class Candidate:
    """A registered version and what it was trained with, its model file downloaded."""

    model: str
    version: str
    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    model_file: Path

    @property
    def features(self) -> list[str]:
        return self.params["features"].split(",")

    @property
    def feature_service(self) -> str:
        return self.params["feature_service"]

    @property
    def feature_version(self) -> str:
        """The digest of what computed its features (`shipway.features.versions`)."""
        return self.tags.get(FEATURE_VERSION_TAG, UNRECORDED)

    @property
    def problem(self) -> str:
        return self.params["problem"]

    @property
    def split_at(self) -> pd.Timestamp:
        return pd.Timestamp(self.params["split_at"])

    @property
    def data_versions(self) -> dict[str, str | None]:
        """The Delta version of each table the training set was built from, as recorded."""
        return {
            table: self.tags.get(f"shipway.{table}_version")
            for table in self.tags.get("shipway.input_tables", "").split(",")
            if table
        }

    @property
    def training_params(self) -> dict[str, str]:
        return {k: v for k, v in self.params.items() if k not in BOOKKEEPING_PARAMS}

    @property
    def training_set_version(self) -> int:
        return int(self.tags["shipway.training_set_version"])

    def load(self) -> xgb.XGBModel:
        model: xgb.XGBModel = (
            xgb.XGBClassifier() if self.problem == "binary_classification" else xgb.XGBRegressor()
        )
        model.load_model(str(self.model_file))
        return model

    def score(self, matrix: np.ndarray) -> np.ndarray:
        model = self.load()
        if isinstance(model, xgb.XGBClassifier):
            return np.asarray(model.predict_proba(matrix)[:, 1], dtype=np.float64)
        return np.asarray(model.predict(matrix), dtype=np.float64)


def candidate(
    tracking_uri: str, model: str, version: str, dest: Path, model_file: Path | None = None
) -> Candidate:
    """A registered version with its lineage; its model file downloaded to `dest`, unless the
    caller already holds it (`model_file`)."""
    client = MlflowClient(tracking_uri)
    registered = client.get_model_version(model, version)
    if registered.run_id is None:
        raise ShipwayError(f"{model} v{version} has no MLflow run: it cannot be evaluated")
    run = client.get_run(registered.run_id)
    needed = {"features", "feature_service", "problem", "split_at"} - set(run.data.params)
    if needed or "shipway.training_set_version" not in run.data.tags:
        raise ShipwayError(
            f"{model} v{version} was registered without the lineage a release needs "
            f"(missing {sorted(needed) or ['shipway.training_set_version']}): retrain it"
        )
    if model_file is None:
        model_file, _ = download_model(tracking_uri, model, version, dest / f"v{version}")
    return Candidate(
        model, version, registered.run_id, dict(run.data.params), dict(run.data.tags), model_file
    )


def current_champion(tracking_uri: str, model: str, dest: Path) -> Candidate | None:
    """The champion to judge a challenger against; None only when there is none yet. A registry
    that cannot be read, or a champion whose artifacts cannot, stops the gate (it raises)."""
    version = champion_version(tracking_uri, model)
    return None if version is None else candidate(tracking_uri, model, version, dest)


@dataclass(frozen=True)
class EvaluationSet:
    """Rows both models score, with their labels, slice columns and each model's features."""

    training_set: str
    training_set_version: int
    data_versions: dict[str, int]
    start: pd.Timestamp
    rows: pd.DataFrame
    challenger_matrix: np.ndarray
    champion_matrix: np.ndarray | None
    champion_joined: bool
    """True when the champion's features came from its own service's point-in-time join."""

    def lineage(self) -> dict[str, str]:
        return {
            "evaluation_training_set": f"{self.training_set} v{self.training_set_version}",
            "evaluation_from": self.start.isoformat(),
            "evaluation_rows": str(len(self.rows)),
            **{f"{t}_version": str(v) for t, v in self.data_versions.items()},
        }


def build_evaluation_set(
    home: ShipwayHome,
    declared: DeclaredModel,
    challenger: Candidate,
    champion: Candidate | None,
    extra_columns: list[str],
) -> EvaluationSet:
    declaration, rules = declared.declaration, declared.label_rules
    table = declaration.training_set
    version = challenger.training_set_version
    info = table_info(home.table(table), version)
    inputs = TrainingSetInputs.from_lineage(info.commit_metadata, f"{table} v{version}")
    frame = read_table(home.table(table), version=version)
    start = challenger.split_at
    if champion is not None:
        start = max(start, champion.split_at)
    stamps = pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True)
    rows = frame[stamps >= start].reset_index(drop=True)
    identity = [*rules.keys, EVENT_TIMESTAMP]

    # A champion on other features, or on another version of them, is scored on its own:
    # joined point-in-time on the same rows from its own version's tables and registry.
    champion_joins = champion is not None and (
        champion.feature_service != challenger.feature_service
        or champion.features != challenger.features
        or champion.feature_version != challenger.feature_version
    )
    champion_home = features_home(home, champion.feature_version) if champion else home
    champion_service = (
        registry_spec(feature_store(champion_home), champion.feature_service)
        if (champion is not None and champion_joins)
        else None
    )
    wanted = [c for c in extra_columns if c not in rows.columns]
    if champion_service is not None:
        wanted += [f for f in champion_service.request_fields if f not in rows.columns]
    wanted = list(dict.fromkeys(w for w in wanted if w != EVENT_TIMESTAMP))
    if wanted and not rows.empty:
        label_rows = read_table(
            home.table(rules.table),
            version=inputs.versions[rules.table],
            columns=[*identity, *wanted],
        ).drop_duplicates(identity)
        rows = rows.merge(label_rows, on=identity, how="left", validate="one_to_one")

    champion_matrix = None
    if champion is not None:
        if champion_service is None:
            champion_matrix = rows[champion.features].to_numpy(dtype=np.float64)
        elif rows.empty:
            champion_matrix = np.empty((0, len(champion.features)))
        else:
            entity = rows[[*declaration.entity_keys, *champion_service.request_fields]]
            entity = entity.loc[:, ~entity.columns.duplicated()]
            if EVENT_TIMESTAMP not in entity.columns:
                entity = entity.assign(**{EVENT_TIMESTAMP: rows[EVENT_TIMESTAMP]})
            joined = historical_features(
                feature_store(champion_home), entity, champion.feature_service
            )
            features = feature_frame(joined, champion_service)
            keyed = joined[[*declaration.entity_keys, EVENT_TIMESTAMP]].join(features)
            keyed = keyed.drop_duplicates([*declaration.entity_keys, EVENT_TIMESTAMP])
            aligned = rows[[*declaration.entity_keys, EVENT_TIMESTAMP]].merge(
                keyed, on=[*declaration.entity_keys, EVENT_TIMESTAMP], how="left"
            )
            champion_matrix = aligned[champion.features].to_numpy(dtype=np.float64)
    return EvaluationSet(
        training_set=table,
        training_set_version=version,
        data_versions=dict(inputs.versions),
        start=start,
        rows=rows,
        challenger_matrix=rows[challenger.features].to_numpy(dtype=np.float64),
        champion_matrix=champion_matrix,
        champion_joined=champion_joins,
    )
