"""Shared fixtures: small trained model bundles, and the platform on free loopback ports."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
)
from distributed import Client

from shipway import callers
from shipway.defs.code_location import code_location
from shipway.defs.data import LANDING_JOB
from shipway.features.versions import Recorded, Sources, copy_sources, record
from shipway.models.catalog import load_models
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT, ServingHome, ShipwayHome
from shipway.processes import LOOPBACK, ManagedProcess, free_port, free_ports
from shipway.serving.bundle import MODEL_FILE, Bundle, Fault, write_bundle
from shipway.serving.client import TOKEN_ENV, ServingClient, control_plane_process
from shipway.serving.dataplane import MODEL_HEADER, DataPlane
from shipway.serving.explanations import reference_attributions
from shipway.serving.package import VERIFY_KEY_ENV, public_key_text
from shipway.stack import Ports, Stack, running_stack
from shipway.stats.drift import CATEGORICAL, HOUR_OF_DAY, DriftRules, build_reference

TOY_FEATURES = ["amount", "hour_of_day", "customer_txn_count_7d"]
TOY_KINDS = {"hour_of_day": HOUR_OF_DAY, "customer_txn_count_7d": CATEGORICAL}
# Small windows, so a test's few hundred requests are judged.
TOY_DRIFT = DriftRules(
    window_seconds=600.0, min_rows=50, max_rows=400, attribution_share_change=0.1
)


def customer_feature_rows(day: datetime, customers: list[int], count: int) -> pd.DataFrame:
    """One day of `customer_features` rows (txn_count_7d = `count`), as dbt publishes them."""
    n = len(customers)
    frame = pd.DataFrame(
        {
            "customer_id": customers,
            "feature_date": [day.date()] * n,
            "event_timestamp": [day] * n,
            "customer_txn_count_1d": [1] * n,
            "customer_txn_count_7d": [count] * n,
            "customer_amount_avg_7d": [20.0] * n,
            "customer_amount_avg_30d": [25.0 + c for c in customers],
            "customer_amount_max_30d": [80.0] * n,
            "customer_night_share_30d": [0.1] * n,
            "customer_amount_sum_7d": [100.0] * n,
            "customer_amount_sum_30d": [400.0] * n,
            "customer_active_days_30d": [12] * n,
        }
    )
    return frame.astype({"customer_txn_count_1d": "int64", "customer_txn_count_7d": "int64"})


def merchant_feature_rows(day: datetime) -> pd.DataFrame:
    """One day of `merchant_features` for merchant 7."""
    return pd.DataFrame(
        {
            "merchant_id": [7],
            "feature_date": [day.date()],
            "event_timestamp": [day],
            "merchant_txn_count_7d": [40],
            "merchant_amount_avg_7d": [30.0],
            "merchant_distinct_customers_7d": [30],
            "merchant_online_share_7d": [0.5],
        }
    )


def toy_frame(rows: int, seed: int, amount_scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 0.8, rows) * amount_scale,
            "hour_of_day": rng.integers(0, 24, rows).astype(float),
            "customer_txn_count_7d": rng.poisson(5, rows).astype(float),
        }
    )
    frame["is_fraud"] = ((frame["amount"] > 60) & (frame["hour_of_day"] < 6)).astype(int)
    return frame


LEANING_FEATURES = ["signal", "rare", "noise"]


def leaning_rows(rows: int, seed: int, rare_shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """`signal` decides most labels; `rare` decides them only in its tail (above 2.5), which
    training seldom sees; `noise` decides nothing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    x[:, 1] += rare_shift
    return x, ((x[:, 0] > 0.5) | (x[:, 1] > 2.5)).astype(int)


