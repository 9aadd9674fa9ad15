"""Global importance in the release report: each feature's mean |TreeSHAP contribution| on the
evaluation rows, challenger beside champion, as a table and a figure.

Each model explains the rows with its own features (`shipway.serving.explanations`), so a
feature one model lacks shows for the other only. Shares (a feature's part of its model's
total) compare the two even where their margins differ in scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shipway.monitoring.figures import plt
from shipway.release.evaluation import Candidate
from shipway.release.report import ImportanceRow
from shipway.serving.explanations import contributions, sample
from shipway.stats.attribution import mean_abs, shares


def _attribution(model: Candidate, matrix: np.ndarray, seed: int) -> dict[str, tuple[float, float]]:
    """Feature → (mean |contribution|, share) on (a sample of) the rows."""
    found = mean_abs(
        contributions(model.load().get_booster(), sample(matrix, np.random.default_rng(seed)))[
            :, :-1
        ]
    )
    return {
        name: (float(value), float(part))
        for name, value, part in zip(model.features, found, shares(found), strict=True)
    }


def global_importance(
    challenger: Candidate,
    challenger_matrix: np.ndarray,
    champion: Candidate | None,
    champion_matrix: np.ndarray | None,
    seed: int,
) -> list[ImportanceRow]:
    """Every feature of either model, the challenger's most important first."""
    if len(challenger_matrix) == 0:
        return []
    mine = _attribution(challenger, challenger_matrix, seed)
    theirs = (
        _attribution(champion, champion_matrix, seed)
        if champion is not None and champion_matrix is not None
        else {}
    )
    names = sorted(
        set(mine) | set(theirs),
        key=lambda n: (-mine.get(n, (-1.0, 0.0))[0], -theirs.get(n, (0.0, 0.0))[0], n),
    )
    return [
        ImportanceRow(
            feature=name,
            challenger=mine[name][0] if name in mine else None,
            champion=theirs[name][0] if name in theirs else None,
            challenger_share=mine[name][1] if name in mine else None,
            champion_share=theirs[name][1] if name in theirs else None,
        )
        for name in names
    ]


def importance_figure(
    rows: list[ImportanceRow], title: str, champion: str | None, path: Path
) -> Path:
    """Horizontal bars of each feature's share of attribution, challenger beside champion."""
    shown = list(reversed(rows))
    at = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.5))
    height = 0.4 if champion else 0.8
    ax.barh(
        at + (height / 2 if champion else 0),
        [r.challenger_share or 0 for r in shown],
        height,
        label="challenger",
    )
    if champion:
        ax.barh(
            at - height / 2,
            [r.champion_share or 0 for r in shown],
            height,
            label=f"champion v{champion}",
        )
    ax.set_yticks(at, [r.feature for r in shown])
    ax.set(xlabel="share of mean |SHAP contribution|", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
