"""The feature service over HTTP: Feast's `/get-online-features`, one-call scoring, metrics.

    POST /get-online-features   Feast's request and answer: {"feature_service": "fraud_model_v1"}
                                or {"features": ["customer_features:customer_txn_count_7d"]},
                                with "entities": {column: [values]}; "fill_defaults": true puts
                                the view's `default` tag where an entity has no row;
                                "feature_version": "<digest>" pins a feature version (a
                                service's default is its champion's; the answer's
                                metadata names the version read)
    POST /score/{model}         entity ids and request fields in; the lookup, the on-demand
                                features and the model through the data plane's front door; the
                                scores, the served version(s) and the request id out
    GET  /health                200 once the registry is read
    GET  /metrics               Prometheus: requests, latency, missing entities, freshness,
                                refusals per caller

Every request is bounded: `MAX_BODY` bytes, JSON `MAX_JSON_DEPTH` levels deep, at most
`MAX_CONCURRENT` in flight, and the lookup's own bounds (`shipway.features.lookup`). Every
endpoint but /health and /metrics needs a caller's API key (HTTP Basic, `curl -u
<caller>:<key>`; `shipway callers add` makes one), the same key the front door takes: 401
without one, 429 over the caller's rate (its own bucket, like the front door's). /score hands
the caller's credentials on, so the front door holds the caller to its rate too.
`SHIPWAY_REQUIRE_API_KEYS=no` opens both.

A bare ASGI app on uvicorn (httptools, uvloop): no framework sits between the socket and the
lookup, whose plan is made once per feature service (`shipway.features.lookup`). The registry
is read again when `feast apply` changes it. Errors are 4xx with {"error": ...} naming the
field; a lookup's own failure is a 500 and is counted. Scoring is handed in by whoever starts
the service (`shipway features serve` gives it `shipway.serving.scoring`), so this module
knows nothing of serving.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from shipway import callers
from shipway.callers import Caller
from shipway.errors import (
    BadGateway,
    BadRequest,
    NotFound,
    RateLimited,
    ShipwayError,
    Unauthorized,
    shown,
)
from shipway.features.lookup import OnlineLookup
from shipway.features.online_state import OnlineState
from shipway.features.version_store import built_home, is_built
from shipway.features.versions import DIGEST, applied_versions
from shipway.limits import MAX_JSON_DEPTH, TooDeep, check_depth
from shipway.paths import ShipwayHome
from shipway.scrape import Add, Family, FileCollector, FileErrors

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_BODY = 1 << 20
MAX_CONCURRENT = 64
"""Requests (and connections) in flight at once; more are answered 503 by uvicorn, so the
bodies the service holds stay bounded whoever sends them."""
REGISTRY_CHECK_SECONDS = 1.0
CALLERS_CHECK_SECONDS = 1.0
OPEN_PATHS = frozenset({"/health", "/metrics"})
ANONYMOUS = "-"
"""The `caller` label of a refusal whose credentials name nobody (an unknown name is not a
label: a stranger must not be able to grow the metric)."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _FreshnessCollector(FileCollector):
    """Per feature view: the newest row the online store holds, and how far the lake is ahead
    (the online store's state file, read at scrape; unreadable, it is counted, not a 500)."""

    def __init__(self, home: ShipwayHome, errors: FileErrors) -> None:
        super().__init__(errors)
        self.home = home

    def families(self) -> list[Family]:
        return [
            GaugeMetricFamily(
                "shipway_feature_online_newest_row_timestamp_seconds",
                "Event time of the newest row materialized into the online store, per view",
                labels=["feature_view"],
            ),
            GaugeMetricFamily(
                "shipway_feature_freshness_seconds",
                "Age of the newest online row (now minus its event time), per view",
                labels=["feature_view"],
            ),
            GaugeMetricFamily(
                "shipway_feature_online_lag_seconds",
                "How far the online store is behind its Delta table (newest offline minus "
                "newest online event time), per view",
                labels=["feature_view"],
            ),
        ]

    def files(self) -> Iterable[Path]:
        path = OnlineState.path(self.home)
        return [path] if path.exists() else []

    def read(self, path: Path, add: Add) -> None:
        now = time.time()
        for view, status in OnlineState.read(path).freshness(self.home).items():
            add("shipway_feature_online_newest_row_timestamp_seconds", [view], status.online_newest)
            add("shipway_feature_freshness_seconds", [view], now - status.online_newest)
            add("shipway_feature_online_lag_seconds", [view], status.lag_seconds)


Lookups = Callable[[str | None], OnlineLookup]
"""The lookup over a feature version's own online store (None: the working tree's store)."""


class Scorer(Protocol):
    """One-call scoring: a model's scores for a request's entities, each served version's
    features looked up in its own feature version with `lookups` (missing entities counted in
    `missing`), calling as the caller whose `authorization` header came in. BadRequest,
    NotFound, Unauthorized, RateLimited and BadGateway are answered 400, 404, 401, 429 and 502.
    `serving_version(service, owner)`: the feature version of the served version with the
    most traffic that uses `service`, the declaring model's (`owner`) first (the champion's),
    if any."""

    async def score(
        self,
        model: str,
        body: Any,
        request_id: str,
        lookups: Lookups,
        missing: Counter,
        authorization: str | None,
    ) -> dict[str, Any]: ...

    def serving_version(self, service: str, owner: str | None = None) -> str | None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class _Store:
    lookup: OnlineLookup
    mtime: float
    checked: float
    service: str | None
    """The feature service the version is of (None: the working tree's store, every one)."""


