"""Reproducibility: retrain a registered version from its recorded lineage and compare hashes.

The question answered is the one an auditor asks: does the repository as it is now (the
declaration's parameters and seed, the code, the locked environment), given the training set
version the run recorded (read back by Delta time travel), produce the registered artifact byte
for byte? Each element of the lineage is compared too, so a mismatch names what differed.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shipway.data.lake import read_table, table_info
from shipway.features.training_sets import recorded_features
from shipway.models.catalog import DeclaredModel
from shipway.models.distributed import IN_PROCESS, SCHEDULER_ENV, DaskCluster
from shipway.models.tracking import git_commit, lock_hash
from shipway.models.training import ENGINE_TAG, OnDask, train
from shipway.names import EVENT_TIMESTAMP
from shipway.paths import ShipwayHome
from shipway.release.evaluation import Candidate
from shipway.release.report import Reproducibility
from shipway.serving.bundle import MODEL_FILE


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Reproduction:
    model: str
    version: str
    training_set: str
    training_set_version: int
    result: Reproducibility


def _differences(declared: DeclaredModel, version: Candidate, digest: str) -> list[str]:
    declaration = declared.declaration
    where = declared.path.name
    recorded, tags = version.params, version.tags
    now: dict[str, str] = {
        **{k: str(v) for k, v in declaration.training.params.items()},
        "seed": str(declaration.training.seed),
        "validation_fraction": str(declaration.training.validation_fraction),
    }
    found = [
        f"parameter {key}: recorded {recorded.get(key, 'absent')}, declared now "
        f"{now.get(key, 'absent')} ({declared.path.parent.name}/{where})"
        for key in sorted(set(now) | set(version.training_params))
        if recorded.get(key) != now.get(key)
    ]
    if version.feature_service != declaration.feature_service:
        found.append(
            f"feature service: recorded {version.feature_service}, declared now "
            f"{declaration.feature_service}"
        )
    if tags.get("shipway.training_set_digest") != digest:
        found.append(
            f"training set content: recorded digest {tags.get('shipway.training_set_digest')}, "
            f"read back {digest}"
        )
    for tag, current, what in (
        ("shipway.lock_sha256", lock_hash(), "lock file uv.lock"),
        ("shipway.git_commit", git_commit(), "code commit"),
    ):
        if tags.get(tag) != current:
            found.append(f"{what}: recorded {tags.get(tag, 'unrecorded')}, now {current}")
    return found


def _engine_difference(recorded: str, retrained: str) -> list[str]:
    if recorded == retrained:
        return []
    hint = f" (set ${SCHEDULER_ENV} to a cluster of that shape)" if recorded != IN_PROCESS else ""
    return [f"training engine: recorded {recorded}, retrained {retrained}{hint}"]


def reproduce(
    home: ShipwayHome,
    declared: DeclaredModel,
    version: Candidate,
    log: Callable[[str], None],
    cluster: DaskCluster | None = None,
) -> Reproduction:
    """Retrain on the engine the version recorded: a version fitted on Dask is fitted again on
    `cluster` (the trees depend on the number of workers, which the engine names)."""
    declaration = declared.declaration
    table = declaration.training_set
    # The digest is read in batches; the rows only as training reads them (in the same order).
    info = table_info(home.table(table), version.training_set_version, digest=True)
    features = recorded_features(info)
    baseline = [str(declaration.training.baseline)] if declaration.training.baseline else []
    wanted = [EVENT_TIMESTAMP, declaration.label.column, *features, *baseline]
    frame = read_table(home.table(table), info.version, list(dict.fromkeys(wanted)))
    recorded_engine = version.tags.get(ENGINE_TAG, IN_PROCESS)
    on_dask = (
        OnDask(cluster, home.table(table), info.version)
        if cluster is not None and recorded_engine != IN_PROCESS
        else None
    )
    log(
        f"retraining {version.model} v{version.version} on {table} v{info.version} (time travel)"
        + (f" on Dask at {cluster.scheduler}" if on_dask and cluster else "")
    )
    trained = train(frame, declaration, features, on_dask)
    with tempfile.TemporaryDirectory(prefix="shipway-reproduce-") as tmp:
        rebuilt = Path(tmp) / MODEL_FILE
        trained.model.save_model(str(rebuilt))
        rebuilt_sha = file_sha256(rebuilt)
    result = Reproducibility(
        registered_sha256=file_sha256(version.model_file),
        rebuilt_sha256=rebuilt_sha,
        differences=_differences(declared, version, str(info.content_digest))
        + _engine_difference(recorded_engine, trained.engine),
    )
    return Reproduction(version.model, version.version, table, info.version, result)
