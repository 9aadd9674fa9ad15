"""The serving control plane: the embedded stand-in for Seldon Core's scheduler.

On Kubernetes, Seldon Core runs one `Model` per version and an `Experiment` splits traffic
between them. Here `ControlPlane` does that job on 127.0.0.1, and never touches a request:

- it starts each version's MLServer replicas (Shipway's runtime, from a bundle under the
  serving home, as many as the bundle's `replicas`), restarts one that crashes, and stops
  them when the version is undeployed;
- it tells the data plane (Envoy, `shipway.serving.dataplane`) which versions exist, their
  weights and the shadow, and waits until Envoy runs that configuration;
- it persists what is served (`shipway.serving.state`) and reconciles on start: a model server
  still running from before (a control plane killed with -9) is adopted, one that is gone is
  started again, so a restart serves what was served;
- given the lake, it moves the model servers' prediction spool into each model's prediction
  log (`shipway.serving.prediction_log`) every few seconds, and once more after stopping them.

It knows bundles, not declarations, rollouts or releases: whoever starts it hands it the
metric collectors to export beside its own and the phase of each model's rollout, which it
writes beside each logged row. Its HTTP face is `shipway.serving.control_api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from shipway import callers
from shipway.callers import Caller
from shipway.errors import BadRequest, NotFound, ShipwayError
from shipway.files import Held, Holder, write_atomic
from shipway.paths import ServingHome
from shipway.serving.bundle import LLM_APPLICATION, Bundle, bundle_files, read_bundle
from shipway.serving.dataplane import DataPlane, Route
from shipway.serving.package import (
    MANIFEST,
    REQUIRE_SIGNED_ENV,
    PackageError,
    install_package,
    require_signed,
    verify_key,
    verify_package,
)
from shipway.serving.prediction_log import ingest
from shipway.serving.runtime import grpc_socket, is_ready, socket_folder, start_replicas
from shipway.serving.state import SavedState

log = logging.getLogger(__name__)

SUPERVISE_SECONDS = 1.0
INGEST_SECONDS = 5.0
APPLY_TIMEOUT = 10.0
PARTS = ("clusters", "routes", "listeners")
RolloutPhase = Callable[[str], str | None]
"""The phase of a model's rollout under way (`canary`, `shadow`), or None outside one."""


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
    """One MLServer process serving a version, on its Unix socket."""

    index: int
    socket: Path
    metrics_port: int
    pid: int
    process: Stoppable

    def record(self) -> dict[str, Any]:
        return {
            "replica": self.index,
            "socket": str(self.socket),
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
            {v: [r.socket for r in s.replicas] for v, s in self.versions.items()},
            dict(self.weights),
            self.shadow,
            grpc={v: [grpc_socket(r.socket) for r in s.replicas] for v, s in self.versions.items()},
            feedback=any(s.bundle.problem == LLM_APPLICATION for s in self.versions.values()),
        )


def _is_our_model_server(pid: int, bundle: Path) -> bool:
    """Whether `pid` is a model server (`mlserver start`, or `shipway.serving.model_server`) of
    this bundle: a pid saved long ago may belong to another program now."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    server = any(b"mlserver" in part or b"model_server" in part for part in cmdline)
    return server and str(bundle).encode() in cmdline


def _content(bundle: Bundle) -> str:
    """What a bundle serves, as one digest of its files."""
    digest = hashlib.sha256()
    for name in bundle_files(bundle.problem):
        digest.update(name.encode() + b"\0" + (bundle.path / name).read_bytes())
    return digest.hexdigest()


def _check_traffic(
    model: str, served: ServedModel, weights: dict[str, Any], shadow: str | None
) -> None:
    unknown = sorted(({*weights} | ({shadow} if shadow else set())) - set(served.versions))
    if unknown:
        raise BadRequest(
            f"model {model!r} has no running version(s) {unknown}; "
            f"running: {sorted(served.versions)}"
        )
    bad = {
        v: w for v, w in weights.items() if not isinstance(w, int) or isinstance(w, bool) or w < 0
    }
    if bad:
        raise BadRequest(f"weights must be non-negative integers, got {bad}")
    if sum(weights.values()) != 100:
        raise BadRequest(f"weights must add up to 100, got {sum(weights.values())}")
    if shadow is not None and weights.get(shadow, 0) > 0:
        raise BadRequest(f"v{shadow} cannot be the shadow and take {weights[shadow]}% too")


class Conflict(BadRequest):
    """A change that contradicts what is served (HTTP 409), e.g. a version's other contents."""


@dataclass(frozen=True)
class Applied:
    """Whether the data plane runs a change, and if not, why: a rejection Envoy logged, or no
    answer in `APPLY_TIMEOUT` (it applies the files when it runs again)."""

    applied: bool
    reason: str = ""

    def record(self) -> dict[str, Any]:
        return {"applied": self.applied, **({"reason": self.reason} if self.reason else {})}


