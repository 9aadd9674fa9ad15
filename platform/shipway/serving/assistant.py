"""An LLM application version at serving time: guard in → retrieve → generate → guard out.

A version is a folder (`<serving>/<model>/<version>/`) holding `application.json` (the prompt
templates and their registry version, the retrieval and generation settings, the fallback and
refusal answers, the canary token) and `corpus.parquet` (the corpus snapshot at the Delta
version it was built from). The same `Application` answers in evaluation, in the demo and in
the model server, so what the gate measured is what callers get.

The system prompt starts with the version's canary token: a generation that repeats its
instructions carries it, so a leak is found by a string match (`guards.guard_out`) and counted
by the red-team gate whatever the wording around it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shipway.errors import BadRequest, PolicyError
from shipway.files import write_atomic
from shipway.serving import guards
from shipway.serving.bundle import APPLICATION_FILE, CORPUS_FILE
from shipway.serving.generation import (
    SMOLLM2,
    Generation,
    Generator,
    OpenAICompatibleGenerator,
    local_generator,
    smollm2_path,
)
from shipway.serving.retrieval import Retrieved, Retriever, check_acl

INSTRUCTIONS = "{{instructions}}"
CITATION = re.compile(r"\[([a-z0-9][a-z0-9-]*)\]")
OUT_OF_CORPUS, BLOCKED = "out_of_corpus", "blocked"
WARM_UP_QUESTION = "How do I block my card?"
# Where a question or an answer may be long, what the log and the evaluation keep of it.
MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class GeneratorSpec:
    kind: str  # "local" or "openai_compatible"
    model: str = SMOLLM2
    base_url: str | None = None
    api_key_env: str | None = None
    threads: int = 1


@dataclass(frozen=True)
class ApplicationSettings:
    """What one version of an LLM application is, besides its corpus."""

    name: str
    version: str
    prompt_name: str
    prompt_version: int
    system_template: str
    user_template: str
    k: int
    min_score: float
    max_tokens: int
    timeout_seconds: float
    fallback_answer: str
    refusal_answer: str
    generator: GeneratorSpec
    corpus_table: str
    corpus_version: int
    price_per_1k_tokens: float = 0.0

    @property
    def canary(self) -> str:
        """A token only this prompt's instructions hold: a hash of the prompt's name and text,
        so the same prompt carries the same token in `shipway ci`, at the gate and in serving
        (and a greedy model answers it alike in all three)."""
        text = "\0".join((self.prompt_name, self.system_template, self.user_template))
        return f"CANARY-{hashlib.sha256(text.encode()).hexdigest()[:12].upper()}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApplicationSettings:
        return cls(**{**data, "generator": GeneratorSpec(**data["generator"])})


@dataclass(frozen=True)
class Answer:
    """One answer and everything the prediction log and the evaluation keep of it."""

    question: str
    acl: str
    answer: str
    raw: str
    retrieved: list[str]
    scores: list[float]
    citations: list[str]
    guard_in: str
    guard_out: str
    refused: bool
    fell_back: bool
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cpu_seconds: float
    """CPU time of this thread on the answer: guards, retrieval and a local generation (which
    llama.cpp computes on the calling thread); for a remote generator its wall time is added."""
    pii_in: list[str] = field(default_factory=list)
    pii_out: list[str] = field(default_factory=list)
    topic: str = ""
    """The best retrieved document's topic; empty where nothing was retrieved."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def topic_of(answer: Answer) -> str:
    """What the question was about: the best retrieved document's topic, `OUT_OF_CORPUS`
    where none scored enough, `BLOCKED` for a question refused as an injection."""
    if answer.guard_in == guards.IN_INJECTION:
        return BLOCKED
    return answer.topic or OUT_OF_CORPUS


def answer_record(
    answer: Answer, request_id: str, at: float, served: bool, prompt: str, caller: str = ""
) -> dict[str, Any]:
    """An answer as the prediction log keeps it: the question as the in-guard left it (an
    injection's is redacted here, as an honest question's was), and who asked (`""`: the
    front door named nobody)."""
    question = answer.question
    if answer.guard_in == guards.IN_INJECTION:
        question = guards.redact(question)[0]
    return {
        "request_id": request_id,
        "at": at,
        "served": served,
        "caller": caller,
        "question": question,
        "acl": answer.acl,
        "prompt": prompt,
        "retrieved": answer.retrieved,
        "top_score": answer.scores[0] if answer.scores else None,
        "topic": topic_of(answer),
        "tokens": answer.tokens,
        "guard_in": answer.guard_in,
        "guard_out": answer.guard_out,
        "pii": answer.pii_in,
        "refused": answer.refused,
        "fell_back": answer.fell_back,
        "seconds": answer.seconds,
    }


