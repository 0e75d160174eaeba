"""The report's figures: matplotlib drawn to inline SVG (text kept as text, no external assets).

Each figure comes back with the numbers it draws, so a page can carry them as data
(``data-plot`` on its ``<figure>``) and a test can hold the drawing to the gradebook: every bar of
a histogram has the SVG id ``<plot>-bar-<i>``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "svg.fonttype": "none",          # text stays text: readable, searchable, selectable
    "svg.hashsalt": "course-report", # stable ids: the same data draws the same file
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.family": "DejaVu Sans",
}
BLUE, GREY, GREEN, ORANGE, RED = "#3b6ea5", "#9aa5b1", "#2e7d4f", "#c77c0e", "#b3261e"


@dataclass
class Plot:
    id: str
    title: str
    svg: str
    data: dict[str, Any] = field(default_factory=dict)


def _svg(fig: Any, plot_id: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]                       # no XML prolog or DOCTYPE inside HTML
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    # one page holds several figures: matplotlib's ids (figure_1, clip paths...) get the plot's prefix
    mine = plot_id + "-"
    text = re.sub(r'id="(?!' + re.escape(mine) + r')([^"]+)"', lambda m: f'id="{mine}{m[1]}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{mine}{m[1]})", text)
    return re.sub(r'href="#([^"]+)"', lambda m: f'href="#{mine}{m[1]}"', text)


def _figure(width: float = 6.4, height: float = 3.2) -> tuple[Any, Any]:
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    return fig, ax


def histogram(plot_id: str, edges: Sequence[float], counts: Sequence[int], *, title: str, xlabel: str,
              ylabel: str = "students", colour: str = BLUE) -> Plot:
    """Bars over precomputed bins (the caller's numbers are the figure's numbers)."""
    with plt.rc_context(STYLE):
        fig, ax = _figure()
        widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
        bars = ax.bar(edges[:-1], counts, width=widths, align="edge", color=colour, edgecolor="white")
        for i, bar in enumerate(bars):
            bar.set_gid(f"{plot_id}-bar-{i}")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.yaxis.get_major_locator().set_params(integer=True)
        if not any(counts):
            ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center", va="center", color=GREY)
        ax.set_ylim(0, max(max(counts, default=0), 1) * 1.1)
        svg = _svg(fig, plot_id)
    return Plot(plot_id, title, svg, {"edges": list(edges), "counts": list(counts)})


def grouped_bars(plot_id: str, labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str,
                 xlabel: str, ylabel: str, ymax: float | None = None) -> Plot:
    colours = [BLUE, GREY, GREEN, ORANGE]
    with plt.rc_context(STYLE):
        fig, ax = _figure(max(6.4, 0.9 * len(labels) + 2.5), 3.4)
        n = max(len(series), 1)
        width = 0.8 / n
        for k, (name, values) in enumerate(series.items()):
            xs = [i + (k - (n - 1) / 2) * width for i in range(len(labels))]
            bars = ax.bar(xs, values, width=width, label=name, color=colours[k % len(colours)])
            for i, bar in enumerate(bars):
                bar.set_gid(f"{plot_id}-{k}-bar-{i}")
        ax.set_xticks(range(len(labels)), list(labels))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if ymax is not None:
            ax.set_ylim(0, ymax)
        if labels:
            ax.legend(frameon=False, ncols=min(n, 3), loc="upper center", bbox_to_anchor=(0.5, -0.22))
        svg = _svg(fig, plot_id)
    return Plot(plot_id, title, svg, {"labels": list(labels), "series": {k: list(v) for k, v in series.items()}})


def horizontal_bars(plot_id: str, labels: Sequence[str], values: Sequence[float], *, title: str, xlabel: str,
                    colours: Sequence[str] | None = None) -> Plot:
    with plt.rc_context(STYLE):
        fig, ax = _figure(6.4, max(1.6, 0.35 * len(labels) + 1.0))
        bars = ax.barh(range(len(labels)), values, color=list(colours) if colours else BLUE)
        for i, bar in enumerate(bars):
            bar.set_gid(f"{plot_id}-bar-{i}")
        ax.set_yticks(range(len(labels)), list(labels))
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        svg = _svg(fig, plot_id)
    return Plot(plot_id, title, svg, {"labels": list(labels), "values": list(values)})
