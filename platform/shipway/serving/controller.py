"""The serving control plane: the embedded stand-in for Seldon Core's scheduler.

On Kubernetes, Seldon Core runs one `Model` per version and an `Experiment` splits traffic
between them. Here this process does that job on 127.0.0.1, and never touches a request:

- it starts each version's MLServer replicas (Shipway's runtime, from a bundle under the
  serving home, as many as the bundle's `replicas`), restarts one that crashes, and stops
  them when the version is undeployed;
- it tells the data plane (Envoy, `shipway.serving.dataplane`) which versions exist, their
  weights and the shadow, and waits until Envoy runs that configuration;
- it persists what is served (`.control/state.json`, written atomically) and reconciles on
  start: a model server still running from before (a control plane killed with -9) is adopted,
  one that is gone is started again, so a restart serves what was served;
- given the lake, it moves the model servers' prediction spool into each model's prediction
  log (`shipway.serving.prediction_log`) every few seconds, and once more after stopping them;
- every change needs `Authorization: Bearer $SHIPWAY_SERVING_TOKEN`; reading status does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as Endpoint

from shipway.errors import BadRequest, NotFound, ServiceError, ShipwayError
from shipway.files import write_atomic
from shipway.monitoring.quality import QualityReport
from shipway.monitoring.skew import SKEW_DIR, SkewReport
from shipway.rollout.state import RolloutStore
from shipway.serving.bundle import Bundle, read_bundle
from shipway.serving.client import TOKEN_ENV
from shipway.serving.dataplane import DataPlane, Route
from shipway.serving.package import (
    MANIFEST,
    REQUIRE_SIGNED_ENV,
    PackageError,
    verify_key,
    verify_package,
)
from shipway.serving.prediction_log import ingest
from shipway.serving.runtime import start_replicas, version_ready_url

log = logging.getLogger(__name__)

MAX_ADMIN_BODY = 64 * 1024
SUPERVISE_SECONDS = 1.0
INGEST_SECONDS = 5.0
APPLY_TIMEOUT = 10.0


class Stoppable(Protocol):
    def running(self) -> bool: ...

    def stop(self, timeout: float = 15.0) -> None: ...


class AdoptedProcess:
    """A model server started by an earlier control plane that is still serving."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def running(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 15.0) -> None:
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self.running():
                    return
                time.sleep(0.1)


@dataclass
class Replica:
    """One MLServer process serving a version."""

    index: int
    http_port: int
    metrics_port: int
    pid: int
    process: Stoppable

    def record(self) -> dict[str, Any]:
        return {
            "replica": self.index,
            "http_port": self.http_port,
            "metrics_port": self.metrics_port,
            "pid": self.pid,
        }


@dataclass
class ServedVersion:
    bundle: Bundle
    replicas: list[Replica]

    def record(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle.path), "replicas": [r.record() for r in self.replicas]}

    def running(self) -> bool:
        return all(r.process.running() for r in self.replicas)


@dataclass
class ServedModel:
    name: str
    versions: dict[str, ServedVersion] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    shadow: str | None = None

    def route(self) -> Route:
        return Route(
            self.name,
            {v: [r.http_port for r in s.replicas] for v, s in self.versions.items()},
            dict(self.weights),
            self.shadow,
        )


@dataclass(frozen=True)
class SavedState:
    """What `.control/state.json` holds: enough to serve the same again after a restart."""

    models: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> SavedState:
        if not path.exists():
            return cls({})
        try:
            return cls(json.loads(path.read_text())["models"])
        except (ValueError, KeyError) as exc:
            raise ServiceError(
                f"serving state {path} is unreadable ({exc!r}); move it away"
            ) from None

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=1, sort_keys=True))


def _is_our_mlserver(pid: int, bundle: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"mlserver" in part for part in cmdline) and str(bundle).encode() in cmdline


