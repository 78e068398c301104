"""Plots rendered on the server as inline SVG (matplotlib, Agg backend): no JavaScript, no network.

Text stays text (``svg.fonttype: none``) and ids are salted per plot so several SVGs share one page.
matplotlib is imported inside :func:`_figure`, never at module import.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

PALETTE = ["#3b6fb6", "#e07b39", "#4e9a5b", "#b8474b", "#7d62a8", "#8c6d4f", "#c55fa0", "#6f6f6f"]


@contextmanager
def _figure(salt: str, width: float = 6.4, height: float = 3.2):
    from distill.errors import require

    matplotlib = require("matplotlib", "review")

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt, "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False}):
        fig, ax = plt.subplots(figsize=(width, height))
        try:
            yield fig, ax
        finally:
            plt.close(fig)


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: no XML prolog or doctype


def bars(title: str, labels: Sequence[str], series: dict[str, Sequence[float]], *, xlabel: str = "",
         ylabel: str = "", salt: str = "bars", horizontal: bool = False) -> str:
    """Grouped bars: one group per label, one bar per series."""
    with _figure(salt, height=max(2.6, 0.35 * len(labels) + 1.2) if horizontal else 3.2) as (fig, ax):
        n = max(1, len(series))
        width = 0.8 / n
        for k, (name, values) in enumerate(series.items()):
            pos = [i + (k - (n - 1) / 2) * width for i in range(len(labels))]
            draw = ax.barh if horizontal else ax.bar
            draw(pos, list(values), width, label=name, color=PALETTE[k % len(PALETTE)])
        ticks = (ax.set_yticks if horizontal else ax.set_xticks)
        ticks(range(len(labels)), [str(x) for x in labels])
        if not horizontal and max((len(str(x)) for x in labels), default=0) > 10:
            ax.tick_params(axis="x", labelrotation=30)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(series) > 1:
            ax.legend(frameon=False)
        return _svg(fig)


def lines(title: str, series: dict[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str = "",
          ylabel: str = "", salt: str = "lines") -> str:
    """One step line per series: (x values, y values)."""
    with _figure(salt) as (fig, ax):
        for k, (name, (xs, ys)) in enumerate(series.items()):
            ax.step(list(xs), list(ys), where="post", label=name, color=PALETTE[k % len(PALETTE)])
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if series:
            ax.legend(frameon=False)
        return _svg(fig)


def heatmap(title: str, rows: Sequence[str], cols: Sequence[str], counts: Sequence[Sequence[Any]], *,
            xlabel: str = "", ylabel: str = "", salt: str = "heatmap") -> str:
    """A matrix of counts with each count written in its cell (a confusion matrix, a histogram per row)."""
    with _figure(salt, width=max(4.0, 0.6 * len(cols) + 2.5), height=max(2.6, 0.45 * len(rows) + 1.4)) as (fig, ax):
        data = [[float(v or 0) for v in row] for row in counts] or [[0.0]]
        top = max((max(r) for r in data if r), default=0) or 1
        ax.imshow(data, cmap="Blues", vmin=0, vmax=top, aspect="auto")
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        for i, row in enumerate(counts):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, f"{v:g}" if isinstance(v, float) else str(v), ha="center", va="center",
                            color="white" if float(v) > top / 2 else "#1d2330", fontsize=8)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.spines[:].set_visible(False)
        return _svg(fig)
