"""The control plane's HTTP API: what `shipway serve` runs on 127.0.0.1.

    GET    /admin/models                                  what is served (status)
    GET    /admin/dataplane                               whether Envoy runs the last change,
                                                          and if not, why (a rejection)
    PUT    /admin/models/{model}/versions/{version}       {"bundle": "<folder>"}: deploy
    DELETE /admin/models/{model}/versions/{version}       undeploy (no traffic left on it)
    PUT    /admin/models/{model}/traffic                  {"weights": {...}, "shadow": "<v>"}
    GET    /admin/callers                                 who may call, and their limits
    PUT    /admin/callers/{caller}                        {"digest": "{SHA}...", "rate", "burst",
                                                           "acl"}
    DELETE /admin/callers/{caller}                        its key no longer opens the front door
    GET    /health, /metrics

Every call but /health and /metrics needs `Authorization: Bearer $SHIPWAY_SERVING_TOKEN`:
status names each model server's socket and pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as Endpoint

from shipway.callers import ACLS, DEFAULT_ACL, Caller
from shipway.errors import BadRequest, NotFound, ServiceError, ShipwayError, Unauthorized
from shipway.limits import parse_json
from shipway.serving.client import TOKEN_ENV
from shipway.serving.control_plane import Applied, Conflict, ControlPlane

MAX_ADMIN_BODY = 64 * 1024


def create_app(plane: ControlPlane, token: str) -> Starlette:
    """The API of `plane`; changes need `token`. On start it serves what was saved, then
    supervises the model servers and logs their predictions until shutdown."""
    if not token:
        raise ServiceError(
            f"{TOKEN_ENV} is not set: the control plane changes what is served and needs a "
            "token (`shipway up` makes one; or export one)"
        )

    def authorize(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized(
                f"changing what is served needs 'Authorization: Bearer ${TOKEN_ENV}'"
            )

    async def body_of(request: Request) -> Any:
        authorize(request)
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_ADMIN_BODY:
            raise TooLarge(f"request body of {declared} bytes exceeds {MAX_ADMIN_BODY}")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_ADMIN_BODY:
                raise TooLarge(f"request body exceeds {MAX_ADMIN_BODY} bytes")
        return parse_json(raw or b"{}", "request body")

    def answer(model: str, applied: Applied) -> Response:
        return JSONResponse({**plane.status().get(model, {}), **applied.record()})

    async def deploy(request: Request) -> Response:
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("bundle"), str):
            raise BadRequest('body must be {"bundle": "<path to a bundle folder>"}')
        p = request.path_params
        applied = await plane.deploy(p["model"], p["version"], Path(body["bundle"]))
        return answer(p["model"], applied)

    async def traffic(request: Request) -> Response:
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("weights"), dict):
            raise BadRequest(
                'body must be {"weights": {"<version>": <percent>, ...}, "shadow": "<version>"}'
            )
        shadow = body.get("shadow")
        if shadow is not None and not isinstance(shadow, str):
            raise BadRequest(f'"shadow" must be a version string or null, got {shadow!r}')
        model = request.path_params["model"]
        return answer(model, await plane.set_traffic(model, body["weights"], shadow))

    async def undeploy(request: Request) -> Response:
        await body_of(request)
        p = request.path_params
        return answer(p["model"], await plane.undeploy(p["model"], p["version"]))

    async def callers_list(request: Request) -> Response:
        authorize(request)
        return JSONResponse({"callers": plane.callers()})

    async def caller_set(request: Request) -> Response:
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("digest"), str):
            raise BadRequest(
                'body must be {"digest": "{SHA}...", "rate": <requests per second, whole>, '
                f'"burst": <requests at once, whole>, "acl": one of {list(ACLS)}}}'
            )
        unknown = sorted(set(body) - {"digest", "rate", "burst", "acl"})
        if unknown:
            raise BadRequest(f"unknown fields {unknown}; expected digest, rate, burst, acl")
        caller = Caller(
            request.path_params["caller"],
            body["digest"],
            body.get("rate", 0),
            body.get("burst", 0),
            body.get("acl", DEFAULT_ACL),
        )
        return callers_answer(await plane.set_caller(caller))

    async def caller_remove(request: Request) -> Response:
        await body_of(request)
        return callers_answer(await plane.remove_caller(request.path_params["caller"]))

    def callers_answer(applied: Applied) -> Response:
        return JSONResponse({"callers": plane.callers(), **applied.record()})

    async def status(request: Request) -> Response:
        # Status names every model server's socket and pid: for the token holder only.
        authorize(request)
        return JSONResponse(plane.status())

    async def dataplane(request: Request) -> Response:
        authorize(request)
        return JSONResponse(await run_in_threadpool(plane.dataplane_status))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(plane.registry), media_type="text/plain")

    def error(status: int) -> Any:
        async def handler(request: Request, exc: Exception) -> Response:
            return JSONResponse({"error": str(exc)}, status_code=status)

        return handler

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await plane.reconcile()
        tasks = [asyncio.create_task(t) for t in (plane.supervise(), plane.log_predictions())]
        yield
        for task in tasks:
            task.cancel()
        await plane.shutdown()

    app = Starlette(
        routes=[
            Endpoint("/admin/models", status, methods=["GET"]),
            Endpoint("/admin/dataplane", dataplane, methods=["GET"]),
            Endpoint("/admin/callers", callers_list, methods=["GET"]),
            Endpoint("/admin/callers/{caller}", caller_set, methods=["PUT"]),
            Endpoint("/admin/callers/{caller}", caller_remove, methods=["DELETE"]),
            Endpoint("/admin/models/{model}/versions/{version}", deploy, methods=["PUT"]),
            Endpoint("/admin/models/{model}/versions/{version}", undeploy, methods=["DELETE"]),
            Endpoint("/admin/models/{model}/traffic", traffic, methods=["PUT"]),
            Endpoint("/health", health),
            Endpoint("/metrics", metrics),
        ],
        exception_handlers={
            Unauthorized: error(401),
            TooLarge: error(413),
            Conflict: error(409),
            NotFound: error(404),
            BadRequest: error(400),
            ShipwayError: error(503),
        },
        lifespan=lifespan,
    )
    app.state.plane = plane
    return app


class TooLarge(BadRequest):
    """A request body over the limit."""
