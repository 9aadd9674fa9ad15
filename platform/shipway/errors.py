"""Errors a user can act on: each carries one line that says what is wrong and what to do."""

from __future__ import annotations

from typing import Any


class ShipwayError(Exception):
    """Base for errors whose message is shown to the user as-is, on one line."""


class PolicyError(ShipwayError):
    """A per-model policy file is missing or malformed."""


class ServiceError(ShipwayError):
    """A local service (MLflow, Prometheus, MLServer, Dagster) could not be started or reached."""


class BadRequest(ShipwayError):
    """A request to a Shipway endpoint is malformed; the message names the offending field."""


class NotFound(BadRequest):
    """A request names a model or version that is not deployed (HTTP 404)."""


class BadGateway(ShipwayError):
    """A service a request passes through failed (HTTP 502); the message names it."""


class Unauthorized(ShipwayError):
    """A request carries no credentials, or ones nobody issued (HTTP 401)."""


class Forbidden(ShipwayError):
    """A known caller asks for more than its rights allow (HTTP 403); the message names the
    right it has and the one it asked for."""


class RateLimited(ShipwayError):
    """A caller sent more than its rate allows (HTTP 429); the message names the caller."""


ECHO_LIMIT = 200
"""Characters of an input that a message repeats (its own message, Dagster's metadata, the
admission ledger): a 5 MB value must not become 5 MB of each."""


def cut(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` as a message repeats it: at most `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def shown(value: object, limit: int = 60) -> str:
    """A value as a message shows it: its repr, cut (a huge integer is described: Python
    will not even print one past 4,300 digits)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    try:
        return cut(repr(value), limit)
    except RecursionError:
        return f"a {type(value).__name__} nested too deep to show"


# A blocking check's failure: its verdict is reported as the gate's, not as a step's error.
_CHECK_FAILED = "DagsterAssetCheckFailedError"


def run_failures(result: Any) -> list[str]:
    """What a finished Dagster run says went wrong: one line per failed step, naming the step
    and the error its code raised (the innermost cause: a function's `NameError`, not Dagster's
    "error occurred while executing" around it). A blocking check's stop is not listed: its
    gate says why."""
    lines = []
    for event in result.all_events:
        if not event.is_step_failure or event.step_failure_data.error is None:
            continue
        error = event.step_failure_data.error
        chain = [error]
        while error.cause is not None:
            error = error.cause
            chain.append(error)
        if any(e.cls_name == _CHECK_FAILED for e in chain):
            continue
        text = next((t for t in error.message.strip().splitlines() if t.strip()), error.cls_name)
        lines.append(f"{event.step_key}: {cut(text, 500)}")
    return lines