def _check_service(version: str | None, of: str | None, asked: str | None) -> None:
    if version is not None and asked is not None and of is not None and of != asked:
        raise BadRequest(
            f"feature version {version} is a version of feature service {of}, not {asked}: "
            "`shipway features versions` lists each service's versions"
        )


class FeatureServer:
    def __init__(
        self,
        home: ShipwayHome,
        scorer: Scorer | None = None,
        require_keys: bool | None = None,
    ) -> None:
        self.home = home
        self.scorer = scorer
        self.require_keys = callers.required() if require_keys is None else require_keys
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shipway_feature_requests",
            "Requests to the feature service, by endpoint and HTTP status",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shipway_feature_request_seconds",
            "Time to answer, server side, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.missing = Counter(
            "shipway_feature_missing_entities",
            "Entities looked up that the online store has no row for, per feature view",
            ["feature_service", "feature_view"],
            registry=self.registry,
        )
        self.refused = Counter(
            "shipway_feature_refused",
            "Requests refused before any lookup, by caller ('-': credentials that name nobody) "
            "and reason (unauthenticated, rate_limited)",
            ["caller", "reason"],
            registry=self.registry,
        )
        errors = FileErrors(home.root)
        self.registry.register(_FreshnessCollector(home, errors))
        self.registry.register(errors)
        self._stores: dict[str, _Store] = {}
        self._defaults: dict[str, tuple[str | None, float]] = {}
        self._callers: dict[str, Caller] = {}
        self._callers_mtime: float | None = None
        self._callers_checked = -CALLERS_CHECK_SECONDS
        self._buckets = callers.Buckets()

    # --- callers ----------------------------------------------------------------------------

    def known_callers(self) -> dict[str, Caller]:
        """The callers file, re-read within a second of a change (a revoked key stops
        working then). An unreadable file lets nobody in; it is logged, not guessed at."""
        now = time.monotonic()
        if now - self._callers_checked > CALLERS_CHECK_SECONDS:
            self._callers_checked = now
            path = self.home.served.callers
            mtime = path.stat().st_mtime if path.exists() else None
            if mtime != self._callers_mtime:
                try:
                    self._callers = callers.load(path)
                except BadRequest as exc:
                    log.error("%s: every caller is refused until it is fixed", exc)
                    self._callers = {}
                self._callers_mtime = mtime
        return self._callers

    def admit(self, authorization: str | None) -> Caller | None:
        """The caller these credentials belong to, if it is within its rate; None when keys
        are not required. Refusals are counted by caller and reason."""
        if not self.require_keys:
            return None
        caller = callers.identify(self.known_callers(), authorization)
        if caller is None:
            self.refused.labels(ANONYMOUS, "unauthenticated").inc()
            raise Unauthorized(
                "this endpoint needs a caller's API key: HTTP Basic <caller>:<key> "
                "(`shipway callers add` makes one)"
            )
        if not self._buckets.take(caller):
            self.refused.labels(caller.name, "rate_limited").inc()
            raise RateLimited(
                f"caller {caller.name} is over its rate of {caller.rate}/s (burst {caller.burst})"
            )
        return caller

    # --- registries -------------------------------------------------------------------------

    def lookup(self, version: str | None = None, service: str | None = None) -> OnlineLookup:
        """The OnlineLookup of a feature version's own store (None: the working tree's),
        read again after `feast apply` changes its registry (checked once a second)."""
        if version is not None and (not isinstance(version, str) or not DIGEST.fullmatch(version)):
            raise BadRequest(
                '"feature_version" must be a version digest (12 hex characters), got '
                f"{shown(version)}"
            )
        key = version or ""
        now = time.monotonic()
        store = self._stores.get(key)
        if store is not None and now - store.checked <= REGISTRY_CHECK_SECONDS:
            _check_service(version, store.service, service)
            return store.lookup
        home: ShipwayHome = self.home
        of = None
        if version is not None:
            try:
                built = built_home(self.home, version)
            except ShipwayError as exc:
                self._stores.pop(key, None)  # collected, or never built: not served stale
                raise NotFound(str(exc)) from None
            home, of = built, built.service
        _check_service(version, of, service)
        path = home.feast / "registry.db"
        mtime = path.stat().st_mtime if path.exists() else None
        if mtime is None:
            raise NotFound("no feature registry yet: materialize feature_views (feast apply) first")
        if store is None or mtime != store.mtime:
            from shipway.features.store import feature_store

            store = _Store(OnlineLookup(feature_store(home)), mtime, now, of)
            log.info(
                "feature registry of %s read: %s",
                f"feature version {version}" if version else "the working tree",
                sorted(store.lookup.services),
            )
        self._stores[key] = _Store(store.lookup, store.mtime, now, of)
        return store.lookup

    def default_version(self, service: str) -> str | None:
        """The feature version a lookup of `service` reads unless the caller pins one: the
        champion's (the served version with the most traffic that uses it, the declaring
        model's first); with nothing served, the version its sources compute now, once built;
        else the working tree's store (None). Decided again once a second."""
        now = time.monotonic()
        cached = self._defaults.get(service)
        if cached is not None and now - cached[1] <= REGISTRY_CHECK_SECONDS:
            return cached[0]
        version = None
        if self.scorer is not None:
            version = self.scorer.serving_version(service, self._owner(service))
        if version is None:
            current = applied_versions(self.home).get(service)
            if current is not None and is_built(self.home, current):
                version = current
        self._defaults[service] = (version, now)
        return version

    def _owner(self, service: str) -> str | None:
        """The model that declares `service` (its `model` tag in the registry), if known."""
        try:
            found = self.lookup().services.get(service)
        except NotFound:
            return None
        return None if found is None else found.tags.get("model")

    # --- endpoints --------------------------------------------------------------------------

    async def online_features(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        service = body.get("feature_service")
        features = body.get("features") or []
        pinned = body.get("feature_version")
        if service is not None and features:
            raise BadRequest('give "feature_service" or "features", not both')
        if service is not None:
            if not isinstance(service, str):
                raise BadRequest('"feature_service" must be a string')
            version = pinned if pinned is not None else self.default_version(service)
            lookup = self.lookup(version, service)
            plan = lookup.service_plan(service)
        elif features:
            if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
                raise BadRequest('"features" must be a list of "view:feature" strings')
            version = pinned
            lookup = self.lookup(version)
            plan = lookup.features_plan(features, bool(body.get("full_feature_names", False)))
        else:
            raise BadRequest('request needs "feature_service" or "features"')
        entities: Any = body.get("entities")  # checked by the lookup, naming what is wrong
        result = await lookup.run(plan, entities, bool(body.get("fill_defaults", False)))
        for view, count in result.missing.items():
            self.missing.labels(plan.name, view).inc(count)
        answer: dict[str, Any] = result.to_feast()
        answer["metadata"]["feature_version"] = version
        return answer

    async def score(
        self, model: str, body: Any, request_id: str, authorization: str | None = None
    ) -> dict[str, Any]:
        if self.scorer is None:
            raise NotFound("scoring needs the serving front door: start with --serving-url")
        return await self.scorer.score(
            model, body, request_id, self.lookup, self.missing, authorization
        )

    def health(self) -> dict[str, Any]:
        lookup = self.lookup()
        return {"status": "ok", "feature_services": sorted(lookup.services)}

    # --- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        began = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        endpoint = path if not path.startswith("/score/") else "/score"
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        authorization = _header(scope, b"authorization")
        extra: list[tuple[bytes, bytes]] = []
        try:
            if path not in OPEN_PATHS:
                self.admit(authorization)
            if method == "POST" and path == "/get-online-features":
                code, payload = 200, await self.online_features(await _body(receive))
            elif method == "POST" and path.startswith("/score/"):
                model = path.removeprefix("/score/")
                body = await _body(receive)
                code, payload = 200, await self.score(model, body, request_id, authorization)
            elif method == "GET" and path == "/health":
                code, payload = 200, self.health()
            elif method == "GET" and path == "/metrics":
                await _respond(send, 200, generate_latest(self.registry), b"text/plain")
                return
            else:
                endpoint = "other"
                code, payload = 404, {"error": f"no endpoint {method} {path}"}
        except Unauthorized as exc:
            code, payload = 401, {"error": str(exc)}
            extra.append((b"www-authenticate", b'Basic realm="shipway"'))
        except RateLimited as exc:
            code, payload = 429, {"error": str(exc)}
            extra.append((b"retry-after", b"1"))
        except NotFound as exc:
            code, payload = (503 if "registry" in str(exc) else 404), {"error": str(exc)}
        except BadGateway as exc:
            code, payload = 502, {"error": str(exc)}
        except BadRequest as exc:
            code, payload = 400, {"error": str(exc)}
        except Exception as exc:  # a lookup that fails is the service's error, named and counted
            log.exception("%s %s failed", method, path)
            code, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        await _respond(send, code, orjson.dumps(payload), b"application/json", request_id, extra)
        self.requests.labels(endpoint, str(code)).inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - began)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Feast's import takes seconds: pay it before answering ready, not on the
                # first lookup.
                import feast  # noqa: F401

                try:
                    self.lookup()
                except NotFound as exc:
                    log.warning("%s", exc)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.scorer is not None:
                    await self.scorer.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _body(receive: Receive) -> Any:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"request body is over {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        if "depth limit exceeded" in str(exc):
            # orjson stops at 1024 levels; deeper is refused as any depth over the limit is.
            raise TooDeep("request body", MAX_JSON_DEPTH) from None
        raise BadRequest(f"request body is not JSON: {exc}") from None
    check_depth(body, "request body")
    return body


async def _respond(
    send: Send,
    code: int,
    body: bytes,
    kind: bytes,
    request_id: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    headers += extra or []
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
