"""Shipway's MLServer runtime for an LLM application: one version behind the Open Inference
Protocol, guard in → retrieve (with the caller's ACL) → generate → guard out
(`shipway.serving.assistant`, the code the release gate evaluated).

A request carries the questions as a BYTES input `question` ([n]) and the caller's ACL as the
request parameter `acl` (default `public`); the answer is the BYTES output `answer`, with each
answer's retrieved documents, prompt version, tokens and guard verdicts in the output's
parameters. A bad request (no `question`, an empty one, an unknown ACL) is a 400 naming it.
Generation runs in a worker thread (llama.cpp releases the GIL), one at a time per replica.

Metrics, per model and version, for the rollout's analysis and the dashboards:
`shipway_answers_total`, `shipway_answer_tokens_total`, `shipway_guard_blocks_total` (by
`stage`: `in` for a refused injection, `out` for a withheld answer) and
`shipway_answer_fallbacks_total`. An injected fault (`parameters.extra.fault`: error ratio,
added latency) makes a bad challenger, as for a model.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlserver import MLModel
from mlserver.errors import InferenceError, MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput
from mlserver.utils import get_model_uri
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from shipway.errors import BadRequest
from shipway.serving import guards
from shipway.serving.assistant import Answer, Application
from shipway.serving.bundle import ANSWER_OUTPUT, QUESTION_INPUT
from shipway.serving.protocol import FAULT_MESSAGE, InjectedFault

DEFAULT_ACL = "public"
MAX_QUESTIONS = 16


class _Counts(Collector):
    def __init__(self, model: str, version: str) -> None:
        self.labels = [model, version]
        self.lock = threading.Lock()
        self.answers = 0
        self.tokens = 0
        self.blocked = {"in": 0, "out": 0}
        self.fallbacks = 0

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers += 1
            self.tokens += answer.tokens
            self.blocked["in"] += answer.guard_in == guards.IN_INJECTION
            self.blocked["out"] += answer.guard_out in (guards.OUT_LEAK, guards.OUT_UNSAFE)
            self.fallbacks += answer.fell_back

    def collect(self) -> Iterator[CounterMetricFamily]:
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
        yield from (answers, tokens, blocks, fallbacks)


def parse_questions(payload: InferenceRequest) -> tuple[list[str], str]:
    """The questions and the caller's ACL of a request, or a BadRequest naming the field."""
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
    extra = (payload.parameters.model_extra if payload.parameters else None) or {}
    acl = extra.get("acl", DEFAULT_ACL)
    if not isinstance(acl, str):
        raise BadRequest(f"parameters.acl: expected a string, got {type(acl).__name__}")
    return questions, acl


class ShipwayApplication(MLModel):
    """`implementation` of an LLM application's `model-settings.json`."""

    async def load(self) -> bool:
        folder = Path(await get_model_uri(self.settings)).parent
        self._app = Application.load(folder)
        extra: dict[str, Any] = self.settings.parameters.extra or {}
        self._fault = InjectedFault(extra)
        self._counts = _Counts(self.name, str(self.version))
        REGISTRY.register(self._counts)
        return True

    async def unload(self) -> bool:
        REGISTRY.unregister(self._counts)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            questions, acl = parse_questions(payload)
            answers = [
                await asyncio.to_thread(self._app.answer, question, acl) for question in questions
            ]
        except BadRequest as exc:
            raise InferenceError(str(exc)) from None
        if await self._fault.strikes():
            raise MLServerError(FAULT_MESSAGE, 500)
        for answer in answers:
            self._counts.add(answer)
        settings = self._app.settings
        details = [
            {
                "retrieved": a.retrieved,
                "citations": a.citations,
                "prompt": f"{settings.prompt_name}/{settings.prompt_version}",
                "tokens": a.tokens,
                "guard_in": a.guard_in,
                "guard_out": a.guard_out,
                "refused": a.refused,
                "fell_back": a.fell_back,
                "seconds": round(a.seconds, 4),
            }
            for a in answers
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
