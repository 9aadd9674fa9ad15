"""Chaos soak: constant traffic through two rollouts while services are killed with -9.

On the real components (`running_stack`: MLflow, Prometheus, Envoy, the control plane and its
MLServer replicas, the feature service), in a scratch home:

1. land `--days` days of events and build fraud_model v1 (dbt, Feast, training, gate,
   deployment), as `shipway demo` does;
2. start constant traffic: `--rate` single-row predictions a second through the front door
   (each with its own request id; a refused connection, a reset or a 502/503/504 is retried
   up to 3 times, as a serving team's client would) and `--rate`/2 feature lookups a second at
   the feature service;
3. run the rollout sensor in its own process (as Dagster's daemon runs it), ticking every 2 s;
4. retrain twice, each release starting a rollout: v2 as trained (good), v3 with injected
   faults (30% errors, +80 ms), which the analysis must roll back;
5. meanwhile, every `--kill-every` seconds on average, kill -9 one of: a model-server replica
   (the control plane restarts it), the control plane, the feature service, Prometheus (the
   stack's supervisor starts each again, as `shipway up` does), the sensor process (the soak
   starts it again, as Dagster's daemon would be);
6. stop the traffic, wait until the supervisor has brought back whatever is down, let serving
   log what it holds, and report:
   requests sent, answered, failed, retried; predictions answered vs rows in
   `fraud_model_predictions`; and whether MLflow's champion, the version at 100%, the release
   audit and the rollout state agree.

    .venv/bin/python bench/soak.py                   # a few minutes (two rollouts)
    .venv/bin/python bench/soak.py --rounds 3 --rate 100 --kill-every 10   # longer, harsher

Not part of the test run: it takes minutes and its figures are the point. Exit code 1 when a
prediction was lost beyond what kill -9 of a model server may lose (its last half second of
rows: `shipway.serving.prediction_spool`), when a faulty challenger was not rolled back, or
when the final state disagrees. A good challenger may be rolled back when a kill lands in its
analysis (a restarted replica's first answers are slow): reported, not a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

MODEL = "fraud_model"
REPO_ROOT = Path(__file__).resolve().parents[1]
BAD_CHALLENGER = {"error_ratio": 0.3, "latency_ms": 80.0}
RETRIED = (502, 503, 504)
VICTIMS = ("model server", "control plane", "feature service", "prometheus", "sensor")


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    retried: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    answered_ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def line(self, what: str) -> str:
        return (
            f"{what}: sent {self.sent}, answered {self.answered}, failed {self.failed}, "
            f"retried {self.retried}; final codes {dict(self.codes)}"
        )


def _call(http: httpx.Client, method: str, url: str, body: Any, tally: Tally) -> int | None:
    """One request, retried on what a restart causes; its final status, None if never answered."""
    for attempt in range(4):
        if attempt:
            with tally.lock:
                tally.retried += 1
            time.sleep(0.2 * 2**attempt)
        try:
            answer = http.request(method, url, json=body)
        except httpx.TransportError:
            continue
        if answer.status_code in RETRIED:
            continue
        return answer.status_code
    return None


def predictions(
    stack: Any, vectors: Any, names: list[str], rate: float, stop: threading.Event, tally: Tally
) -> None:
    from shipway.serving.protocol import features_request

    url = f"{stack.serving_url}/v2/models/{MODEL}/infer"
    with httpx.Client(timeout=10.0, headers=stack.serving().api_headers) as http:
        i, began = 0, time.monotonic()
        while not stop.is_set():
            request_id = f"soak-{uuid.uuid4().hex}"
            body = {**features_request(vectors[i % len(vectors)][None, :], names), "id": request_id}
            code = _call(http, "POST", url, body, tally)
            with tally.lock:
                tally.sent += 1
                tally.codes[str(code)] += 1
                if code == 200:
                    tally.answered += 1
                    tally.answered_ids.add(request_id)
                else:
                    tally.failed += 1
            i += 1
            time.sleep(max(0.0, began + i / rate - time.monotonic()))


def lookups(
    stack: Any, entities: dict[str, list[Any]], rate: float, stop: threading.Event, tally: Tally
) -> None:
    url = f"{stack.features_url}/get-online-features"
    with httpx.Client(timeout=10.0, headers=stack.serving().api_headers) as http:
        i, began = 0, time.monotonic()
        n = len(entities["customer_id"])
        while not stop.is_set():
            one = {k: [v[i % n]] for k, v in entities.items()}
            code = _call(
                http, "POST", url, {"feature_service": "fraud_model_v1", "entities": one}, tally
            )
            with tally.lock:
                tally.sent += 1
                tally.codes[str(code)] += 1
                if code == 200:
                    tally.answered += 1
                else:
                    tally.failed += 1
            i += 1
            time.sleep(max(0.0, began + i / rate - time.monotonic()))


def sensor_process(stack: Any) -> subprocess.Popen[bytes]:
    """The rollout sensor ticking every 2 s in its own process (Dagster's daemon's job)."""
    log = (stack.home.logs / "soak-sensor.log").open("ab")
    return subprocess.Popen(
        [sys.executable, __file__, "--tick-rollouts"],
        env={**os.environ, **stack.environment(), "SOAK_STACK": json.dumps(_urls(stack))},
        stdout=log,
        stderr=subprocess.STDOUT,
        # Feast names a repository's modules from the working folder (dbt's runs move ours).
        cwd=REPO_ROOT,
    )


def _urls(stack: Any) -> dict[str, str]:
    return {
        "prometheus": stack.prometheus_url,
        "home": str(stack.home.root),
        "mlflow": stack.mlflow_url,
        "control": stack.control_url,
        "serving": stack.serving_url,
        "token": stack.token,
    }


def tick_rollouts() -> None:
    """`--tick-rollouts`: what the sensor process runs until it is killed."""
    from dagster import DagsterInstance, build_sensor_context

    from assets.definitions import defs
    from shipway.defs.resources import (
        MlflowResource,
        PrometheusResource,
        ServingResource,
        ShipwayHomeResource,
    )
    from shipway.models.declaration import load_declaration
    from shipway.paths import ASSETS_DIR

    urls = json.loads(os.environ["SOAK_STACK"])
    name = load_declaration(ASSETS_DIR / "fraud" / "model.yaml").rollout_sensor
    sensor = defs.resolve_sensor_def(name)
    instance = DagsterInstance.from_config(str(Path(urls["home"]) / "dagster"))
    while True:
        context = build_sensor_context(
            instance=instance,
            resources={
                "prometheus": PrometheusResource(url=urls["prometheus"]),
                "lake": ShipwayHomeResource(path=urls["home"]),
                "mlflow": MlflowResource(tracking_uri=urls["mlflow"]),
                "serving": ServingResource(
                    control_url=urls["control"], url=urls["serving"], token=urls["token"]
                ),
            },
        )
        try:
            sensor(context)
        except Exception as exc:  # a tick that fails is tried again, as the daemon does
            print(f"{datetime.now(UTC):%H:%M:%S} tick failed: {exc}", flush=True)
        time.sleep(2.0)


class Chaos:
    """Kills one victim with -9 at random moments. A replica is started again by the control
    plane, a service by the stack's supervisor; only the sensor, the soak's own process, is
    started again here."""

    def __init__(self, stack: Any, group: dict[str, Any], rng: random.Random, every: float) -> None:
        self.stack, self.group, self.rng, self.every = stack, group, rng, every
        self.kills: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        """Victims in a shuffled round: each is killed once before any twice."""
        order: list[str] = []
        while not self.stop.wait(self.rng.uniform(0.5, 1.5) * self.every):
            if not order:
                order = self.rng.sample(VICTIMS, len(VICTIMS))
            victim = order.pop()
            try:
                self.kill(victim)
            except Exception as exc:
                print(f"  chaos: {victim}: {exc}", flush=True)

    def kill(self, victim: str) -> None:
        if victim == "model server":
            status = self.stack.serving().status().get(MODEL, {}).get("versions", {})
            pids = [(v, r["pid"]) for v, s in status.items() for r in s.get("replicas", [])]
            if not pids:
                return
            version, pid = self.rng.choice(pids)
            os.kill(pid, signal.SIGKILL)  # the control plane restarts it
            victim = f"{victim} (v{version})"
        elif victim == "sensor":
            sensor = self.group["sensor"]
            sensor.kill()
            sensor.wait()
            self.group["sensor"] = sensor_process(self.stack)
        else:
            os.kill(self.group[victim].pid, signal.SIGKILL)
        self.kills[victim.split(" (")[0]] += 1
        print(f"  {datetime.now(UTC):%H:%M:%S} killed -9: {victim}", flush=True)


def _named(stack: Any) -> dict[str, Any]:
    return {
        "control plane": stack.group.named("serving control plane"),
        "feature service": stack.group.named("feature service"),
        "prometheus": stack.group.named("prometheus"),
    }


def _run_job(defs: Any, instance: Any, job: str, **kwargs: Any) -> Any:
    from shipway.errors import ShipwayError, run_failures

    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **kwargs
    )
    if not result.success:
        raise ShipwayError(f"{job} failed: {'; '.join(run_failures(result)) or 'a gate'}")
    return result


def _wait_finished(home: Any, challenger: str, timeout: float) -> Any:
    from shipway.rollout.state import RolloutStore

    store = RolloutStore(home.served.rollouts)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            state = store.load(MODEL)
            if state is not None and state.challenger == challenger and state.finished:
                return state
        time.sleep(2.0)
    raise TimeoutError(f"v{challenger}'s rollout did not finish in {timeout:.0f}s")


def soak(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance
    from mlflow.tracking import MlflowClient

    from shipway.data.events import generate_events
    from shipway.defs.deployment import FAULT_TAG
    from shipway.features.store import feature_store, online_features
    from shipway.models.catalog import declared_model
    from shipway.paths import ShipwayHome
    from shipway.release.audit import Audit
    from shipway.rollout.state import Phase, RolloutStore
    from shipway.serving.prediction_log import read_predictions
    from shipway.stack import Ports, running_stack

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="shipway-soak-"))
    home = ShipwayHome(root)
    os.environ["SHIPWAY_HOME"] = str(root)
    start = date(2026, 9, 1)
    began = time.monotonic()
    print(f"soak: home {root}", flush=True)
    report: dict[str, Any] = {}

    def restarted(line: str) -> None:
        print(f"  {datetime.now(UTC):%H:%M:%S} supervisor: {line}", flush=True)

    with running_stack(home, Ports.free(), report=restarted) as stack:
        os.environ.update(stack.environment())
        from assets.definitions import defs, models

        declared = declared_model(models, MODEL)
        instance = DagsterInstance.from_config(str(home.dagster))
        as_of = datetime.combine(start + timedelta(days=args.days), datetime.min.time(), UTC)
        _run_job(
            defs,
            instance,
            "land_raw_events",
            run_config={
                "ops": {
                    "raw_events_batch": {
                        "config": {
                            "start_date": start.isoformat(),
                            "days": args.days,
                            "events_per_day": args.events_per_day,
                            "as_of": (as_of + timedelta(hours=1)).isoformat(),
                        }
                    }
                }
            },
        )
        _run_job(defs, instance, declared.declaration.lifecycle_job)
        print(f"soak: v1 serves ({time.monotonic() - began:.0f}s)", flush=True)

        events = generate_events(start + timedelta(days=args.days), 1, "baseline", 7, 2000)
        store = feature_store(home)
        vectors = online_features(store, events, declared.service).to_numpy()
        names = declared.service.feature_names
        entity_columns = [
            "customer_id",
            "merchant_id",
            "event_timestamp",
            "amount",
            "channel",
            "merchant_category",
        ]
        entities = {c: events[c].tolist() for c in entity_columns}
        entities["event_timestamp"] = [t.isoformat() for t in events["event_timestamp"]]
        stop = threading.Event()
        scored, looked_up = Tally(), Tally()
        traffic = [
            threading.Thread(
                target=predictions,
                args=(stack, vectors, names, args.rate, stop, scored),
                daemon=True,
            ),
            threading.Thread(
                target=lookups, args=(stack, entities, args.rate / 2, stop, looked_up), daemon=True
            ),
        ]
        for thread in traffic:
            thread.start()
        group = {**_named(stack), "sensor": sensor_process(stack)}
        chaos = Chaos(stack, group, rng, args.kill_every)
        chaos.thread.start()
        outcomes = []
        try:
            for n in range(args.rounds):
                faulty = n % 2 == 1
                tags = {FAULT_TAG: json.dumps(BAD_CHALLENGER)} if faulty else {}
                _run_job(defs, instance, declared.declaration.retrain_job, tags=tags)
                challenger = RolloutStore(home.served.rollouts).load(MODEL)
                assert challenger is not None
                state = _wait_finished(home, challenger.challenger, args.rollout_timeout)
                outcomes.append((state.challenger, faulty, state.phase, state.reason))
                print(
                    f"soak: v{state.challenger} {'(faulty) ' if faulty else ''}"
                    f"{state.phase}: {state.reason} ({time.monotonic() - began:.0f}s)",
                    flush=True,
                )
        finally:
            chaos.stop.set()
            chaos.thread.join()
            stop.set()
            for thread in traffic:
                thread.join()
            for name, process in _named(stack).items():
                deadline = time.monotonic() + 60
                while not process.running() and time.monotonic() < deadline:
                    time.sleep(0.5)
                print(f"soak: {name} {'runs' if process.running() else 'DID NOT COME BACK'}")
            group["sensor"].kill()
        time.sleep(12)  # two of the control plane's ingest passes
        weights = stack.serving().status()[MODEL]["weights"]
        at_100 = [v for v, w in weights.items() if w == 100]
        champion = MlflowClient(stack.mlflow_url).get_model_version_by_alias(MODEL, "champion")
        final = RolloutStore(home.served.rollouts).load(MODEL)
        assert final is not None
        audited = [e for e in Audit(home).entries(MODEL) if e.event == "rollout"]
        last_promoted = next((e.version for e in reversed(audited) if e.state == "promote"), None)
        serving_champion = final.challenger if final.phase == Phase.PROMOTED else final.champion
        report["consistent"] = {
            "mlflow champion": champion.version,
            "version at 100%": at_100[0] if len(at_100) == 1 else weights,
            "audit: last promoted": last_promoted,
            "rollout state: serving champion": serving_champion,
        }
        report["outcomes"] = outcomes
        report["kills"] = dict(chaos.kills)
    # Stopped gracefully: every model server wrote what it held, and the control plane logged it.
    logged = read_predictions(home.lake, MODEL)
    served_ids = set(logged.loc[logged["served"], "request_id"])
    lost = scored.answered_ids - served_ids
    print()
    print(scored.line("predictions (front door)"))
    print(looked_up.line("lookups (feature service)"))
    print(f"kills: {report['kills']}")
    for challenger, faulty, phase, reason in report["outcomes"]:
        print(f"rollout v{challenger}{' (faulty)' if faulty else ''}: {phase} ({reason})")
    print(
        f"predictions answered {len(scored.answered_ids)}, "
        f"logged {len(served_ids & scored.answered_ids)}, lost {len(lost)} "
        f"({len(lost) / max(len(scored.answered_ids), 1):.3%})"
    )
    values = report["consistent"]
    agree = len({str(v) for v in values.values()}) == 1
    print(f"final state {'agrees' if agree else 'DISAGREES'}: {values}")
    print(f"took {time.monotonic() - began:.0f}s; home {root}")
    # A faulty challenger must always be rolled back. A good one may be too, when a kill hit
    # its analysis (a restarted replica's slow first answers are in its p99): conservative.
    expected = all(
        phase == Phase.ROLLED_BACK for _, faulty, phase, _ in report["outcomes"] if faulty
    )
    # A model server killed with -9 loses at most its last half second of queued rows.
    allowance = report["kills"].get("model server", 0) * args.rate * 0.5 * 2
    return 0 if agree and expected and len(lost) <= allowance else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="predictions per second (50)")
    parser.add_argument(
        "--kill-every", type=float, default=20.0, help="mean seconds between kills (20)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rollouts: good, faulty, good, ... (2)"
    )
    parser.add_argument(
        "--days", type=int, default=75, help="days of events landed (75: fraud labels take weeks)"
    )
    parser.add_argument("--events-per-day", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rollout-timeout", type=float, default=900.0)
    parser.add_argument("--tick-rollouts", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tick_rollouts:
        tick_rollouts()
        return 0
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
