"""Retrieval for an LLM application: BM25 (`bm25s`) over a corpus snapshot, honouring the
caller's access.

Every document carries an ACL (`public`, or `staff`); a caller sees the documents its own ACL
admits (its record's, `shipway.callers`: each level sees its own documents and those of every
narrower level), and no other document is ever ranked for it, so a restricted text cannot reach
the generator's context for a customer, whatever the question says. A question whose best match
scores under `min_score` is out of the corpus: the application refuses it rather than let the
generator answer from nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import pandas as pd

from shipway.callers import ACLS
from shipway.errors import BadRequest

# Which documents each caller ACL may see: its own level's and every narrower one's.
VISIBLE: dict[str, frozenset[str]] = {acl: frozenset(ACLS[: i + 1]) for i, acl in enumerate(ACLS)}
_SUFFIXES = ("ing", "ies", "es", "ed", "s")
_WORD = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")


def stem(word: str) -> str:
    """A light English suffix stripper: `disputes` and `dispute` meet, nothing more clever."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Retrieved:
    doc_id: str
    score: float
    text: str
    topic: str = ""


def check_acl(acl: str) -> str:
    if acl not in VISIBLE:
        raise BadRequest(f"acl: {acl!r} is not a caller ACL; expected one of {sorted(VISIBLE)}")
    return acl


class Retriever:
    """BM25 over `documents` (columns doc_id, acl, text, and title; a `topic`, where there is
    one, is each retrieved document's)."""

    def __init__(self, documents: pd.DataFrame, k: int, min_score: float) -> None:
        unknown = sorted(set(documents["acl"]) - set().union(*VISIBLE.values()))
        if unknown:
            raise BadRequest(f"corpus column acl: unknown values {unknown}; expected public/staff")
        self.documents = documents.reset_index(drop=True)
        self.k = k
        self.min_score = min_score
        texts = (self.documents["title"] + ". " + self.documents["text"]).tolist()
        self._index = bm25s.BM25()
        self._index.index(self._tokens(texts), show_progress=False)

    def _tokens(self, texts: Sequence[str]) -> bm25s.tokenization.Tokenized:
        return bm25s.tokenize(
            list(texts), stopwords="en", stemmer=lambda ws: [stem(w) for w in ws],
            show_progress=False,
        )  # fmt: skip

    def retrieve(self, question: str, acl: str) -> list[Retrieved]:
        """The best `k` documents `acl` may see scoring at least `min_score`, best first."""
        visible = VISIBLE[check_acl(acl)]
        n = len(self.documents)
        ids, scores = self._index.retrieve(
            self._tokens([question]), k=n, show_progress=False, n_threads=1
        )
        out: list[Retrieved] = []
        for i, score in zip(ids[0], scores[0], strict=True):
            row = self.documents.iloc[int(i)]
            if row["acl"] in visible and float(score) >= self.min_score:
                topic = str(row["topic"]) if "topic" in row.index else ""
                out.append(Retrieved(str(row["doc_id"]), float(score), str(row["text"]), topic))
            if len(out) == self.k:
                break
        return out


def ranks_of(relevant: Sequence[str], retrieved: Sequence[str]) -> np.ndarray:
    """1-based rank of each relevant document among the retrieved ones, 0 where missed."""
    position = {doc: i + 1 for i, doc in enumerate(retrieved)}
    return np.array([position.get(doc, 0) for doc in relevant], dtype=np.int64)