def write_version(folder: Path, settings: ApplicationSettings, corpus: pd.DataFrame) -> Path:
    """Write a version's folder: the corpus first, the settings (what marks it whole) last."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CORPUS_FILE}.tmp"
    corpus.to_parquet(tmp, index=False)
    tmp.replace(folder / CORPUS_FILE)
    write_atomic(folder / APPLICATION_FILE, json.dumps(settings.to_json(), indent=2))
    return folder


def read_settings(folder: Path) -> ApplicationSettings:
    try:
        return ApplicationSettings.from_json(json.loads((folder / APPLICATION_FILE).read_text()))
    except FileNotFoundError:
        raise PolicyError(
            f"{folder} holds no {APPLICATION_FILE}: not an application version"
        ) from None


def make_generator(spec: GeneratorSpec) -> Generator:
    if spec.kind == "local":
        if spec.model != SMOLLM2:
            raise PolicyError(f"generator.model: local model {spec.model!r}; known: {SMOLLM2}")
        return local_generator(smollm2_path(), spec.threads)
    if spec.base_url is None or spec.api_key_env is None:
        raise PolicyError("generator: openai_compatible needs base_url and api_key_env")
    return OpenAICompatibleGenerator(spec.base_url, spec.model, spec.api_key_env)


def render(template: str, values: dict[str, str]) -> str:
    """MLflow's prompt syntax: `{{name}}` placeholders."""
    out = template
    for name, value in values.items():
        out = out.replace("{{" + name + "}}", value)
    return out


class Application:
    """A version that answers questions; `generator` may be swapped (a test's slow one)."""

    def __init__(
        self,
        settings: ApplicationSettings,
        corpus: pd.DataFrame,
        generator: Generator | None = None,
    ) -> None:
        self.settings = settings
        self.retriever = Retriever(corpus, settings.k, settings.min_score)
        self.generator = generator if generator is not None else make_generator(settings.generator)

    @classmethod
    def load(cls, folder: Path, generator: Generator | None = None) -> Application:
        return cls(read_settings(folder), pd.read_parquet(folder / CORPUS_FILE), generator)

    def warm_up(self) -> None:
        """Answer one question and drop it: presidio's analyzer is built on first use (about
        2 s) and the model's weights are paged in on the first generation, so neither lands
        on a caller's first question or on a measured case."""
        self.answer(WARM_UP_QUESTION, "public")

    @property
    def instructions(self) -> str:
        """The system template with the version's canary token in front."""
        return f"[{self.settings.canary}] {self.settings.system_template}"

    def messages(self, question: str, documents: list[Retrieved]) -> list[dict[str, str]]:
        """The chat turns. A user template that places `{{instructions}}` (for a model without
        a system role) carries them in the user turn, and no system turn is sent."""
        s = self.settings
        context = "\n".join(f"[{d.doc_id}] {d.text}" for d in documents)
        values = {"documents": context, "question": question, "instructions": self.instructions}
        user = {"role": "user", "content": render(s.user_template, values)}
        if INSTRUCTIONS in s.user_template:
            return [user]
        return [{"role": "system", "content": self.instructions}, user]

    def answer(
        self, question: str, acl: str, clock: Callable[[], float] = time.monotonic
    ) -> Answer:
        if not isinstance(question, str) or not question.strip():
            raise BadRequest("question: expected a non-empty string")
        if len(question) > MAX_QUESTION_CHARS:
            raise BadRequest(
                f"question: {len(question)} characters, at most {MAX_QUESTION_CHARS} are answered"
            )
        check_acl(acl)
        start, cpu = clock(), time.thread_time()
        s = self.settings
        checked = guards.guard_in(question)
        documents = [] if checked.verdict == guards.IN_INJECTION else (
            self.retriever.retrieve(checked.question, acl)
        )  # fmt: skip
        if not documents:
            return self._refusal(acl, checked, clock() - start, time.thread_time() - cpu)
        generation = self.generator.generate(
            self.messages(checked.question, documents), s.max_tokens, s.timeout_seconds
        )
        used = time.thread_time() - cpu + (0.0 if generation.local else generation.seconds)
        return self._answered(acl, checked, documents, generation, clock() - start, used)

    def _refusal(
        self, acl: str, checked: guards.GuardIn, seconds: float, cpu_seconds: float
    ) -> Answer:
        return Answer(
            question=checked.question, acl=acl, answer=self.settings.refusal_answer, raw="",
            retrieved=[], scores=[], citations=[], guard_in=checked.verdict,
            guard_out=guards.OUT_PASSED, refused=True, fell_back=False, prompt_tokens=0,
            completion_tokens=0, seconds=seconds, cpu_seconds=cpu_seconds, pii_in=checked.pii,
        )  # fmt: skip

    def _answered(
        self,
        acl: str,
        checked: guards.GuardIn,
        documents: list[Retrieved],
        generation: Generation,
        seconds: float,
        cpu_seconds: float,
    ) -> Answer:
        s = self.settings
        out = guards.guard_out(generation.text, self.instructions, s.canary)
        fell_back = generation.timed_out or out.withheld or not generation.text
        text = s.fallback_answer if fell_back else out.answer
        return Answer(
            question=checked.question, acl=acl, answer=text, raw=generation.text,
            retrieved=[d.doc_id for d in documents], scores=[d.score for d in documents],
            citations=CITATION.findall(text), guard_in=checked.verdict, guard_out=out.verdict,
            refused=False, fell_back=fell_back, prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens, seconds=seconds,
            cpu_seconds=cpu_seconds, pii_in=checked.pii, pii_out=out.pii, topic=documents[0].topic,
        )  # fmt: skip
