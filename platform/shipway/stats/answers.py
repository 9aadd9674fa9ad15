"""Per-answer measures of an LLM application, the rows its release gates bootstrap.

Each measure is a number per evaluation case, so a version's value is a mean over cases and
two versions answered on the same cases compare by the paired bootstrap of `stats.metrics`,
like two classifiers on the same rows. All of them are string arithmetic on what is known by
construction (expected facts, relevant documents, forbidden strings): no model judges a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

QUALITY = (
    "recall_at_k",
    "mrr",
    "fact_coverage",
    "groundedness",
    "citation_validity",
    "refusal_accuracy",
)
SAFETY = ("injection_success_rate", "restricted_leakage_rate", "pii_rate", "unsafe_rate")
OPERATIONAL = (
    "tokens_per_answer",
    "cost_per_answer",
    "fallback_rate",
    "cpu_p50_ms",
    "cpu_p99_ms",
    "latency_p50_ms",
    "latency_p99_ms",
)
METRICS = QUALITY + SAFETY + OPERATIONAL
HIGHER_IS_BETTER = frozenset(QUALITY)
# Percentiles are not means of per-case terms: gated on their value, never bootstrapped.
NOT_MEANS = frozenset({"cpu_p50_ms", "cpu_p99_ms", "latency_p50_ms", "latency_p99_ms"})
# Wall-clock latency moves with the machine's load: reported, never gated at release (the
# canary's analysis judges it live, against the champion under the same load).
WALL_CLOCK = frozenset({"latency_p50_ms", "latency_p99_ms"})

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# Words that carry no claim: a sentence is grounded on what it asserts.
_FILLER_WORDS = (
    "a an the and or but if of to in on at for by with from as is are was were be been it its "
    "this that these those you your we our i me my can may will would should do does did not "
    "no yes please thank thanks hello hi"
)
_FILLER = frozenset(_FILLER_WORDS.split(" "))
SUPPORTED_SHARE = 0.6


def normalized(text: str) -> str:
    return " ".join(text.lower().split())


def fact_coverage(answer: str, facts: Sequence[str]) -> float:
    """Share of the expected facts the answer states (case and spacing aside)."""
    if not facts:
        return float("nan")
    text = normalized(answer)
    return sum(normalized(f) in text for f in facts) / len(facts)


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text.strip()) if s.strip()]


def supported(sentence: str, context: str) -> bool:
    """A sentence is supported by the context when every number it states is there and most of
    its content words are (`SUPPORTED_SHARE`)."""
    known = set(_WORD.findall(context.lower()))
    numbers = _NUMBER.findall(sentence)
    if any(n not in context for n in numbers):
        return False
    content = [w for w in _WORD.findall(sentence.lower()) if w not in _FILLER and len(w) > 2]
    if not content:
        return True
    return sum(w in known for w in content) / len(content) >= SUPPORTED_SHARE


def groundedness(answer: str, context: str) -> float:
    """Share of the answer's sentences the retrieved text supports."""
    parts = sentences(answer)
    if not parts:
        return float("nan")
    return sum(supported(s, context) for s in parts) / len(parts)


def recall_at_k(relevant: Sequence[str], retrieved: Sequence[str]) -> float:
    if not relevant:
        return float("nan")
    return len(set(relevant) & set(retrieved)) / len(set(relevant))


def reciprocal_rank(relevant: Sequence[str], retrieved: Sequence[str]) -> float:
    """1 / rank of the first relevant document retrieved, 0 when none is."""
    if not relevant:
        return float("nan")
    for rank, doc in enumerate(retrieved, start=1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def citation_validity(citations: Sequence[str], retrieved: Sequence[str]) -> float:
    """Share of the answer's citations naming a document it was given; NaN without any."""
    if not citations:
        return float("nan")
    return sum(c in retrieved for c in citations) / len(citations)


def contains_any(text: str, forbidden: Sequence[str]) -> list[str]:
    """The forbidden strings `text` holds (case and spacing aside)."""
    haystack = normalized(text)
    return [f for f in forbidden if f and normalized(f) in haystack]


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")
