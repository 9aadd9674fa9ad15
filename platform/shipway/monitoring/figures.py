"""Figures for Dagster metadata: matplotlib without a display, and a figure as a markdown image
(Dagster renders a `MetadataValue.md` with an inline PNG)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["markdown_image", "plt"]


def markdown_image(fig: Figure, alt: str) -> str:
    """`fig` as an inline PNG in markdown; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"
