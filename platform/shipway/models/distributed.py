"""Training on a Dask cluster: `xgboost.dask`, the workers reading the training set's Delta
version themselves.

Each worker reads the version by time travel and keeps a fixed, contiguous share of the
training rows. Shares follow the workers' addresses in sorted order, so the same cluster shape
given the same version trains the same trees byte for byte, and the release gate's
reproducibility check holds on Dask as it does in-process. The result is a plain XGBoost model
(`XGBClassifier` or `XGBRegressor`): gates, packages and serving do not know where it trained.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb
import xgboost.dask as xgb_dask
from distributed import Client

from shipway.data.lake import read_arrow
from shipway.errors import ShipwayError
from shipway.names import EVENT_TIMESTAMP

log = logging.getLogger(__name__)

IN_PROCESS = "in-process"
"""The engine of a model trained in the asset's own process (no scheduler configured)."""

SCHEDULER_ENV = "SHIPWAY_DASK_SCHEDULER"


@dataclass(frozen=True)
class DaskCluster:
    """A running Dask scheduler (`tcp://host:port`) with its workers."""

    scheduler: str
    connect_timeout: float = 10.0

    def client(self) -> Client:
        try:
            return Client(self.scheduler, timeout=self.connect_timeout)
        except (OSError, TimeoutError) as error:
            raise ShipwayError(
                f"no Dask scheduler answers at {self.scheduler} (${SCHEDULER_ENV}) after "
                f"{self.connect_timeout:.0f}s: start it (`dask scheduler`, then `dask worker "
                f"{self.scheduler}`) or unset ${SCHEDULER_ENV} to train in-process ({error})"
            ) from None


def configured_cluster() -> DaskCluster | None:
    """The cluster `$SHIPWAY_DASK_SCHEDULER` names, or None: train in-process."""
    scheduler = os.environ.get(SCHEDULER_ENV, "").strip()
    return DaskCluster(scheduler) if scheduler else None


def engine_name(workers: int) -> str:
    """What lineage records: the engine and the cluster shape the trees depend on."""
    return f"dask, {workers} workers"


def workers_of(client: Client, scheduler: str) -> list[str]:
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        raise ShipwayError(
            f"the Dask scheduler at {scheduler} has no workers: start some with "
            f"`dask worker {scheduler}`"
        )
    return workers


def _share(
    table: str, version: int, columns: list[str], before: pd.Timestamp, index: int, count: int
) -> np.ndarray:
    """Runs on a worker: its contiguous share of the version's rows stamped before `before`,
    as one float matrix of `columns` (the features, then the label)."""
    rows = read_arrow(table, version, [EVENT_TIMESTAMP, *columns])
    stamps = rows.column(EVENT_TIMESTAMP)
    rows = rows.filter(pc.less(stamps, pa.scalar(before, type=stamps.type)))
    start, stop = rows.num_rows * index // count, rows.num_rows * (index + 1) // count
    share: np.ndarray = (
        rows.slice(start, stop - start).select(columns).to_pandas().to_numpy(dtype=np.float64)
    )
    return share


def _shape(share: np.ndarray) -> tuple[int, ...]:
    return tuple(share.shape)


def fit_on_dask(
    cluster: DaskCluster,
    model: xgb.XGBModel,
    table: Path,
    version: int,
    features: list[str],
    label: str,
    split_at: pd.Timestamp,
) -> tuple[xgb.XGBModel, str]:
    """`model`'s parameters fitted on the cluster to the rows of `table` v`version` stamped
    before `split_at`. Returns the fitted plain model and its engine."""
    with cluster.client() as client:
        workers = workers_of(client, cluster.scheduler)
        log.info(
            "training on Dask at %s: %d workers read %s v%d",
            cluster.scheduler,
            len(workers),
            table.name,
            version,
        )
        shares = [
            client.submit(
                _share,
                str(table),
                version,
                [*features, label],
                split_at,
                index,
                len(workers),
                workers=[worker],
                allow_other_workers=False,
                pure=False,
            )
            for index, worker in enumerate(workers)
        ]
        shapes = client.gather([client.submit(_shape, share) for share in shares])
        rows = da.concatenate(
            [
                da.from_delayed(share, shape, dtype=np.float64)
                for share, shape in zip(shares, shapes, strict=True)
            ]
        )
        kind = (
            xgb_dask.DaskXGBClassifier
            if isinstance(model, xgb.XGBClassifier)
            else xgb_dask.DaskXGBRegressor
        )
        params = {k: v for k, v in model.get_params().items() if k != "n_jobs"}
        distributed = kind(**params)
        distributed.client = client
        distributed.fit(rows[:, : len(features)], rows[:, len(features)])
        with tempfile.TemporaryDirectory(prefix="shipway-dask-") as tmp:
            saved = Path(tmp) / "model.json"
            distributed.save_model(str(saved))
            fitted = type(model)(**model.get_params())
            fitted.load_model(str(saved))
    return fitted, engine_name(len(workers))
