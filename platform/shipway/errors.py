"""Errors a user can act on: each carries one line that says what is wrong and what to do."""


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


class RateLimited(ShipwayError):
    """A caller sent more than its rate allows (HTTP 429); the message names the caller."""