class ControlPlane:
    def __init__(
        self,
        root: Path,
        dataplane: DataPlane,
        log_dir: Path,
        targets_dir: Path | None,
        lake: Path | None = None,
        collectors: Iterable[Collector] = (),
        rollout_phase: RolloutPhase = lambda model: None,
    ) -> None:
        """`root` is the serving home; with `lake`, the prediction spool goes to Delta there.
        `collectors` are exported on /metrics beside the control plane's own metrics."""
        self.root = root.resolve()
        home = ServingHome(self.root)
        self.home = home
        self.sockets = socket_folder(self.root)
        self.lake = lake
        self.spool = home.prediction_spool if lake is not None else None
        self.rollout_phase = rollout_phase
        self.dataplane = dataplane
        self.log_dir = log_dir
        self.targets_dir = targets_dir
        self.state_path = home.state
        # Callers of the front door need a key unless $SHIPWAY_REQUIRE_API_KEYS says no.
        self.require_keys = callers.required()
        self._last_callers: dict[str, Caller] = {}
        self.generation = ""
        """The data plane configuration last published."""
        self.dataplane_error: str | None = None
        """Why the data plane does not run that configuration, when it does not."""
        self.models: dict[str, ServedModel] = {}
        self.lock = asyncio.Lock()
        self._holder: Holder | None = None
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
        self.caller_rate = Gauge(
            "shipway_caller_rate_limit",
            "Requests per second a caller may send the front door (its refusals: "
            "envoy_http_local_rate_limit_rate_limited{caller=...})",
            ["caller"],
            registry=self.registry,
        )
        self.caller_burst = Gauge(
            "shipway_caller_burst_limit",
            "Requests a caller may send the front door at once",
            ["caller"],
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
        for collector in collectors:
            self.registry.register(collector)

    # --- state -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            name: {
                "weights": model.weights,
                "shadow": model.shadow,
                "versions": {
                    v: {
                        **s.record(),
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

    def claim(self) -> None:
        """Become the serving home's one control plane, or refuse to start: two would
        overwrite each other's state and Envoy files. A holder killed with -9 leaves no lock
        behind (the kernel drops it)."""
        if self._holder is not None:
            return
        try:
            self._holder = Holder(self.home.control_lock)
        except Held as exc:
            raise ShipwayError(
                f"serving home {self.root} already has a control plane (pid {exc.pid}); "
                "stop it first, or give this one another serving home"
            ) from None

    async def reconcile(self) -> None:
        """Serve what the saved state says: adopt live model servers, start missing ones.
        Claims the serving home first."""
        self.claim()
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
        asks for beyond those saved) again. The saved bundle passes the same checks as a new
        deployment (under the serving home, signed where it must be): a state file cannot
        serve what a deployment could not. A replica saved before model servers listened on
        sockets (a state file's top-level ports) is stopped and started again, never adopted."""
        bundle = self._admit(Path(record["bundle"]))
        if (bundle.model, bundle.version) != (model, version):
            raise BadRequest(f"the saved bundle holds {bundle.model} v{bundle.version}")
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
        if not pid or not _is_our_model_server(pid, bundle.path):
            return None
        socket = Path(record["socket"]) if "socket" in record else None
        if socket is not None and socket.parent == self.sockets and is_ready(bundle, socket):
            log.info("adopted %s v%s replica %s (pid %s)", model, version, index, pid)
            return Replica(index, socket, int(record["metrics_port"]), pid, AdoptedProcess(pid))
        AdoptedProcess(pid).stop()
        return None

    def _start_replicas(self, bundle: Bundle, indices: list[int]) -> list[Replica]:
        if not indices:
            return []
        self._verify_installed(bundle)
        metrics = self.root / ".metrics" / bundle.model / bundle.version
        started = start_replicas(
            bundle,
            self.log_dir,
            metrics,
            indices,
            sockets=self.sockets,
            spool_dir=self.spool,
            serving=self.home,
        )
        return [
            Replica(r.replica, r.socket, r.metrics_port, r.process.pid, r.process) for r in started
        ]

    def _start(self, bundle: Bundle) -> ServedVersion:
        return ServedVersion(bundle, self._start_replicas(bundle, list(range(bundle.replicas))))

    def _allowed(self) -> dict[str, Caller] | None:
        """Who may call (None: anyone). A callers file broken by hand keeps the front door's
        keys as they were (none, at start): a rollback is never blocked by it, and nobody
        is let in by it; the error is logged, and changing a caller is refused until fixed."""
        if not self.require_keys:
            return None
        try:
            self._last_callers = callers.load(self.home.callers)
        except BadRequest as exc:
            log.error("%s; the front door keeps the keys it had", exc)
        return self._last_callers

    async def _commit(self) -> Applied:
        """Persist, tell the data plane and the model servers, wait until Envoy runs this
        configuration or says it will not."""
        allowed = self._allowed()
        rejected = await run_in_threadpool(self._rejected)
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
        generation = self.dataplane.publish([m.route() for m in self.models.values()], allowed)
        # What the model servers may know of the callers: their access levels, no digests.
        write_atomic(self.home.access, json.dumps(callers.access_map(allowed or {})), mode=0o600)
        self._write_targets()
        self.weight.clear()
        self.shadow.clear()
        self.caller_rate.clear()
        self.caller_burst.clear()
        for name, caller in (allowed or {}).items():
            self.caller_rate.labels(name).set(caller.rate)
            self.caller_burst.labels(name).set(caller.burst)
        for name, m in self.models.items():
            for v in m.versions:
                self.weight.labels(name, v).set(m.weights.get(v, 0))
                self.shadow.labels(name, v).set(1 if m.shadow == v else 0)
        self.generation = generation
        return await self._applied(generation, rejected)

    def _rejected(self) -> int | None:
        """Updates Envoy has rejected so far; None when it does not answer."""
        try:
            return self.dataplane.running().rejected
        except Exception as exc:
            log.debug("data plane not answering: %s", exc)
            return None

    async def _applied(self, generation: str, rejected: int | None) -> Applied:
        deadline = time.monotonic() + APPLY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                running = await run_in_threadpool(self.dataplane.running)
            except Exception as exc:
                log.debug("data plane not answering: %s", exc)
            else:
                if running.versions == (generation,) * 3:
                    self.dataplane_error = None
                    return Applied(True)
                if rejected is not None and running.rejected > rejected:
                    reason = await run_in_threadpool(self.dataplane.rejection, self.log_dir)
                    self.dataplane_error = (
                        f"Envoy rejected configuration {generation} and runs the one before: "
                        f"{reason}"
                    )
                    log.error("%s", self.dataplane_error)
                    return Applied(False, self.dataplane_error)
            await asyncio.sleep(0.05)
        self.dataplane_error = (
            f"Envoy has not applied configuration {generation} after {APPLY_TIMEOUT:.0f}s; it "
            f"will when it runs again (files in {self.dataplane.config_dir})"
        )
        log.warning("%s", self.dataplane_error)
        return Applied(False, self.dataplane_error)

    def dataplane_status(self) -> dict[str, Any]:
        """The configuration last published, what Envoy runs, and why not, if it does not."""
        try:
            running: Any = self.dataplane.running()
        except Exception as exc:
            return {"generation": self.generation, "applied": False, "error": f"{exc}"}
        applied = running.versions == (self.generation,) * 3
        return {
            "generation": self.generation,
            "running": dict(zip(PARTS, running.versions, strict=True)),
            "rejected_updates": running.rejected,
            "applied": applied,
            "error": None if applied else self.dataplane_error,
        }

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

    def _admit(self, path: Path) -> Bundle:
        """The bundle at `path` as it may be served, or a refusal naming why.

        It must lie under the serving home. A bundle inside a model package (`<package>/
        bundle`) is served only as signed, with the key in $SHIPWAY_VERIFY_KEY(_FILE), and
        from the package's verified private copy (`install_package`); with
        $SHIPWAY_REQUIRE_SIGNED on (production), a bundle outside a package is refused."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise BadRequest(
                f"bundle {path} is outside the serving home {self.root}; "
                "bundles are served only from there"
            )
        package = resolved.parent
        if (package / MANIFEST).exists():
            public = verify_key()
            if public is None:
                raise PackageError(
                    f"package {package} cannot be verified: the control plane has no "
                    f"$SHIPWAY_VERIFY_KEY or $SHIPWAY_VERIFY_KEY_FILE"
                )
            installed = install_package(package, self.home.verified, public)
            log.info("verified package %s (key %s): %s", package, installed.key_id, installed.path)
            return read_bundle(installed.bundle)
        if require_signed():
            raise PackageError(
                f"bundle {path} is not a signed package and {REQUIRE_SIGNED_ENV} is on: "
                "production serves only packages from `shipway models package`"
            )
        return read_bundle(resolved)

    def _verify_installed(self, bundle: Bundle) -> None:
        """Before a model server starts from a package's verified copy, verify it again: a
        restart (the supervisor's, or a restarted control plane's) loads only signed bytes."""
        package = bundle.path.parent
        if package.parent == self.home.verified:
            public = verify_key()
            if public is None:
                raise PackageError(f"package {package} cannot be verified: no verifying key")
            verify_package(package, public)

    async def deploy(self, model: str, version: str, bundle_path: Path) -> Applied:
        bundle = await run_in_threadpool(self._admit, bundle_path)
        if (bundle.model, bundle.version) != (model, version):
            raise BadRequest(
                f"bundle {bundle_path} holds {bundle.model} v{bundle.version}, "
                f"not {model} v{version}"
            )
        async with self.lock:
            served = self.models.setdefault(model, ServedModel(model))
            running = served.versions.get(version)
            if running is not None:
                if _content(running.bundle) != _content(bundle):
                    raise Conflict(
                        f"{model} v{version} is already served from {running.bundle.path}, "
                        f"with other contents than {bundle_path}; a version's contents never "
                        "change: deploy a new version, or undeploy this one first"
                    )
                return Applied(True)
            served.versions[version] = await run_in_threadpool(self._start, bundle)
            served.weights.setdefault(version, 0)
            applied = await self._commit()
        log.info("deployed %s v%s from %s", model, version, bundle.path)
        return applied

    async def set_traffic(
        self, model: str, weights: dict[str, Any], shadow: str | None = None
    ) -> Applied:
        """Checked and applied under the lock: what it checks (the running versions) cannot
        change between the check and the change."""
        async with self.lock:
            served = self._model(model)
            _check_traffic(model, served, weights, shadow)
            served.weights = {v: int(weights.get(v, 0)) for v in served.versions}
            served.shadow = shadow
            applied = await self._commit()
        log.info("traffic for %s: %s, shadow %s", model, served.weights, shadow)
        return applied

    async def undeploy(self, model: str, version: str) -> Applied:
        """Checked and applied under the lock: a traffic change that waits for it cannot give
        weight to a version this stops, nor this stop one that was given weight meanwhile."""
        async with self.lock:
            served = self._model(model)
            if version not in served.versions:
                raise NotFound(f"model {model!r} has no running version {version!r}")
            if served.weights.get(version, 0) > 0:
                raise BadRequest(
                    f"{model} v{version} still takes {served.weights[version]}% of traffic; "
                    "shift its traffic away first"
                )
            stopped = served.versions.pop(version)
            served.weights.pop(version, None)
            if served.shadow == version:
                served.shadow = None
            applied = await self._commit()
            # Routes no longer name it: what it still answers drains, then it stops.
            for replica in stopped.replicas:
                await run_in_threadpool(replica.process.stop)
        return applied

    # --- callers ---------------------------------------------------------------------------

    def callers(self) -> list[dict[str, Any]]:
        """Who may call, with their limits (never their keys' digests)."""
        return [
            {"caller": c.name, "rate": c.rate, "burst": c.burst, "acl": c.acl}
            for c in callers.load(self.home.callers).values()
        ]

    async def set_caller(self, caller: Caller) -> Applied:
        """Add a caller, or change its key or limits; the front door applies it at once."""

        def add(known: dict[str, Caller]) -> None:
            known[caller.name] = caller

        async with self.lock:
            callers.update(self.home.callers, add)
            applied = await self._commit()
        if applied.applied:
            log.info(
                "caller %s may call at %s/s (burst %s), access %s",
                caller.name,
                caller.rate,
                caller.burst,
                caller.acl,
            )
        return applied

    async def remove_caller(self, name: str) -> Applied:
        async with self.lock:
            callers.update(self.home.callers, lambda known: callers.remove(known, name))
            applied = await self._commit()
        if applied.applied:
            log.info("caller %s removed: its key no longer opens the front door", name)
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
        """Stop every model server, all at once: one by one, a home serving many versions
        took longer than whoever stops the control plane waits (15 s before SIGTERM), and the
        last ingest never ran."""
        await asyncio.gather(
            *(
                run_in_threadpool(replica.process.stop)
                for model in self.models.values()
                for served in model.versions.values()
                for replica in served.replicas
            )
        )
        # Stopped gracefully, the model servers wrote what they had queued: log it all.
        await run_in_threadpool(self.ingest)
        if self._holder is not None:
            self._holder.release()
            self._holder = None

    # --- prediction log --------------------------------------------------------------------

    def _rollout_of(self, model: str, version: str) -> str:
        """Where the version stands in its model's rollout, for the prediction log's rows;
        empty outside a rollout, or when the phase cannot be read (the rows are logged all
        the same: a label is not worth a row)."""
        try:
            phase = self.rollout_phase(model)
        except Exception:
            log.exception("%s: the rollout's phase is unreadable; rows logged without it", model)
            return ""
        served = self.models.get(model)
        if phase is None or served is None:
            return ""
        if served.shadow == version:
            return f"{phase}: v{version} mirrored"
        return f"{phase}: v{version} at {served.weights.get(version, 0)}%"

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
