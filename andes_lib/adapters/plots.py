"""Plotly charts of chapters 07-08: adapter loss curves, per-task scores, memory (ANDESVL.md §4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go


def loss_figure(losses: Mapping[str, Sequence[float]], title: str = "adapter training loss") -> go.Figure:
    """One line per adapter: loss against step (a 5-step running mean)."""
    fig = go.Figure()
    for name, values in losses.items():
        smooth = [sum(values[max(0, i - 4):i + 1]) / len(values[max(0, i - 4):i + 1]) for i in range(len(values))]
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=smooth, mode="lines", name=name))
    return fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss (5-step mean)", yaxis_type="log",
                             template="plotly_white", height=380)


def task_bars(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str,
              reference: str | None = None, tolerance: float = 3.0) -> go.Figure:
    """Grouped bars of `columns` (scores in points) per task row; with `reference`, a dashed marker per task at
    the reference minus `tolerance` points (the paper's ~3% deployment line)."""
    tasks = [r["task"] for r in rows]
    fig = go.Figure([go.Bar(name=c, x=tasks, y=[r[c] for r in rows]) for c in columns])
    if reference is not None:
        fig.add_trace(go.Scatter(x=tasks, y=[r[reference] - tolerance for r in rows], mode="markers",
                                 marker={"symbol": "line-ew-open", "size": 40, "line": {"width": 3}},
                                 name=f"{reference} - {tolerance:g} points"))
    return fig.update_layout(barmode="group", title=title, yaxis_title="task score (%)", template="plotly_white",
                             height=420)


def memory_figure(rows: Sequence[Mapping[str, Any]], title: str = "1 base + N adapters vs N full models"
                  ) -> go.Figure:
    """Bars of measured memory and disk bytes (MiB) per setup."""
    setups = [r["setup"] for r in rows]
    fig = go.Figure([go.Bar(name="in memory", x=setups, y=[r["memory_bytes"] / 2**20 for r in rows]),
                     go.Bar(name="on disk", x=setups, y=[(r["disk_bytes"] or 0) / 2**20 for r in rows])])
    return fig.update_layout(barmode="group", title=title, yaxis_title="MiB", template="plotly_white", height=380)
