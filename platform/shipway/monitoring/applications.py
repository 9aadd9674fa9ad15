"""An LLM application's live monitoring, from its prediction log (one row per answer) and its
callers' feedback (`<app>_feedback`: a thumbs up or down per answer, by request id).

- Live quality: per version, over the declared window, the share of rated answers rated up
  (`thumbs_up_rate`), judged only on `min_ratings` ratings. A rating joins the answer a caller
  saw (a served row, never the shadow's answer to the same mirrored request); a caller's later
  rating of the same answer replaces the earlier; a rating naming no logged answer is counted
  (`unmatched`), never dropped silently. The report is a `QualityReport`, so the control plane
  exports it as every model's (`shipway_live_quality{metric="thumbs_up_rate"}`).
- Question drift: per version, the topics of the questions callers asked (the topic of the
  best document retrieved) against the evaluation set's, retrieved the same way over the same
  corpus snapshot: PSI and chi², drifted when both pass the declared limits; and the
  out-of-corpus rate (questions no document answered), against a declared ceiling. Questions
  refused as injections are the guard's, not a topic, and are left out of both.

The `<app>_live_quality` and `<app>_live_drift` assets (`shipway.defs.applications`) call
`application_quality` and `question_drift`; the computations on frames are pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from shipway.data.lake import read_table, table_exists
from shipway.errors import ShipwayError
from shipway.models.application import ApplicationMonitoring, DeclaredApplication
from shipway.monitoring.quality import Quality, QualityReport
from shipway.paths import ShipwayHome
from shipway.serving.assistant import BLOCKED, OUT_OF_CORPUS, read_settings
from shipway.serving.bundle import CORPUS_FILE
from shipway.serving.prediction_log import (
    ANSWER_SCHEMA,
    FEEDBACK_SCHEMA,
    feedback_table,
    maintain,
    read_predictions,
)
from shipway.serving.retrieval import Retriever
from shipway.stats.divergence import chi2_test, psi

THUMBS_UP_RATE = "thumbs_up_rate"
UP = "up"
# Each reference topic gets this many questions added: an evaluation set of a few dozen
# questions gives rough shares, and a topic it never asks about is rare, not impossible.
REFERENCE_SMOOTHING = 0.5


@dataclass(frozen=True)
class ApplicationQuality:
    report: QualityReport
    ratings: int
    unmatched: int
    """Ratings whose request id names no answer in the log."""
    breaches: list[str] = field(default_factory=list)


def application_quality(
    name: str,
    answers: pd.DataFrame,
    feedback: pd.DataFrame,
    as_of: datetime,
    policy: ApplicationMonitoring,
) -> ApplicationQuality:
    """`answers`: the prediction log's `request_id`, `version`, `served`, `at`, `day`;
    `feedback`: `request_id`, `rating`, `at`."""
    served = answers[answers["served"]].drop_duplicates("request_id", keep="last")
    rated = feedback.sort_values("at", kind="stable").drop_duplicates("request_id", keep="last")
    unmatched = int((~rated["request_id"].isin(served["request_id"])).sum())
    joined = served.merge(rated[["request_id", "rating"]], on="request_id", how="left")
    start = as_of - timedelta(days=policy.window_days)
    recent = joined[joined["at"] >= pd.Timestamp(start)]

    def judged(rows: pd.DataFrame, version: str, day: str = "") -> Quality:
        ratings = rows["rating"].dropna()
        metrics = (
            {THUMBS_UP_RATE: float((ratings == UP).mean())}
            if len(ratings) >= policy.min_ratings
            else {}
        )
        return Quality(version, len(rows), len(ratings), metrics, day)

    window = [judged(rows, str(v)) for v, rows in sorted(recent.groupby("version"))]
    daily = [
        judged(rows, str(v), str(d)) for (v, d), rows in sorted(joined.groupby(["version", "day"]))
    ]
    breaches = [
        f"v{q.version} live {THUMBS_UP_RATE} {q.metrics[THUMBS_UP_RATE]:.4f}, policy >= "
        f"{policy.min_thumbs_up_rate} ({q.labelled} ratings)"
        for q in window
        if policy.min_thumbs_up_rate is not None
        and THUMBS_UP_RATE in q.metrics
        and q.metrics[THUMBS_UP_RATE] < policy.min_thumbs_up_rate
    ]
    report = QualityReport(name, as_of.isoformat(), start.strftime("%Y-%m-%d"), window, daily)
    return ApplicationQuality(report, len(rated), unmatched, breaches)


@dataclass(frozen=True)
class TopicDrift:
    """One version's questions over the window against its evaluation set."""

    version: str
    questions: int
    shares: dict[str, float]
    reference: dict[str, float]
    psi: float | None = None
    p_value: float | None = None
    out_of_corpus_rate: float = 0.0
    reference_out_of_corpus_rate: float = 0.0
    breaches: list[str] = field(default_factory=list)

    @property
    def judged(self) -> bool:
        return self.psi is not None


