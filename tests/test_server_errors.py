"""A version's server errors on gRPC calls: what its runtime counts for the rollout."""

from __future__ import annotations

import pytest

from shipway.serving.protocol import PINNED_HEADER, PROTOCOL_HEADER
from shipway.serving.server_errors import ServerErrors


class CallerMistake(Exception):
    pass


class Refused(Exception):
    status_code = 404


CHOSEN_GRPC = {PROTOCOL_HEADER: "grpc", PINNED_HEADER: "0"}


@pytest.mark.parametrize(
    ("headers", "error", "counted"),
    [
        (CHOSEN_GRPC, RuntimeError("the model broke"), 1),
        # REST's 5xx is Envoy's to count; a pinned call is no rollout's traffic.
        ({PROTOCOL_HEADER: "rest", PINNED_HEADER: "0"}, RuntimeError("broke"), 0),
        ({PROTOCOL_HEADER: "grpc", PINNED_HEADER: "1"}, RuntimeError("broke"), 0),
        # The caller's mistakes are not the version's.
        (CHOSEN_GRPC, CallerMistake("bad tensor"), 0),
        (CHOSEN_GRPC, Refused("no such model"), 0),
        # Without the front door's marks, a call is not counted as gRPC.
        ({}, RuntimeError("broke"), 0),
    ],
)
def test_only_a_chosen_grpc_call_s_server_error_is_counted(
    headers: dict[str, str], error: Exception, counted: int
) -> None:
    errors = ServerErrors("toy_model", "2")
    with pytest.raises(type(error)), errors.watch(headers, (CallerMistake,)):
        raise error
    with errors.watch(headers, (CallerMistake,)):
        pass
    [family] = errors.collect()
    [sample] = family.samples
    assert sample.labels == {"model": "toy_model", "version": "2"}
    assert sample.value == counted
