"""Guards around an LLM application's generator: what goes in, what comes out.

- In: a question that reads as a prompt injection (patterns of "ignore your instructions",
  "print the text above", ...) is refused before retrieval; personal data in the question
  (card numbers, e-mail addresses, phone numbers, IBANs) is replaced by its type
  (`<CREDIT_CARD>`) before the generator, the prediction log or anyone else sees it.
- Out: an answer carrying the system prompt's canary token, or eight words of it in a row, is
  withheld (the fallback answer
  goes out instead); personal data in an answer is redacted; an answer asking the customer for
  a PIN, a password or a full card number is withheld as unsafe.

Personal data is found with presidio's pattern recognizers on a blank spaCy pipeline: nothing is
downloaded, and no named-entity model runs. So it finds what has a shape (cards with a valid
Luhn digit, e-mail, phone numbers, IBAN, IP addresses) and misses names and street addresses
(tests/test_guards.py shows both). The patterns are a backstop; the evaluation's red-team gate
judges the generation before the out-guard, so a prompt that leaks is blocked even when this
guard would have caught the leak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine, RecognizerResult
from presidio_analyzer.nlp_engine import SpacyNlpEngine

PII_ENTITIES = ("CREDIT_CARD", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "IP_ADDRESS")
# Presidio's pattern scores: a card with a valid check digit scores 1.0, a phone number 0.4.
PII_MIN_SCORE = 0.4
INJECTION_PATTERNS: tuple[str, ...] = (
    r"\bignore (all |any )?(the )?(previous|prior|above|earlier) (instructions|rules|messages)",
    r"\b(print|show|reveal|repeat|output|state) (me )?(your|the) (system )?(prompt|instructions)",
    r"\bsystem prompt\b",
    r"\brepeat (the|all) (text|words|messages) above\b",
    r"\byou are now\b",
    r"\bdeveloper mode\b",
)
UNSAFE_PATTERNS: tuple[str, ...] = (
    r"\b(send|share|tell|give) (us |me )?(your )?(full )?(pin|password|card number|cvv)\b",
    r"\b(what is|enter) your (pin|password|cvv)\b",
)
# Consecutive words of the instructions an answer may not repeat.
LEAK_WORDS = 8
_INJECTION = re.compile("|".join(INJECTION_PATTERNS), re.IGNORECASE)
_UNSAFE = re.compile("|".join(UNSAFE_PATTERNS), re.IGNORECASE)

IN_PASSED = "passed"
IN_INJECTION = "injection"
IN_PII_REDACTED = "pii_redacted"
OUT_PASSED = "passed"
OUT_LEAK = "instructions_leak"
OUT_UNSAFE = "unsafe"
OUT_PII_REDACTED = "pii_redacted"


class _BlankSpacy(SpacyNlpEngine):
    """spaCy's blank English pipeline: tokens only, no model to download."""

    def load(self) -> None:
        self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]


@cache
def analyzer() -> AnalyzerEngine:
    # Presidio's e-mail recognizer checks domains with tldextract, whose default extractor
    # downloads the Public Suffix List on first use: use the snapshot its wheel ships instead.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    engine = _BlankSpacy(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


def find_pii(text: str) -> list[RecognizerResult]:
    found = analyzer().analyze(
        text=text, language="en", entities=list(PII_ENTITIES), score_threshold=PII_MIN_SCORE
    )
    return sorted(found, key=lambda r: r.start)


def redact(text: str) -> tuple[str, list[str]]:
    """`text` with each personal datum replaced by `<TYPE>`, and the types found."""
    found = find_pii(text)
    out, end, kinds = [], 0, []
    for result in found:
        if result.start < end:
            continue
        out += [text[end : result.start], f"<{result.entity_type}>"]
        kinds.append(result.entity_type)
        end = result.end
    return "".join([*out, text[end:]]), kinds


def looks_like_injection(text: str) -> bool:
    return _INJECTION.search(text) is not None


def unsafe(text: str) -> bool:
    return _UNSAFE.search(text) is not None


@dataclass(frozen=True)
class GuardIn:
    verdict: str
    question: str
    pii: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GuardOut:
    verdict: str
    answer: str
    pii: list[str] = field(default_factory=list)

    @property
    def withheld(self) -> bool:
        return self.verdict in (OUT_LEAK, OUT_UNSAFE)


def guard_in(question: str) -> GuardIn:
    if looks_like_injection(question):
        return GuardIn(IN_INJECTION, question)
    redacted, kinds = redact(question)
    return GuardIn(IN_PII_REDACTED if kinds else IN_PASSED, redacted, kinds)


def leaks_instructions(answer: str, instructions: str, canary: str) -> bool:
    """The answer carries the canary token, or any `LEAK_WORDS` consecutive words of the
    instructions (a leak that dropped the token on the way)."""
    if canary and canary in answer:
        return True
    said = _shingles(answer)
    return any(s in said for s in _shingles(instructions))


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i : i + LEAK_WORDS]) for i in range(len(words) - LEAK_WORDS + 1)}


def guard_out(answer: str, instructions: str, canary: str) -> GuardOut:
    if leaks_instructions(answer, instructions, canary):
        return GuardOut(OUT_LEAK, answer)
    if unsafe(answer):
        return GuardOut(OUT_UNSAFE, answer)
    redacted, kinds = redact(answer)
    return GuardOut(OUT_PII_REDACTED if kinds else OUT_PASSED, redacted, kinds)