def topic_drift(
    version: str,
    topics: pd.Series,
    reference_topics: pd.Series,
    categories: list[str],
    policy: ApplicationMonitoring,
) -> TopicDrift:
    """`topics`: the live questions' topics (blocked ones left out); `reference_topics`: the
    evaluation questions' topics; `categories`: every topic of the corpus and `out_of_corpus`."""
    observed = topics.value_counts().reindex(categories, fill_value=0).to_numpy(float)
    ref_counts = reference_topics.value_counts().reindex(categories, fill_value=0).to_numpy(float)
    expected = (ref_counts + REFERENCE_SMOOTHING) / (ref_counts + REFERENCE_SMOOTHING).sum()
    total = observed.sum()
    shares = {
        c: float(v / total) if total else 0.0 for c, v in zip(categories, observed, strict=True)
    }
    reference = {c: float(v) for c, v in zip(categories, expected, strict=True)}
    oocr = shares.get(OUT_OF_CORPUS, 0.0)
    ref_oocr = float((reference_topics == OUT_OF_CORPUS).mean()) if len(reference_topics) else 0.0
    if total < policy.min_questions:
        return TopicDrift(version, int(total), shares, reference, None, None, oocr, ref_oocr)
    value = psi(expected, observed)
    _, p_value = chi2_test(expected, observed)
    breaches = []
    if value > policy.max_topic_psi and p_value < policy.topic_p_value:
        moved = max(categories, key=lambda c: abs(shares[c] - reference[c]))
        breaches.append(
            f"v{version} question topics drifted: PSI {value:.3f} > {policy.max_topic_psi}, "
            f"p {p_value:.2g} < {policy.topic_p_value}; most moved: {moved} "
            f"{shares[moved]:.1%} live vs {reference[moved]:.1%} in evaluation"
        )
    if policy.max_out_of_corpus_rate is not None and oocr > policy.max_out_of_corpus_rate:
        breaches.append(
            f"v{version} out-of-corpus rate {oocr:.1%} > {policy.max_out_of_corpus_rate:.0%} "
            f"({int(observed[categories.index(OUT_OF_CORPUS)])} of {int(total)} questions; "
            f"{ref_oocr:.1%} in evaluation): callers ask what the help centre does not answer"
        )
    return TopicDrift(
        version, int(total), shares, reference, value, p_value, oocr, ref_oocr, breaches
    )


def _answers(home: ShipwayHome, name: str) -> pd.DataFrame:
    return read_predictions(home.lake, name, schema=ANSWER_SCHEMA)


def refresh_application_quality(
    home: ShipwayHome, app: DeclaredApplication, now: datetime
) -> ApplicationQuality:
    """Keep the prediction log in shape (retention, compaction), join it with the feedback as
    of `now`, and save the report where the control plane exports it."""
    name, policy = app.name, app.declaration.monitoring
    maintain(home.lake, name, policy.prediction_log_retention_days)
    feedback = read_predictions(home.lake, name, table=feedback_table(name), schema=FEEDBACK_SCHEMA)
    found = application_quality(name, _answers(home, name), feedback, now, policy)
    found.report.save(home.served.quality_reports / f"{name}.json")
    return found


def _reference_topics(bundle: Path, questions: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """The evaluation questions' topics, retrieved as the version retrieves, over its corpus."""
    settings = read_settings(bundle)
    corpus = pd.read_parquet(bundle / CORPUS_FILE)
    retriever = Retriever(corpus, settings.k, settings.min_score)
    topics = []
    for question, acl in zip(questions["question"], questions["acl"], strict=True):
        found = retriever.retrieve(str(question), str(acl))
        topics.append(found[0].topic if found else OUT_OF_CORPUS)
    categories = [*sorted(set(corpus["topic"].astype(str))), OUT_OF_CORPUS]
    return pd.Series(topics, dtype=object), categories


def question_drift(home: ShipwayHome, app: DeclaredApplication, now: datetime) -> list[TopicDrift]:
    """Each version's served questions over the window against its evaluation set; a version
    whose bundle is no longer in the serving home is left out (its corpus is gone with it)."""
    d = app.declaration
    table = home.table(d.evaluation.questions)
    if not table_exists(table):
        raise ShipwayError(
            f"evaluation table {d.evaluation.questions} does not exist: land the help centre"
        )
    questions = read_table(table, columns=["question", "acl"])
    answers = _answers(home, app.name)
    start = pd.Timestamp(now - timedelta(days=d.monitoring.window_days))
    live = answers[answers["served"] & (answers["at"] >= start) & (answers["topic"] != BLOCKED)]
    found = []
    for version, rows in sorted(live.groupby("version")):
        bundle = home.served.bundle(app.name, str(version))
        if not (bundle / CORPUS_FILE).is_file():
            continue
        reference, categories = _reference_topics(bundle, questions)
        found.append(topic_drift(str(version), rows["topic"], reference, categories, d.monitoring))
    return found


def drift_markdown(drifts: list[TopicDrift]) -> str:
    if not drifts:
        return "No served questions in the window."
    categories = list(drifts[0].shares)
    header = "| version | questions | PSI | p-value | " + " | ".join(categories) + " |"
    lines = [header, "|" + " --- |" * (4 + len(categories))]
    for t in drifts:
        cells = [f"{t.shares[c]:.1%} ({t.reference[c]:.1%})" for c in categories]
        judged = (f"{t.psi:.3f}", f"{t.p_value:.2g}") if t.judged else ("-", "-")
        lines.append(
            f"| v{t.version} | {t.questions} | {judged[0]} | {judged[1]} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append("")
    lines.append("Each topic: its live share (its share in the evaluation set).")
    return "\n".join(lines)
