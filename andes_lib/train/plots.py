"""Plotly charts of training runs, from the logged history (no external tracker)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692")


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard-style smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def plot_history(histories: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "Training",
                 smoothing: float = 0.9) -> go.Figure:
    """Loss (raw and smoothed) and learning rate per module group; stages are laid end to end."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.06,
                        subplot_titles=("loss (per token, or per patch label)", "learning rate"))
    offset = 0
    dashes = {"vision_tower": "dot", "patch_label_head": "dot", "projector": "dash", "language_model": "solid"}
    for i, (stage, history) in enumerate(histories.items()):
        if not history:
            continue
        colour = PALETTE[i % len(PALETTE)]
        x = [offset + h["step"] for h in history]
        loss = [h["loss"] for h in history]
        fig.add_trace(go.Scatter(x=x, y=loss, name=f"{stage} loss", line={"color": colour, "width": 1},
                                 opacity=0.35, legendgroup=stage, showlegend=False), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=smooth(loss, smoothing), name=stage, line={"color": colour, "width": 2.5},
                                 legendgroup=stage), row=1, col=1)
        for key in sorted(k for k in history[0] if k.startswith("lr/")):
            group = key[3:]
            fig.add_trace(go.Scatter(x=x, y=[h.get(key) for h in history], name=f"{stage} {group}",
                                     line={"color": colour, "dash": dashes.get(group, "solid")},
                                     legendgroup=stage, showlegend=False,
                                     hovertemplate=f"{stage} {group}: %{{y:.2e}}<extra></extra>"), row=2, col=1)
        offset = x[-1]
        if i < len(histories) - 1:
            fig.add_vline(x=offset, line={"color": "#bbb", "dash": "dot"})
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", exponentformat="e", row=2, col=1)
    fig.update_xaxes(title_text="optimizer step (stages end to end)", row=2, col=1)
    return fig.update_layout(title=title, template="plotly_white", height=560,
                             legend={"orientation": "h", "y": -0.18})


def plot_trainable(rows: Sequence[Mapping[str, Any]], title: str = "What trains in each stage") -> go.Figure:
    """Stacked bars of trainable vs frozen parameters per stage; rows: {stage, module, parameters, trains}."""
    fig = go.Figure()
    colours = {"vision_tower": "#636EFA", "projector": "#00CC96", "language_model": "#EF553B"}
    for module in colours:
        for trains in (True, False):
            sel = [r for r in rows if r["module"] == module and bool(r["trains"]) == trains]
            if not sel:
                continue
            fig.add_trace(go.Bar(
                x=[r["stage"] for r in sel], y=[r["parameters"] / 1e6 for r in sel],
                name=f"{module} ({'trains' if trains else 'frozen'})", marker_color=colours[module],
                marker_pattern_shape="" if trains else "/", opacity=1.0 if trains else 0.35))
    return fig.update_layout(barmode="stack", title=title, yaxis_title="parameters (M)", template="plotly_white")
