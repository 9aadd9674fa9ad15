"""The Dask engine's configuration: an unreachable scheduler is named, with both ways out."""

from __future__ import annotations

import pytest

from shipway.errors import ShipwayError
from shipway.models.distributed import SCHEDULER_ENV, DaskCluster, configured_cluster
from shipway.processes import LOOPBACK, free_port


def test_an_unreachable_scheduler_is_named_with_both_ways_out() -> None:
    nobody = f"tcp://{LOOPBACK}:{free_port()}"
    with pytest.raises(ShipwayError) as failed:
        DaskCluster(nobody, connect_timeout=1.0).client()
    message = str(failed.value)
    assert message.startswith(f"no Dask scheduler answers at {nobody} (${SCHEDULER_ENV})")
    assert f"`dask worker {nobody}`" in message
    assert f"unset ${SCHEDULER_ENV} to train in-process" in message


def test_no_scheduler_configured_means_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    assert configured_cluster() is None
    monkeypatch.setenv(SCHEDULER_ENV, " tcp://10.0.0.5:8786 ")
    assert configured_cluster() == DaskCluster("tcp://10.0.0.5:8786")