def assets_copy(tmp_path: Path) -> Path:
    """A copy of `assets/`'s declarations and contracts, for a test to edit or add to."""
    copy = tmp_path / "assets"
    shutil.copytree(ASSETS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return copy


def changed_sources(folder: Path, file: str, old: str, new: str) -> Sources:
    """A copy of the repository's versioned sources (dbt project, feature repository,
    raw-events contract) with `old` replaced by `new` in `file` (`dbt_project/...`,
    `feature_repo/...`): a transformation change, made without touching the working tree."""
    sources = copy_sources(Sources(), folder)
    path = folder / file
    assert old in path.read_text(), f"{old!r} is not in {file}"
    path.write_text(path.read_text().replace(old, new))
    return sources


SPEND_SERVICE = "customer_spend_v1"
CUSTOMER_FEATURES_SQL = "dbt_project/models/features/customer_features.sql"
WINDOW_30 = "range between interval 29 days preceding and current row"
WINDOW_14 = "range between interval 13 days preceding and current row"


@dataclass(frozen=True)
class TwoVersions:
    home: ShipwayHome
    sources: Sources
    """The second version's sources: the 30-day window over 14 days."""
    first: Recorded
    second: Recorded


def spend_versions(home: ShipwayHome, folder: Path) -> TwoVersions:
    """customer_spend's feature version as the repository computes it, then again after its
    30-day window became 14 days (in a copy of the sources under `folder`), both recorded."""
    first = record(home, [SPEND_SERVICE])[SPEND_SERVICE]
    assert record(home, [SPEND_SERVICE])[SPEND_SERVICE] == first, "recorded once"
    sources = changed_sources(folder, CUSTOMER_FEATURES_SQL, WINDOW_30, WINDOW_14)
    return TwoVersions(home, sources, first, record(home, [SPEND_SERVICE], sources)[SPEND_SERVICE])


def definitions_of(models_dir: Path = ASSETS_DIR) -> Definitions:
    """The code location `assets/definitions.py` would build from `models_dir`."""
    return code_location(load_models(models_dir, RAW_EVENTS_CONTRACT), RAW_EVENTS_CONTRACT)


def landing_job() -> JobDefinition:
    """The code location's landing job, as `shipway data land` runs it."""
    from assets.definitions import defs

    return defs.resolve_job_def(LANDING_JOB)


def toy_bundle(dest: Path, version: str, seed: int) -> Bundle:
    """A real XGBoost model on three features, as the deployment asset would bundle it."""
    frame = toy_frame(2000, seed)
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, random_state=seed)
    model.fit(frame[TOY_FEATURES].to_numpy(), frame["is_fraud"].to_numpy())
    dest.mkdir(parents=True, exist_ok=True)
    model_file = dest / f"trained-{version}.ubj"
    model.save_model(model_file)
    rows = frame[TOY_FEATURES].to_numpy()
    scores = model.predict_proba(rows)[:, 1]
    attributions = reference_attributions(
        model.get_booster(), rows, TOY_FEATURES, "hour_of_day", seed
    )
    reference = build_reference(
        frame, TOY_FEATURES, 10, TOY_KINDS, scores, attributions=attributions
    )
    return write_bundle(
        dest / version,
        "toy_model",
        version,
        model_file,
        reference,
        "binary_classification",
        TOY_DRIFT,
    )


def toy_copy(
    source: Bundle,
    dest: Path,
    model: str,
    version: str = "1",
    drift: DriftRules = TOY_DRIFT,
    fault: Fault | None = None,
    replicas: int = 1,
) -> Bundle:
    """`source`'s trained model bundled again at `dest` as `model` v`version`: another name,
    or its own drift rules, injected fault or replica count."""
    return write_bundle(
        dest,
        model,
        version,
        source.path / MODEL_FILE,
        source.reference,
        "binary_classification",
        drift,
        fault=fault,
        replicas=replicas,
    )


@dataclass
class Load:
    """Constant client load on the front door: every answer counted by version and status."""

    url: str
    body: dict[str, object]
    rate: float = 40.0
    headers: dict[str, str] = field(default_factory=dict)
    """A caller's credentials (`ServingClient.api_headers`)."""
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10.0, headers=self.headers) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(self.url, json=self.body)
                    if response.status_code == 200:
                        self.answers[response.json()["model_version"]] += 1
                    else:
                        self.failures.append(f"{response.status_code} {response.text[:100]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                time.sleep(1.0 / self.rate)

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class GrpcLoad(Load):
    """The same load over the Open Inference Protocol's gRPC service, with a stock client:
    `url` is the front door's host:port, `rows` the features of each call."""

    model: str = ""
    rows: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))

    def run(self) -> None:
        import tritonclient.grpc as grpc_oip
        from tritonclient.utils import InferenceServerException

        client = grpc_oip.InferenceServerClient(self.url)
        matrix = grpc_oip.InferInput("features", list(self.rows.shape), "FP64")
        matrix.set_data_from_numpy(self.rows)
        metadata = {k.lower(): v for k, v in self.headers.items()} | {MODEL_HEADER: self.model}
        while not self._stop.is_set():
            try:
                answer = client.infer(self.model, [matrix], headers=metadata, client_timeout=10)
                self.answers[answer.get_response().model_version] += 1
            except InferenceServerException as exc:
                self.failures.append(f"{exc.status()} {str(exc.message())[:100]}")
            time.sleep(1.0 / self.rate)
        client.close()