class _RolloutCollector(Collector):
    """Each model's rollout, read from its state file at scrape: phase, step, failed checks and
    the last analysed values (so a dashboard shows what the controller decided on)."""

    def __init__(self, store: RolloutStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phase = GaugeMetricFamily(
            "shipway_rollout_phase",
            "1 for the phase each model's latest rollout is in",
            labels=["model", "version", "champion", "phase"],
        )
        failed = GaugeMetricFamily(
            "shipway_rollout_failed_checks",
            "Failed analysis intervals in a row",
            labels=["model", "version"],
        )
        analysis = GaugeMetricFamily(
            "shipway_rollout_analysis",
            "Values of the latest analysed interval",
            labels=["model", "version", "value"],
        )
        for state in self.store.all():
            labels = [state.model, state.challenger]
            phase.add_metric([*labels, state.champion or "", state.phase], 1)
            failed.add_metric(labels, state.failed)
            last = next((d for d in reversed(state.decisions) if d.get("analysis")), None)
            for key, value in (last or {}).get("analysis", {}).items():
                if value is not None:
                    analysis.add_metric([*labels, key], float(value))
        yield phase
        yield failed
        yield analysis


class _QualityCollector(Collector):
    """Each model's live quality, as `<model>_live_quality` last computed it (read at scrape
    from `.quality/<model>.json`): the judged window's metrics, labelled rows and coverage."""

    def __init__(self, root: Path) -> None:
        self.folder = root / ".quality"

    def collect(self) -> Iterator[GaugeMetricFamily]:
        names = ["model", "version"]
        quality = GaugeMetricFamily(
            "shipway_live_quality",
            "Live quality per version over the policy's window (labels as they landed)",
            labels=[*names, "metric"],
        )
        labelled = GaugeMetricFamily(
            "shipway_live_labelled_predictions",
            "Predictions in the window whose label has landed",
            labels=names,
        )
        coverage = GaugeMetricFamily(
            "shipway_label_coverage", "Share of the window's predictions labelled", labels=names
        )
        for path in sorted(self.folder.glob("*.json")) if self.folder.exists() else []:
            try:
                report = QualityReport.load(path)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("live quality report %s is unreadable: %s", path, exc)
                continue
            for q in report.window:
                labels = [report.model, q.version]
                labelled.add_metric(labels, q.labelled)
                coverage.add_metric(labels, q.coverage)
                for metric, value in q.metrics.items():
                    quality.add_metric([*labels, metric], value)
        yield quality
        yield labelled
        yield coverage


class _SkewCollector(Collector):
    """Each model's training/serving skew, as `<model>_feature_skew` last measured it (read at
    scrape from `.skew/<model>.json`)."""

    def __init__(self, root: Path) -> None:
        self.folder = root / SKEW_DIR

    def collect(self) -> Iterator[GaugeMetricFamily]:
        share = GaugeMetricFamily(
            "shipway_feature_skew_share",
            "Share of compared served rows whose feature value differs from the point-in-time "
            "offline value",
            labels=["model", "feature"],
        )
        compared = GaugeMetricFamily(
            "shipway_feature_skew_compared_rows",
            "Served rows compared with their offline vectors in the last skew run",
            labels=["model"],
        )
        for path in sorted(self.folder.glob("*.json")) if self.folder.exists() else []:
            try:
                report = SkewReport.load(path)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("skew report %s is unreadable: %s", path, exc)
                continue
            compared.add_metric([report.model], report.compared)
            for feature in report.features:
                share.add_metric([report.model, feature.feature], feature.share)
        yield share
        yield compared


class ControlPlane:
    def __init__(
        self,
        root: Path,
        dataplane: DataPlane,
        log_dir: Path,
        targets_dir: Path | None,
        lake: Path | None = None,
    ) -> None:
        self.root = root.resolve()
        self.lake = lake
        self.spool = self.root / ".predictions" if lake is not None else None
        self.rollouts = RolloutStore(self.root)
        self.dataplane = dataplane
        self.log_dir = log_dir
        self.targets_dir = targets_dir
        self.state_path = self.root / ".control" / "state.json"
        self.models: dict[str, ServedModel] = {}
        self.lock = asyncio.Lock()
        self.registry = CollectorRegistry()
        self.weight = Gauge(
            "shipway_traffic_weight",
            "Traffic weight in percent (shadow versions: 0, see shipway_shadow)",
            ["model", "version"],
            registry=self.registry,
        )
        self.shadow = Gauge(
            "shipway_shadow",
            "1 for the version that receives mirrored traffic",
            ["model", "version"],
            registry=self.registry,
        )
        self.restarts = Gauge(
            "shipway_model_server_restarts",
            "Model servers the control plane restarted after they stopped",
            ["model", "version"],
            registry=self.registry,
        )
        self.logged = Counter(
            "shipway_prediction_log_rows",
            "Scored rows written to the model's prediction log",
            ["model"],
            registry=self.registry,
        )
        self.last_logged = Gauge(
            "shipway_prediction_log_last_write_timestamp_seconds",
            "When rows were last written to the model's prediction log",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_RolloutCollector(self.rollouts))
        self.registry.register(_QualityCollector(self.root))
        self.registry.register(_SkewCollector(self.root))

    # --- state -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            name: {
                "weights": model.weights,
                "shadow": model.shadow,
                "versions": {
                    v: {
                        "bundle": str(s.bundle.path),
                        "replicas": [
                            {**r.record(), "running": r.process.running()} for r in s.replicas
                        ],
                        "running": s.running(),
                    }
                    for v, s in model.versions.items()
                },
            }
            for name, model in self.models.items()
        }

    async def reconcile(self) -> None:
        """Serve what the saved state says: adopt live model servers, start missing ones."""
        saved = SavedState.load(self.state_path)
        for name, entry in saved.models.items():
            model = self.models.setdefault(name, ServedModel(name))
            for version, record in entry["versions"].items():
                try:
                    model.versions[version] = await run_in_threadpool(
                        self._revive, name, version, record
                    )
                except ShipwayError as exc:
                    log.error("cannot serve %s v%s again: %s", name, version, exc)
            model.weights = {v: int(w) for v, w in entry["weights"].items() if v in model.versions}
            shadow = entry.get("shadow")
            model.shadow = shadow if shadow in model.versions else None
        await self._commit()
        log.info("reconciled serving state: %s", {n: m.weights for n, m in self.models.items()})

    def _revive(self, model: str, version: str, record: dict[str, Any]) -> ServedVersion:
        """Adopt each saved replica still serving; start the others (and any the bundle now
        asks for beyond those saved) again. A state file from before replicas holds one
        server's ports and pid at the top of the record."""
        bundle = read_bundle(Path(record["bundle"]))
        saved = {int(r.get("replica", 0)): r for r in record.get("replicas", [record])}
        adopted: list[Replica] = []
        for index, replica in sorted(saved.items()):
            kept = self._adopt(model, version, bundle, index, replica)
            if kept is not None and index < bundle.replicas:
                adopted.append(kept)
            elif kept is not None:
                kept.process.stop()
        missing = sorted(set(range(bundle.replicas)) - {r.index for r in adopted})
        replicas = adopted + self._start_replicas(bundle, missing)
        return ServedVersion(bundle, sorted(replicas, key=lambda r: r.index))

    def _adopt(
        self, model: str, version: str, bundle: Bundle, index: int, record: dict[str, Any]
    ) -> Replica | None:
        pid = int(record.get("pid", 0))
        if not pid or not _is_our_mlserver(pid, bundle.path):
            return None
        with contextlib.suppress(httpx.HTTPError):
            url = version_ready_url(bundle, int(record["http_port"]))
            if httpx.get(url, timeout=2.0).status_code == 200:
                log.info("adopted %s v%s replica %s (pid %s)", model, version, index, pid)
                return Replica(
                    index,
                    int(record["http_port"]),
                    int(record["metrics_port"]),
                    pid,
                    AdoptedProcess(pid),
                )
        AdoptedProcess(pid).stop()
        return None

    def _start_replicas(self, bundle: Bundle, indices: list[int]) -> list[Replica]:
        if not indices:
            return []
        return [
            Replica(r.replica, r.http_port, r.metrics_port, r.process.pid, r.process)
            for r in start_replicas(bundle, self.log_dir, indices, spool_dir=self.spool)
        ]

    def _start(self, bundle: Bundle) -> ServedVersion:
        return ServedVersion(bundle, self._start_replicas(bundle, list(range(bundle.replicas))))

    async def _commit(self) -> bool:
        """Persist, tell the data plane, wait until it runs this configuration."""
        SavedState(
            {
                name: {
                    "versions": {v: s.record() for v, s in m.versions.items()},
                    "weights": m.weights,
                    "shadow": m.shadow,
                }
                for name, m in self.models.items()
            }
        ).save(self.state_path)
        generation = self.dataplane.publish([m.route() for m in self.models.values()])
        self._write_targets()
        self.weight.clear()
        self.shadow.clear()
        for name, m in self.models.items():
            for v in m.versions:
                self.weight.labels(name, v).set(m.weights.get(v, 0))
                self.shadow.labels(name, v).set(1 if m.shadow == v else 0)
        return await self._applied(generation)

    async def _applied(self, generation: str) -> bool:
        deadline = time.monotonic() + APPLY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if await run_in_threadpool(self.dataplane.applied) == (generation, generation):
                    return True
            except Exception as exc:
                log.debug("data plane not answering: %s", exc)
            await asyncio.sleep(0.05)
        log.warning(
            "the data plane has not applied configuration %s after %.0fs; it will when it runs "
            "again (files in %s)",
            generation,
            APPLY_TIMEOUT,
            self.dataplane.config_dir,
        )
        return False

    def _write_targets(self) -> None:
        if self.targets_dir is None:
            return
        # The metrics carry model and version; the target adds which replica answered.
        groups = [
            {"targets": [f"127.0.0.1:{r.metrics_port}"], "labels": {"replica": str(r.index)}}
            for m in self.models.values()
            for s in m.versions.values()
            for r in s.replicas
        ]
        write_atomic(self.targets_dir / "mlserver.json", json.dumps(groups))

    # --- changes ---------------------------------------------------------------------------

    def _bundle_under_root(self, path: Path) -> Bundle:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise BadRequest(
                f"bundle {path} is outside the serving home {self.root}; "
                "bundles are served only from there"
            )
        return read_bundle(resolved)

    def _check_signature(self, bundle: Bundle) -> None:
        """A bundle inside a model package (`<package>/bundle`) is served only as signed, with
        the key in $SHIPWAY_VERIFY_KEY(_FILE); with $SHIPWAY_REQUIRE_SIGNED=1 (production) an
        unpackaged bundle is refused too."""
        package = bundle.path.parent
        if (package / MANIFEST).exists():
            public = verify_key()
            if public is None:
                raise PackageError(
                    f"package {package} cannot be verified: the control plane has no "
                    f"$SHIPWAY_VERIFY_KEY or $SHIPWAY_VERIFY_KEY_FILE"
                )
            checked = verify_package(package, public)
            log.info("verified package %s (key %s)", package, checked.key_id)
        elif os.environ.get(REQUIRE_SIGNED_ENV) == "1":
            raise PackageError(
                f"bundle {bundle.path} is not a signed package and {REQUIRE_SIGNED_ENV}=1: "
                "production serves only packages from `shipway models package`"
            )

    async def deploy(self, model: str, version: str, bundle_path: Path) -> bool:
        bundle = self._bundle_under_root(bundle_path)
        await run_in_threadpool(self._check_signature, bundle)
        if (bundle.model, bundle.version) != (model, version):
            raise BadRequest(
                f"bundle {bundle_path} holds {bundle.model} v{bundle.version}, "
                f"not {model} v{version}"
            )
        async with self.lock:
            served = self.models.setdefault(model, ServedModel(model))
            if version in served.versions:
                return True
            served.versions[version] = await run_in_threadpool(self._start, bundle)
            served.weights.setdefault(version, 0)
            applied = await self._commit()
        log.info("deployed %s v%s from %s", model, version, bundle.path)
        return applied

    async def set_traffic(
        self, model: str, weights: dict[str, Any], shadow: str | None = None
    ) -> bool:
        served = self._model(model)
        unknown = sorted(({*weights} | ({shadow} if shadow else set())) - set(served.versions))
        if unknown:
            raise BadRequest(
                f"model {model!r} has no running version(s) {unknown}; "
                f"running: {sorted(served.versions)}"
            )
        bad = {
            v: w
            for v, w in weights.items()
            if not isinstance(w, int) or isinstance(w, bool) or w < 0
        }
        if bad:
            raise BadRequest(f"weights must be non-negative integers, got {bad}")
        if sum(weights.values()) != 100:
            raise BadRequest(f"weights must add up to 100, got {sum(weights.values())}")
        if shadow is not None and weights.get(shadow, 0) > 0:
            raise BadRequest(f"v{shadow} cannot be the shadow and take {weights[shadow]}% too")
        async with self.lock:
            served.weights = {v: int(weights.get(v, 0)) for v in served.versions}
            served.shadow = shadow
            applied = await self._commit()
        log.info("traffic for %s: %s, shadow %s", model, served.weights, shadow)
        return applied

    async def undeploy(self, model: str, version: str) -> bool:
        served = self._model(model)
        if version not in served.versions:
            raise NotFound(f"model {model!r} has no running version {version!r}")
        if served.weights.get(version, 0) > 0:
            raise BadRequest(
                f"{model} v{version} still takes {served.weights[version]}% of traffic; "
                "shift its traffic away first"
            )
        async with self.lock:
            stopped = served.versions.pop(version)
            served.weights.pop(version, None)
            if served.shadow == version:
                served.shadow = None
            applied = await self._commit()
            # Routes no longer name it: what it still answers drains, then it stops.
            for replica in stopped.replicas:
                await run_in_threadpool(replica.process.stop)
        return applied

    def _model(self, model: str) -> ServedModel:
        if model not in self.models:
            raise NotFound(f"model {model!r} is not deployed; deployed: {sorted(self.models)}")
        return self.models[model]

    # --- supervision -----------------------------------------------------------------------

    async def supervise(self) -> None:
        """Start again a model server that stopped without being asked to."""
        while True:
            await asyncio.sleep(SUPERVISE_SECONDS)
            for name, model in list(self.models.items()):
                for version, served in list(model.versions.items()):
                    for replica in list(served.replicas):
                        if not replica.process.running():
                            await self._restart(name, version, served, replica)

    async def _restart(
        self, name: str, version: str, served: ServedVersion, replica: Replica
    ) -> None:
        which = f"{name} v{version} replica {replica.index}"
        log.error("%s stopped; starting it again", which)
        async with self.lock:
            if self.models[name].versions.get(version) is not served:
                return
            try:
                (started,) = await run_in_threadpool(
                    self._start_replicas, served.bundle, [replica.index]
                )
            except ShipwayError as exc:
                log.error("%s did not start again: %s", which, exc)
                return
            served.replicas[served.replicas.index(replica)] = started
            self.restarts.labels(name, version).inc()
            await self._commit()

    async def shutdown(self) -> None:
        for model in self.models.values():
            for served in model.versions.values():
                for replica in served.replicas:
                    await run_in_threadpool(replica.process.stop)
        # Stopped gracefully, the model servers wrote what they had queued: log it all.
        await run_in_threadpool(self.ingest)

    # --- prediction log --------------------------------------------------------------------

    def _rollout_of(self, model: str, version: str) -> str:
        state = self.rollouts.load(model)
        served = self.models.get(model)
        if state is None or state.finished or served is None:
            return ""
        if served.shadow == version:
            return f"{state.phase}: v{version} mirrored"
        return f"{state.phase}: v{version} at {served.weights.get(version, 0)}%"

    def ingest(self) -> dict[str, int]:
        if self.spool is None or self.lake is None:
            return {}
        try:
            written = ingest(self.spool, self.lake, self._rollout_of)
        except Exception:  # the loop must outlive a failed pass: the spool keeps the rows
            log.exception("prediction log: ingest failed; rows stay spooled for the next pass")
            return {}
        now = time.time()
        for model, rows in written.items():
            self.logged.labels(model).inc(rows)
            self.last_logged.labels(model).set(now)
        return written

    async def log_predictions(self) -> None:
        while True:
            await asyncio.sleep(INGEST_SECONDS)
            await run_in_threadpool(self.ingest)


