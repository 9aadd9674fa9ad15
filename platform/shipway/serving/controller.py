"""The local serving control plane and traffic splitter: the embedded stand-in for Seldon Core.

On Kubernetes, Seldon Core runs one `Model` per version and an `Experiment` splits traffic
between them by weight. Here one process does both jobs on 127.0.0.1:

- control plane (`/admin/...`): start a version's MLServer from a bundle, set traffic weights,
  stop a version; state changes only after the new state is known to be good;
- data plane (`/v2/models/{model}/infer`): validate the V2 request against the model's
  features, pick a version by weight, forward to its MLServer, answer with the score;
- observability (`/metrics`): per-version request counts, errors, latency histogram, score
  histogram and per-feature PSI of the live window against the training reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shipway.errors import BadRequest, NotFound, ShipwayError
from shipway.monitoring.drift import DriftWindow
from shipway.serving.bundle import read_bundle
from shipway.serving.protocol import (
    infer_response,
    mlserver_request,
    parse_infer_request,
    scores_from_mlserver,
)
from shipway.serving.runtime import VersionRuntime, start_mlserver

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


@dataclass
class ServedVersion:
    runtime: VersionRuntime
    drift: DriftWindow

    @property
    def feature_names(self) -> list[str]:
        return self.drift.profile.feature_names


@dataclass
class ServedModel:
    name: str
    versions: dict[str, ServedVersion] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)

    def pick(self, rng: random.Random) -> str:
        live = [(v, w) for v, w in self.weights.items() if w > 0]
        if not live:
            raise BadRequest(f"model {self.name!r} has no version with traffic weight > 0")
        versions, weights = zip(*live, strict=True)
        return rng.choices(versions, weights=weights)[0]


class _DriftCollector(Collector):
    def __init__(self, models: dict[str, ServedModel]) -> None:
        self.models = models

    def collect(self) -> Iterator[GaugeMetricFamily]:
        psi = GaugeMetricFamily(
            "shipway_feature_drift_psi",
            "PSI of the live window against the training reference, per feature",
            labels=["model", "version", "feature"],
        )
        samples = GaugeMetricFamily(
            "shipway_drift_window_samples",
            "Rows in the live drift window",
            labels=["model", "version"],
        )
        for model in list(self.models.values()):
            for version, served in list(model.versions.items()):
                samples.add_metric([model.name, version], served.drift.samples)
                if served.drift.samples == 0:
                    continue
                for feature, value in served.drift.psi_by_feature().items():
                    psi.add_metric([model.name, version, feature], value)
        yield psi
        yield samples


class Controller:
    def __init__(self, log_dir: Path, targets_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.targets_dir = targets_dir
        self.models: dict[str, ServedModel] = {}
        self.rng = random.Random(0)
        self.lock = asyncio.Lock()
        self.http = httpx.AsyncClient(timeout=30.0)
        self.registry = CollectorRegistry()
        labels = ["model", "version"]
        self.requests = Counter(
            "shipway_requests",
            "Inference requests by outcome",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shipway_request_duration_seconds",
            "Inference request latency seen by the splitter",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Histogram(
            "shipway_prediction_score",
            "Distribution of predicted scores",
            labels,
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.weight = Gauge(
            "shipway_traffic_weight", "Traffic weight in percent", labels, registry=self.registry
        )
        self.registry.register(_DriftCollector(self.models))

    def status(self) -> dict[str, Any]:
        return {
            name: {
                "weights": model.weights,
                "versions": {
                    v: {
                        "bundle": str(s.runtime.bundle.path),
                        "infer_url": s.runtime.infer_url,
                        "metrics": s.runtime.metrics_target,
                        "drift_window_samples": s.drift.samples,
                    }
                    for v, s in model.versions.items()
                },
            }
            for name, model in self.models.items()
        }

    def _write_targets(self) -> None:
        if self.targets_dir is None:
            return
        targets = [
            s.runtime.metrics_target for m in self.models.values() for s in m.versions.values()
        ]
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.targets_dir / ".mlserver.json.tmp"
        tmp.write_text(json.dumps([{"targets": targets, "labels": {}}]))
        tmp.replace(self.targets_dir / "mlserver.json")

    async def deploy(self, model: str, version: str, bundle_path: Path) -> None:
        bundle = read_bundle(bundle_path)
        if (bundle.model, bundle.version) != (model, version):
            raise BadRequest(
                f"bundle {bundle_path} holds {bundle.model} v{bundle.version}, "
                f"not {model} v{version}"
            )
        reference = bundle.reference
        async with self.lock:
            served = self.models.setdefault(model, ServedModel(model))
            if version in served.versions:
                return
            runtime = await run_in_threadpool(start_mlserver, bundle, self.log_dir)
            served.versions[version] = ServedVersion(
                runtime, DriftWindow(reference, bundle.drift_window)
            )
            served.weights.setdefault(version, 0)
            self.weight.labels(model, version).set(0)
            self._write_targets()
        log.info("deployed %s v%s from %s", model, version, bundle_path)

    async def set_traffic(self, model: str, weights: dict[str, int]) -> None:
        served = self._model(model)
        unknown = sorted(set(weights) - set(served.versions))
        if unknown:
            raise BadRequest(
                f"model {model!r} has no running version(s) {unknown}; "
                f"running: {sorted(served.versions)}"
            )
        bad = {v: w for v, w in weights.items() if not isinstance(w, int) or w < 0}
        if bad:
            raise BadRequest(f"weights must be non-negative integers, got {bad}")
        if sum(weights.values()) != 100:
            raise BadRequest(f"weights must add up to 100, got {sum(weights.values())}")
        async with self.lock:
            served.weights = {v: weights.get(v, 0) for v in served.versions}
            for v, w in served.weights.items():
                self.weight.labels(model, v).set(w)
        log.info("traffic for %s: %s", model, served.weights)

    async def undeploy(self, model: str, version: str) -> None:
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
            self.weight.remove(model, version)
            await run_in_threadpool(stopped.runtime.process.stop)
            self._write_targets()

    def _model(self, model: str) -> ServedModel:
        if model not in self.models:
            raise NotFound(f"model {model!r} is not deployed; deployed: {sorted(self.models)}")
        return self.models[model]

    async def infer(self, model: str, body: Any) -> dict[str, Any]:
        served = self._model(model)
        version = served.pick(self.rng)
        target = served.versions[version]
        started = time.perf_counter()
        try:
            rows = parse_infer_request(body, target.feature_names)
        except BadRequest:
            self.requests.labels(model, version, "error").inc()
            raise
        try:
            output = target.runtime.bundle.mlserver_output
            upstream = await self.http.post(
                target.runtime.infer_url, json=mlserver_request(rows, output)
            )
            upstream.raise_for_status()
            scores = scores_from_mlserver(upstream.json(), output)
        except (httpx.HTTPError, KeyError, StopIteration, ValueError) as exc:
            self.requests.labels(model, version, "error").inc()
            raise UpstreamError(f"{model} v{version} failed to answer: {exc}") from exc
        self.latency.labels(model, version).observe(time.perf_counter() - started)
        self.requests.labels(model, version, "success").inc()
        score_hist = self.scores.labels(model, version)
        for score in scores:
            score_hist.observe(float(score))
        target.drift.add(rows)
        request_id = body.get("id") if isinstance(body, dict) else None
        return infer_response(model, version, scores, request_id)

    async def shutdown(self) -> None:
        await self.http.aclose()
        for model in self.models.values():
            for served in model.versions.values():
                await run_in_threadpool(served.runtime.process.stop)


class UpstreamError(ShipwayError):
    """The model server behind the splitter failed."""


def create_app(log_dir: Path, targets_dir: Path | None = None) -> Starlette:
    controller = Controller(log_dir, targets_dir)

    async def body_of(request: Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("request body is not valid JSON") from None

    async def infer(request: Request) -> Response:
        body = await body_of(request)
        return JSONResponse(await controller.infer(request.path_params["model"], body))

    async def deploy(request: Request) -> Response:
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("bundle"), str):
            raise BadRequest('body must be {"bundle": "<path to a bundle folder>"}')
        p = request.path_params
        await controller.deploy(p["model"], p["version"], Path(body["bundle"]))
        return JSONResponse(controller.status()[p["model"]])

    async def traffic(request: Request) -> Response:
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("weights"), dict):
            raise BadRequest('body must be {"weights": {"<version>": <percent>, ...}}')
        model = request.path_params["model"]
        await controller.set_traffic(model, body["weights"])
        return JSONResponse(controller.status()[model])

    async def undeploy(request: Request) -> Response:
        p = request.path_params
        await controller.undeploy(p["model"], p["version"])
        return JSONResponse(controller.status().get(p["model"], {}))

    async def status(request: Request) -> Response:
        return JSONResponse(controller.status())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(controller.registry), media_type="text/plain")

    async def bad_request(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=404)

    async def upstream_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=502)

    async def service_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await controller.shutdown()

    app = Starlette(
        routes=[
            Route("/v2/models/{model}/infer", infer, methods=["POST"]),
            Route("/admin/models", status, methods=["GET"]),
            Route("/admin/models/{model}/versions/{version}", deploy, methods=["PUT"]),
            Route("/admin/models/{model}/versions/{version}", undeploy, methods=["DELETE"]),
            Route("/admin/models/{model}/traffic", traffic, methods=["PUT"]),
            Route("/health", health),
            Route("/metrics", metrics),
        ],
        exception_handlers={
            NotFound: not_found,
            BadRequest: bad_request,
            UpstreamError: upstream_error,
            ShipwayError: service_error,
        },
        lifespan=lifespan,
    )
    app.state.controller = controller
    return app
