"""Shipway's MLServer runtime for an LLM application: one version behind the Open Inference
Protocol, guard in → retrieve (with the caller's ACL) → generate → guard out
(`shipway.serving.assistant`, the code the release gate evaluated).

A request carries the questions as a BYTES input `question` ([n]); the answer is the BYTES
output `answer`, with each answer's request id, retrieved documents, topic, prompt version,
tokens and guard verdicts in the output's parameters. What a caller may retrieve is its
record's access level (`shipway.serving.access`: the caller the front door names, its level
from the control plane's projection); the request parameter `acl` may narrow it (`public` for a
staff caller), and asking for more is a 403 naming both levels. A bad request (no `question`,
an empty one, an unknown ACL) is a 400 naming it. Generation runs in a worker thread
(llama.cpp releases the GIL), one at a time per replica.

Every answer goes to the prediction log (`shipway.serving.prediction_log.ANSWER_SCHEMA`, through
the spool): prompt version, the question as the in-guard left it, retrieved documents and best
score, topic (or `out_of_corpus`, `blocked`), tokens, guard verdicts, latency. A caller rates
an answer with `POST /v2/models/<model>/feedback` (`{"request_id", "rating": "up"|"down"}`,
`shipway.serving.protocol.parse_feedback`): answered 202 and spooled to `<model>_feedback`,
the application's delayed labels; a bad body is a 400 naming the field. A rating is taken only
for an answer that was given (not a mirrored one), within `RATING_WINDOW_SECONDS`, and only
from the caller who received it: every served answer is recorded in the answer ledger before it
is returned, and any other rating is a 404 naming the request id (the same for an answer that
was never given and one given to another caller, so a caller learns nothing of others'). Which
version's server takes a rating does not matter: the ledger is shared.

Metrics, per model and version, for the rollout's analysis and the dashboards:
`shipway_answers_total`, `shipway_answer_tokens_total`, `shipway_guard_blocks_total` (by
`stage`: `in` for a refused injection, `out` for a withheld answer),
`shipway_answer_fallbacks_total`, `shipway_answer_topics_total` (by `topic`) and
`shipway_answer_feedback_total` (by `rating`: `up`, `down`, or `refused` for a rating no given
answer matched). An injected fault (`parameters.extra.fault`:
error ratio, added latency) makes a bad challenger, as for a model.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from mlserver import MLModel
from mlserver.errors import InferenceError, MLServerError
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput
from mlserver.utils import get_model_uri
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shipway.callers import narrowest
from shipway.errors import BadRequest, Forbidden
from shipway.serving import guards
from shipway.serving.access import RATING_WINDOW_SECONDS, AccessFile, AnswerLedger
from shipway.serving.assistant import Answer, Application, answer_record, topic_of
from shipway.serving.bundle import ANSWER_OUTPUT, QUESTION_INPUT
from shipway.serving.prediction_spool import (
    ANSWERS,
    FEEDBACK,
    SPOOL_ENV,
    RecordSpool,
    spool_metrics,
)
from shipway.serving.protocol import (
    CALLER_HEADER,
    FAULT_MESSAGE,
    InjectedFault,
    check_request_depth,
    mirrored,
    parse_feedback,
)
from shipway.serving.server_errors import ServerErrors

MAX_QUESTIONS = 16


class _Counts(Collector):
    def __init__(self, model: str, version: str) -> None:
        self.labels = [model, version]
        self.lock = threading.Lock()
        self.answers = 0
        self.tokens = 0
        self.blocked = {"in": 0, "out": 0}
        self.fallbacks = 0
        self.topics: Counter[str] = Counter()
        self.ratings: Counter[str] = Counter()
        self.spools: list[RecordSpool] = []

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers += 1
            self.tokens += answer.tokens
            self.blocked["in"] += answer.guard_in == guards.IN_INJECTION
            self.blocked["out"] += answer.guard_out in (guards.OUT_LEAK, guards.OUT_UNSAFE)
            self.fallbacks += answer.fell_back
            self.topics[topic_of(answer)] += 1

    def rated(self, rating: str) -> None:
        with self.lock:
            self.ratings[rating] += 1

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        names = ["model", "version"]
        with self.lock:
            answers = CounterMetricFamily("shipway_answers", "Questions answered", labels=names)
            answers.add_metric(self.labels, float(self.answers))
            tokens = CounterMetricFamily(
                "shipway_answer_tokens", "Prompt and completion tokens", labels=names
            )
            tokens.add_metric(self.labels, float(self.tokens))
            blocks = CounterMetricFamily(
                "shipway_guard_blocks",
                "Questions refused as injections (stage in), answers withheld (stage out)",
                labels=[*names, "stage"],
            )
            for stage, count in self.blocked.items():
                blocks.add_metric([*self.labels, stage], float(count))
            fallbacks = CounterMetricFamily(
                "shipway_answer_fallbacks",
                "Answers replaced by the fallback (timeout or withheld)",
                labels=names,
            )
            fallbacks.add_metric(self.labels, float(self.fallbacks))
            topics = CounterMetricFamily(
                "shipway_answer_topics",
                "Questions by the topic of the best document retrieved (out_of_corpus: none "
                "scored enough; blocked: refused as an injection)",
                labels=[*names, "topic"],
            )
            for topic, count in sorted(self.topics.items()):
                topics.add_metric([*self.labels, topic], float(count))
            ratings = CounterMetricFamily(
                "shipway_answer_feedback",
                "Callers' ratings of answers, by the version whose server took them (refused: no "
                "answer given to that caller matched)",
                labels=[*names, "rating"],
            )
            for rating, count in sorted(self.ratings.items()):
                ratings.add_metric([*self.labels, rating], float(count))
        yield from (answers, tokens, blocks, fallbacks, topics, ratings)
        for spool in self.spools:
            yield from spool_metrics(spool, self.labels)


def parse_questions(payload: InferenceRequest) -> tuple[list[str], str | None]:
    """The questions of a request and the access it asks for (None: its caller's own), or a
    BadRequest naming the field."""
    extra = (payload.parameters.model_extra if payload.parameters else None) or {}
    check_request_depth([i.data.root for i in payload.inputs], extra)
    found = [i for i in payload.inputs if i.name == QUESTION_INPUT]
    if not found:
        names = [i.name for i in payload.inputs]
        raise BadRequest(f"inputs: no input named {QUESTION_INPUT!r} (got {names})")
    data = found[0].data.root
    values = data if isinstance(data, list) else [data]
    questions = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    if not questions or len(questions) > MAX_QUESTIONS:
        raise BadRequest(
            f"inputs.{QUESTION_INPUT}: {len(questions)} questions, expected 1 to {MAX_QUESTIONS}"
        )
    acl = extra.get("acl")
    if acl is not None and not isinstance(acl, str):
        raise BadRequest(f"parameters.acl: expected a string, got {type(acl).__name__}")
    return questions, acl


class ShipwayApplication(MLModel):
    """`implementation` of an LLM application's `model-settings.json`."""

    async def load(self) -> bool:
        folder = Path(await get_model_uri(self.settings)).parent
        self._app = Application.load(folder)
        await asyncio.to_thread(self._app.warm_up)
        extra: dict[str, Any] = self.settings.parameters.extra or {}
        self._fault = InjectedFault(extra)
        self._counts = _Counts(self.name, str(self.version))
        spool = os.environ.get(SPOOL_ENV)
        version = str(self.version)
        self._answers: RecordSpool | None = (
            RecordSpool(Path(spool), self.name, version, ANSWERS) if spool else None
        )
        self._feedback: RecordSpool | None = (
            RecordSpool(Path(spool), self.name, version, FEEDBACK) if spool else None
        )
        self._counts.spools = [s for s in (self._answers, self._feedback) if s is not None]
        self._access = AccessFile.from_env()
        self._ledger = AnswerLedger.from_env()
        REGISTRY.register(self._counts)
        self._errors = ServerErrors(self.name, version)
        REGISTRY.register(self._errors)
        return True

    async def unload(self) -> bool:
        REGISTRY.unregister(self._counts)
        REGISTRY.unregister(self._errors)
        for spool in self._counts.spools:
            spool.close()
        self._ledger.close()
        return True

    @custom_handler(rest_path="/v2/models/{model_name}/feedback")
    async def feedback(self, request: Request) -> JSONResponse:
        """A caller's rating of an answer, by its request id: spooled for the feedback log."""
        if request.path_params.get("model_name") != self.name:
            return JSONResponse(
                {"error": f"no model {request.path_params.get('model_name')!r}"}, 404
            )
        try:
            request_id, rating = parse_feedback(await request.body())
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        caller = request.headers.get(CALLER_HEADER, "")
        version = await asyncio.to_thread(self._ledger.given_to, self.name, request_id, caller)
        if version is None:
            self._counts.rated("refused")
            days = RATING_WINDOW_SECONDS / 86_400
            return JSONResponse(
                {
                    "error": f"feedback.request_id: {request_id!r} names no answer {self.name} "
                    f"gave this caller in the last {days:g} days; a caller rates only the "
                    "answers it received"
                },
                404,
            )
        self._counts.rated(rating)
        if self._feedback is not None:
            self._feedback.add(
                {"request_id": request_id, "at": time.time(), "rating": rating, "caller": caller}
            )
        return JSONResponse({"request_id": request_id, "rating": rating}, 202)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        headers = (payload.parameters.headers if payload.parameters else None) or {}
        with self._errors.watch(headers, (InferenceError,)):
            return await self._predict(payload, headers)

    async def _predict(
        self, payload: InferenceRequest, headers: dict[str, Any]
    ) -> InferenceResponse:
        caller = str(headers.get(CALLER_HEADER, ""))
        try:
            questions, asked = parse_questions(payload)
            acl = narrowest(self._access.acl_of(caller or None), asked)
            answers = [
                await asyncio.to_thread(self._app.answer, question, acl) for question in questions
            ]
        except Forbidden as exc:
            raise MLServerError(str(exc), 403) from None
        except BadRequest as exc:
            raise InferenceError(str(exc)) from None
        if await self._fault.strikes():
            raise MLServerError(FAULT_MESSAGE, 500)
        settings = self._app.settings
        prompt = f"{settings.prompt_name}/{settings.prompt_version}"
        version = str(self.version)
        given = payload.id or headers.get("x-request-id") or uuid.uuid4().hex
        ids = [given] if len(answers) == 1 else [f"{given}.{i}" for i in range(len(answers))]
        served, at = not mirrored(headers), time.time()
        if served:
            # Before the answer leaves (its caller may rate it at once, on any replica); an
            # answer that cannot be recorded is not given: 503, the caller tries again.
            try:
                await asyncio.to_thread(self._ledger.give, self.name, version, ids, caller, at)
            except sqlite3.Error as exc:
                raise MLServerError(
                    f"the answer ledger cannot record this answer: {exc}", 503
                ) from None
        for answer, request_id in zip(answers, ids, strict=True):
            self._counts.add(answer)
            if self._answers is not None:
                self._answers.add(answer_record(answer, request_id, at, served, prompt, caller))
        details = [
            {
                "request_id": request_id,
                "topic": topic_of(a),
                "retrieved": a.retrieved,
                "citations": a.citations,
                "prompt": prompt,
                "tokens": a.tokens,
                "guard_in": a.guard_in,
                "guard_out": a.guard_out,
                "refused": a.refused,
                "fell_back": a.fell_back,
                "seconds": round(a.seconds, 4),
            }
            for a, request_id in zip(answers, ids, strict=True)
        ]
        output = ResponseOutput(
            name=ANSWER_OUTPUT,
            shape=[len(answers)],
            datatype="BYTES",
            data=[a.answer for a in answers],
            parameters=Parameters(answers=details),
        )
        return InferenceResponse(
            model_name=self.name, model_version=self.version, id=payload.id, outputs=[output]
        )