def create_app(
    root: Path,
    dataplane: DataPlane,
    log_dir: Path,
    targets_dir: Path | None = None,
    lake: Path | None = None,
) -> Starlette:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ServiceError(
            f"{TOKEN_ENV} is not set: the control plane changes what is served and needs a "
            "token (`shipway up` makes one; or export one)"
        )
    plane = ControlPlane(root, dataplane, log_dir, targets_dir, lake)

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
        try:
            return json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("request body is not valid JSON") from None

    def answer(model: str, applied: bool) -> Response:
        return JSONResponse({**plane.status().get(model, {}), "applied": applied})

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

    async def status(request: Request) -> Response:
        return JSONResponse(plane.status())

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
            Endpoint("/admin/models/{model}/versions/{version}", deploy, methods=["PUT"]),
            Endpoint("/admin/models/{model}/versions/{version}", undeploy, methods=["DELETE"]),
            Endpoint("/admin/models/{model}/traffic", traffic, methods=["PUT"]),
            Endpoint("/health", health),
            Endpoint("/metrics", metrics),
        ],
        exception_handlers={
            Unauthorized: error(401),
            TooLarge: error(413),
            NotFound: error(404),
            BadRequest: error(400),
            ShipwayError: error(503),
        },
        lifespan=lifespan,
    )
    app.state.plane = plane
    return app


class Unauthorized(ShipwayError):
    """A change to what is served came without the serving token."""


class TooLarge(BadRequest):
    """A request body over the limit."""