CALLER, CALLER_KEY = "tests", "test-caller-key-2b9e41"  # distinctive: secrets tests grep for it
CALLER_HEADERS = {"Authorization": callers.credentials(CALLER, CALLER_KEY)}


def allow_test_caller(serving: ServingHome) -> None:
    """Let the tests' caller (CALLER_HEADERS) call a serving home's front door and feature
    service, at a rate no test reaches."""
    caller = callers.Caller(CALLER, callers.digest(CALLER_KEY), 10_000, 10_000)
    callers.update(serving.callers, lambda known: known.update({CALLER: caller}))


# Serving alone (Envoy and the control plane, no MLflow): what the serving tests share, one per
# test module.
TOKEN = "test-token-7f3a9c0d"  # distinctive: the secrets test greps files for it
SIGNER = Ed25519PrivateKey.generate()


@dataclass
class Serving:
    root: Path
    dataplane: DataPlane
    envoy: ManagedProcess
    control_port: int
    control: ManagedProcess

    @property
    def client(self) -> ServingClient:
        return ServingClient(
            f"http://127.0.0.1:{self.control_port}",
            self.dataplane.url,
            TOKEN,
            f"{CALLER}:{CALLER_KEY}",
        )

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    def start_control(self) -> None:
        self.control = control_plane_process(
            self.root,
            self.dataplane,
            self.root / "logs",
            self.root / "targets",
            self.control_port,
            lake=self.lake,
        )
        self.control.env[TOKEN_ENV] = TOKEN
        self.control.env[VERIFY_KEY_ENV] = public_key_text(SIGNER.public_key())
        self.control.start()

    def kill_control(self) -> None:
        """kill -9, and wait until it is gone (and its port free)."""
        os.kill(self.control.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.control.running() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    root = tmp_path_factory.mktemp("serving")
    front, stats, control = free_ports(3)
    dataplane = DataPlane(root / ".dataplane", front, stats)
    envoy = dataplane.process(root / "logs").start()
    started = Serving(root, dataplane, envoy, control, envoy)
    allow_test_caller(ServingHome(root))
    started.start_control()
    yield started
    started.control.stop()
    envoy.stop()


def served_copy(bundle: Bundle, root: Path) -> Path:
    """Bundles are served only from the serving home: copy one there."""
    dest = root / bundle.model / bundle.version
    if not dest.exists():
        shutil.copytree(bundle.path, dest)
    return dest


@pytest.fixture(scope="module")
def deployed(serving: Serving, bundles: dict[str, Bundle]) -> ServingClient:
    client = serving.client
    client.deploy("toy_model", "1", served_copy(bundles["1"], serving.root))
    client.deploy("toy_model", "2", served_copy(bundles["2"], serving.root))
    client.set_traffic("toy_model", {"1": 100})
    return client


@pytest.fixture
def home(tmp_path: Path) -> ShipwayHome:
    return ShipwayHome(tmp_path / "shipway")


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Bundle]]:
    root = tmp_path_factory.mktemp("bundles")
    yield {"1": toy_bundle(root, "1", seed=1), "2": toy_bundle(root, "2", seed=2)}


