"""A version's server errors on gRPC calls, counted by its own runtime.

Over REST a model server's failure is an HTTP 5xx, which Envoy counts per version. A gRPC call's
status travels in its trailers under HTTP 200, so Envoy counts a failed call as a success: the
runtime counts them itself, as `shipway_grpc_server_errors_total{model, version}`, for the
calls the rollout's weights chose or mirrored (the front door marks both the protocol and a
pinned call, replacing whatever the caller sent). A caller's bad request is not the version's
fault and is not counted. Runs inside MLServer: it needs only prometheus_client.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from shipway.serving.protocol import PINNED_HEADER, PROTOCOL_HEADER

GRPC_ERRORS_METRIC = "shipway_grpc_server_errors"


class ServerErrors(Collector):
    def __init__(self, model: str, version: str) -> None:
        self.labels = [model, version]
        self.count = 0
        self._lock = threading.Lock()

    @contextmanager
    def watch(
        self, headers: Mapping[str, Any], client_errors: tuple[type[BaseException], ...]
    ) -> Iterator[None]:
        """Count an exception out of the block as a server error of a chosen gRPC call, unless
        it is one of `client_errors` or carries a status below 500."""
        try:
            yield
        except client_errors:
            raise
        except Exception as exc:
            chosen = headers.get(PINNED_HEADER) != "1"
            if headers.get(PROTOCOL_HEADER) == "grpc" and chosen and _server_side(exc):
                with self._lock:
                    self.count += 1
            raise

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            GRPC_ERRORS_METRIC,
            "Server errors of gRPC calls the weights chose or mirrored",
            labels=["model", "version"],
        )
        family.add_metric(self.labels, float(self.count))
        yield family


def _server_side(exc: Exception) -> bool:
    status = getattr(exc, "status_code", 500)
    return not isinstance(status, int) or status >= 500
