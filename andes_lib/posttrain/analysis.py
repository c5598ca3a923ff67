"""Tables and plotly charts for the post-training chapters: ablations over seeds, training curves, deltas.

Kept out of the notebooks so that they only orchestrate and explain (DESIGN.md), and so the numbers in the
closing notes come from the same code as the charts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def scores_by_domain(results: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """Long table (model, seed index, domain, score) from {model name: [EvalResult, ...]} (one per seed)."""
    rows = []
    for name, runs in results.items():
        for i, run in enumerate(runs):
            for domain, value in run.scores().items():
                rows.append({"model": name, "run": i, "domain": domain, "score": float(value)})
    return pd.DataFrame(rows)


def ablation_table(results: Mapping[str, Sequence[Any]], percent: bool = True) -> pd.DataFrame:
    """One row per domain (+ "mean"), per model its mean score over runs and, with several runs, the std."""
    long = scores_by_domain(results)
    scale = 100.0 if percent else 1.0
    out = pd.DataFrame({"domain": list(dict.fromkeys(long["domain"]))})
    for name in results:
        sub = long[long["model"] == name]
        grouped = sub.groupby("domain")["score"]
        out[name] = out["domain"].map(grouped.mean() * scale)
        if sub["run"].nunique() > 1:
            out[f"{name} std"] = out["domain"].map(grouped.std(ddof=1) * scale)
    means = {c: out[c].mean() for c in out.columns if c != "domain" and not c.endswith(" std")}
    per_run = long.groupby(["model", "run"])["score"].mean().groupby("model")
    std = {f"{m} std": s * scale for m, s in per_run.std(ddof=1).items() if f"{m} std" in out.columns}
    return pd.concat([out, pd.DataFrame([{"domain": "mean", **means, **std}])], ignore_index=True)


def delta_over_runs(results: Mapping[str, Sequence[Any]], baseline: str, model: str, domain: str) -> dict[str, float]:
    """Score of `model` minus `baseline` on `domain`, per run of `model` (the baseline's mean): mean, std, min."""
    base = np.mean([r.scores()[domain] for r in results[baseline]])
    deltas = np.array([r.scores()[domain] - base for r in results[model]]) * 100
    return {"mean": float(deltas.mean()), "std": float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0,
            "min": float(deltas.min()), "max": float(deltas.max()), "runs": len(deltas)}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of b - a over paired items (percentage points) with a 95% bootstrap interval over the items."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or not len(a):
        raise ValueError("need two equal-length, non-empty score lists (the same items, in the same order)")
    diff = (b - a) * 100
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    return {"delta": float(diff.mean()), "lo": float(np.percentile(boots, 2.5)),
            "hi": float(np.percentile(boots, 97.5)), "n": len(diff)}


def item_scores(result: Any, domains: Sequence[str] | None = None) -> pd.Series:
    """Per-item scores of an EvalResult, indexed by sample id (for paired comparisons)."""
    frame = result.frame()
    if domains is not None:
        frame = frame[frame["domain"].isin(domains)]
    return frame.set_index("id")["score"]


def ablation_figure(table: pd.DataFrame, models: Sequence[str], title: str = "",
                    highlight: str | None = None) -> go.Figure:
    """Grouped bars per domain (error bars = std over runs where present); `highlight` domain outlined."""
    fig = go.Figure()
    for name in models:
        err = table.get(f"{name} std")
        fig.add_trace(go.Bar(x=table["domain"], y=table[name], name=name,
                             error_y=None if err is None else {"type": "data", "array": err.fillna(0)}))
    if highlight is not None and highlight in set(table["domain"]):
        idx = list(table["domain"]).index(highlight)
        fig.add_vrect(x0=idx - 0.5, x1=idx + 0.5, line_width=2, line_color="crimson", fillcolor="crimson",
                      opacity=0.08)
    return fig.update_layout(barmode="group", title=title, yaxis_title="score (%)", template="plotly_white")


def curves_figure(frames: Mapping[str, pd.DataFrame], keys: Sequence[str], titles: Sequence[str] | None = None,
                  title: str = "", x: str = "step", boundaries: Sequence[float] = ()) -> go.Figure:
    """One subplot per key, one line per named frame (e.g. per seed or per stage); vertical lines at
    `boundaries` (stage changes)."""
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=list(titles or keys))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for j, (name, frame) in enumerate(frames.items()):
        for i, key in enumerate(keys):
            if key not in frame:
                continue
            fig.add_trace(go.Scatter(x=frame[x], y=frame[key], mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=i == 0, marker={"size": 4},
                                     line={"color": palette[j % len(palette)]}), row=1, col=i + 1)
    for b in boundaries:
        for i in range(len(keys)):
            fig.add_vline(x=b, line_dash="dot", line_color="grey", row=1, col=i + 1)
    fig.update_xaxes(title_text=x)
    return fig.update_layout(title=title, template="plotly_white", height=360)


def stack_stages(frames: Sequence[pd.DataFrame], labels: Sequence[str]) -> tuple[pd.DataFrame, list[int]]:
    """Concatenate per-stage logs with a global step; returns the frame and the steps where a stage ends."""
    out, offset, ends = [], 0, []
    for frame, label in zip(frames, labels, strict=True):
        f = frame.copy()
        f["stage"] = label
        f["step"] = f["step"] + offset
        offset = int(f["step"].max()) if len(f) else offset
        ends.append(offset)
        out.append(f)
    return pd.concat(out, ignore_index=True), ends[:-1]
