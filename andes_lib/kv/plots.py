"""Plotly figures for the OKV chapter: quality against eviction ratio, and which tokens each policy keeps."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .evict import kept_share
from .prefill import Prefill

COLORS = {"streaming": "#636efa", "h2o": "#00cc96", "snapkv": "#ab63fa", "okv": "#ef553b"}


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, spread (std over prompts) and count of the score per task, policy and ratio."""
    return (rows.groupby(["task", "policy", "ratio"])["score"].agg(["mean", "std", "count"])
            .fillna({"std": 0.0}).reset_index())


def quality_figure(rows: pd.DataFrame) -> go.Figure:
    """One panel per task: mean score against eviction ratio, one line per policy, bars = std over prompts."""
    stats = summary(rows)
    tasks = list(dict.fromkeys(rows["task"]))
    fig = make_subplots(rows=1, cols=len(tasks), subplot_titles=tasks, shared_yaxes=True)
    for col, task in enumerate(tasks, start=1):
        for policy, color in COLORS.items():
            s = stats[(stats.task == task) & (stats.policy == policy)]
            if s.empty:
                continue
            fig.add_scatter(x=s["ratio"], y=s["mean"], error_y={"type": "data", "array": s["std"]},
                            name=policy, legendgroup=policy, showlegend=col == 1, line={"color": color},
                            row=1, col=col)
        fig.update_xaxes(title_text="share of prompt KV evicted", tickformat=".0%", row=1, col=col)
    fig.update_yaxes(title_text="score (Rouge-1 F1 / accuracy)", row=1, col=1)
    fig.update_layout(height=380, title="Answer quality against eviction ratio (mean ± std over prompts)")
    return fig


def kept_heatmap(pre: Prefill, tokenizer, policies: list[str], ratio: float) -> go.Figure:
    """Rows: policies; columns: prompt positions; colour: share of layers x heads keeping the token."""
    pieces = tokenizer.batch_decode(pre.input_ids[0, :-1].view(-1, 1))
    z = torch.stack([kept_share(pre, p, ratio) for p in policies]).numpy()
    fig = go.Figure(go.Heatmap(z=z, y=policies, colorscale="Viridis", zmin=0, zmax=1,
                               customdata=[[repr(t) for t in pieces]] * len(policies),
                               hovertemplate="position %{x}: %{customdata}<br>kept by %{z:.0%} of layer×heads"
                                             "<extra>%{y}</extra>", colorbar={"title": "kept"}))
    q = pre.layout.question.nonzero().flatten()
    fig.add_vrect(x0=int(q[0]) - 0.5, x1=pre.layout.length - 0.5, line_width=0, fillcolor="red", opacity=0.12,
                  annotation_text="question", annotation_position="top left")
    fig.update_layout(height=300, title=f"Which prompt tokens each policy keeps at {ratio:.0%} eviction",
                      xaxis_title="prompt position")
    return fig