@dataclass(frozen=True)
class Platform:
    """Services on loopback, 55 landed days, and every shared asset built (dbt, Feast, online
    store): what a model's own assets need. Tests add models and versions; none relies on
    another's."""

    stack: Stack
    instance: DagsterInstance

    @property
    def home(self) -> ShipwayHome:
        return self.stack.home

    @property
    def caller(self) -> dict[str, str]:
        """The platform caller's credentials, for the front door and the feature service."""
        return self.stack.serving().api_headers

    def materialize(
        self, definitions: Definitions, job: str, *assets: str, raise_on_error: bool = False
    ) -> ExecuteInProcessResult:
        return definitions.resolve_job_def(job).execute_in_process(
            instance=self.instance,
            asset_selection=[AssetKey(a) for a in assets] if assets else None,
            raise_on_error=raise_on_error,
        )


PLATFORM_SIGNER = Ed25519PrivateKey.generate()

# Everything models build on after landing: dbt's tables, Feast's registry and online store.
SHARED_GROUPS = ("transform", "labels", "features")


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = ShipwayHome(tmp_path_factory.mktemp("platform"))
    saved = dict(os.environ)
    # Serving verifies packages with this key; a test that sets the signing key gets them.
    os.environ[VERIFY_KEY_ENV] = public_key_text(PLATFORM_SIGNER.public_key())
    with running_stack(home, Ports.free()) as stack:
        os.environ.update(stack.environment())
        from assets.definitions import defs

        instance = DagsterInstance.from_config(str(home.dagster))
        config = {
            "start_date": "2026-09-01",
            "days": 55,
            "events_per_day": 400,
            "as_of": "2026-10-26T01:00:00+00:00",
        }
        landed = defs.resolve_job_def("land_raw_events").execute_in_process(
            instance=instance, run_config={"ops": {"raw_events_batch": {"config": config}}}
        )
        assert landed.success
        graph = defs.resolve_asset_graph()
        shared = [
            key
            for key in graph.get_all_asset_keys()
            if graph.get(key).is_materializable and graph.get(key).group_name in SHARED_GROUPS
        ]
        built = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=shared
        )
        assert built.success
        yield Platform(stack, instance)
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Dask scheduler and two worker processes on loopback: its address."""
    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://{LOOPBACK}:{free_port()}"
    dask = str(Path(sys.executable).with_name("dask"))

    def workers(count: int) -> Callable[[], bool]:
        def ready() -> bool:
            try:
                with Client(address, timeout=2) as client:
                    return len(client.scheduler_info(n_workers=-1)["workers"]) >= count
            except OSError:
                return False

        return ready

    quiet = ["--dashboard-address", ":0"]
    host, port = address.removeprefix("tcp://").split(":")
    scheduler = ManagedProcess(
        "dask scheduler",
        [dask, "scheduler", "--host", host, "--port", port, *quiet],
        logs / "scheduler.log",
        ready_probe=workers(0),
    ).start()
    started = [scheduler]
    try:
        for index in range(2):
            started.append(
                ManagedProcess(
                    f"dask worker {index}",
                    [
                        *(dask, "worker", address, "--host", LOOPBACK, "--nthreads", "1"),
                        *("--memory-limit", "2GiB", "--name", f"worker-{index}", *quiet),
                    ],
                    logs / f"worker-{index}.log",
                    ready_probe=workers(index + 1),
                ).start()
            )
        yield address
    finally:
        for process in reversed(started):
            process.stop()


def check_evaluation(result: ExecuteInProcessResult, check_name: str) -> AssetCheckEvaluation:
    """A run's evaluation of one asset check."""
    return next(
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == check_name
    )


def materialization(result: ExecuteInProcessResult, asset: str) -> dict[str, object]:
    """The metadata values a run recorded for one asset."""
    (found,) = [
        e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey(asset)
    ]
    return {key: value.value for key, value in found.metadata.items()}


def resident_bytes(pid: int) -> int:
    """A running process's resident memory (`VmRSS`), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M)
    assert found is not None, f"pid {pid} has no resident memory: it is not running"
    return int(found.group(1)) * 1024


def tree_paths(tree: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every path into a parsed YAML or JSON document (keys and indices), containers included,
    the document itself not: what a property test edits one value at."""
    found: list[tuple[object, ...]] = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += tree_paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += tree_paths(value, (*prefix, index))
    return found


class JsonHandler(BaseHTTPRequestHandler):
    """Base of the stand-ins for APIs that cannot run here (Kubernetes, Grafana): quiet, and
    answering JSON."""

    def log_message(self, *args: object) -> None:
        return

    def answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
