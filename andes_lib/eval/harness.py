"""The evaluation harness: batched greedy generation, per-domain scores, tables, charts, JSON (ANDESVL.md §3).

`evaluate(model, processor, "test")` generates an answer for every sample (left padding, greedy, as the paper
evaluates Instruct models), extracts the final answer like the official toolkit and scores it with the
sample's metric. `blind=True` replaces every image with a blank canvas of the normalisation mean colour (or
`blind="none"` drops the images), which measures how much of the score comes from the image.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import plotly.graph_objects as go
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.base import user_message
from ..data.dataset import SPLITS, build_dataset, load_data
from ..data.registry import PAPER_GROUP, check_domains
from .metrics import extract_answer, pope_metrics, score

NEEDED = ("id", "domain", "task", "question", "answer", "metric", "images")


@dataclass
class EvalResult:
    """Per-sample records (output, extracted prediction, score) and the settings that produced them."""

    records: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """One row per sample."""
        return pd.DataFrame(self.records)

    def scores(self, by: str = "domain") -> dict[str, float]:
        """Mean score per domain (`by="domain"`), per paper group (`"group"`) or per `"domain/task"` (`"task"`)."""
        frame = self.frame()
        if frame.empty:
            return {}
        keys = {"domain": frame["domain"], "group": frame["domain"].map(PAPER_GROUP),
                "task": frame["domain"] + "/" + frame["task"]}
        if by not in keys:
            raise ValueError(f"by must be one of {list(keys)}, got {by!r}")
        return frame.groupby(keys[by], sort=False)["score"].mean().to_dict()

    @property
    def overall(self) -> float:
        """Unweighted mean of the per-domain scores."""
        values = list(self.scores().values())
        return sum(values) / len(values) if values else float("nan")

    def pope(self) -> dict[str, float] | None:
        """POPE accuracy/precision/recall/F1/yes-ratio over the hallucination samples, if any."""
        rows = [r for r in self.records if r["metric"] == "yesno" and r["domain"] == "hallucination"]
        return pope_metrics([r["prediction"] for r in rows], [r["answer"] for r in rows]) if rows else None

    def table(self, by: str = "domain") -> pd.DataFrame:
        """Score, sample count and metric(s) per domain (or group, or task)."""
        frame = self.frame()
        key = {"domain": frame["domain"], "group": frame["domain"].map(PAPER_GROUP),
               "task": frame["domain"] + "/" + frame["task"]}[by]
        grouped = frame.groupby(key, sort=False)
        return pd.DataFrame({"n": grouped.size(), "score": grouped["score"].mean(),
                             "metric": grouped["metric"].agg(lambda m: "+".join(sorted(set(m))))}
                            ).rename_axis(by).reset_index()

    def figure(self, kind: str = "radar", title: str | None = None) -> go.Figure:
        """Radar (or bar) chart of the per-domain scores."""
        name = "blind" if self.config.get("blind") else "model"
        return plot_scores({name: self.scores()}, kind=kind, title=title)

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready: settings, per-domain and overall scores, POPE details and the records."""
        return {"config": self.config, "scores": self.scores(), "groups": self.scores("group"),
                "overall": self.overall, "pope": self.pope(), "records": self.records}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write `to_json()` to `path` (parents created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvalResult:
        """Read a result written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no evaluation result at {path}")
        data = json.loads(path.read_text(encoding="utf-8"))
        if "records" not in data:
            raise ValueError(f"{path}: not an evaluation result (no 'records')")
        return cls(data["records"], data.get("config", {}))


def plot_scores(series: Mapping[str, Mapping[str, float]], kind: str = "radar",
                title: str | None = None) -> go.Figure:
    """One trace per named series of {domain: score in [0, 1]}: a closed radar, or grouped bars."""
    fig = go.Figure()
    for name, values in series.items():
        axes, points = list(values), [100 * v for v in values.values()]
        if kind == "radar":
            fig.add_trace(go.Scatterpolar(r=points + points[:1], theta=axes + axes[:1], name=name, fill="toself"))
        elif kind == "bar":
            fig.add_trace(go.Bar(x=axes, y=points, name=name))
        else:
            raise ValueError(f"kind must be 'radar' or 'bar', got {kind!r}")
    if kind == "radar":
        fig.update_layout(polar={"radialaxis": {"range": [0, 100], "ticksuffix": "%"}})
    else:
        fig.update_layout(barmode="group", yaxis={"range": [0, 100], "title": "score (%)"})
    return fig.update_layout(title=title, template="plotly_white")


def select(data: str | os.PathLike[str] | datasets.Dataset, domains: Sequence[str] | str | None = None,
           n: int | None = None, seed: int = 0) -> datasets.Dataset:
    """The evaluation set: a split name (generated/cached), a path (`load_data`) or a Dataset; first `n` per domain."""
    if isinstance(data, str) and data in SPLITS:
        return build_dataset(data, domains, n, seed)
    dataset = data if isinstance(data, datasets.Dataset) else load_data(data)
    missing = [c for c in NEEDED if c not in dataset.column_names]
    if missing:
        raise ValueError(f"evaluation data lacks column(s) {missing} (needs {list(NEEDED)})")
    wanted = set(check_domains(domains)) if domains is not None else None
    counts: dict[str, int] = {}
    keep = []
    for i, domain in enumerate(dataset["domain"]):
        if (wanted is None or domain in wanted) and (n is None or counts.get(domain, 0) < n):
            counts[domain] = counts.get(domain, 0) + 1
            keep.append(i)
    if not keep:
        raise ValueError(f"no samples for domains {sorted(wanted or [])} in the evaluation data")
    return dataset.select(keep)


def blank_like(image: Image.Image, processor: Any) -> Image.Image:
    """A canvas of the image's size in the processor's normalisation mean colour (mid-grey if unknown)."""
    mean = getattr(getattr(processor, "image_processor", None), "image_mean", None) or (0.5, 0.5, 0.5)
    return Image.new("RGB", image.size, tuple(round(255 * m) for m in mean))


def clean_output(text: str, tokenizer: Any) -> str:
    """Cut a decoded generation at the end-of-turn token and drop padding."""
    for stop in {tokenizer.eos_token, "<|im_end|>", "<|endoftext|>"} - {None}:
        text = text.split(stop)[0]
    return text.strip()


def batches(dataset: datasets.Dataset, size: int) -> Iterable[list[dict[str, Any]]]:
    """Consecutive rows in lists of `size`."""
    for start in range(0, len(dataset), size):
        chunk = dataset[start:start + size]
        yield [dict(zip(chunk, values, strict=True)) for values in zip(*chunk.values(), strict=True)]


@torch.no_grad()
def evaluate(model: Any, processor: Any, data: str | os.PathLike[str] | datasets.Dataset = "test",
             domains: Sequence[str] | str | None = None, n: int | None = None, batch_size: int = 8,
             blind: bool | str = False, max_new_tokens: int = 32, thinking: bool = False, seed: int = 0,
             progress: bool = True) -> EvalResult:
    """Greedy-generate an answer per sample and score it; `n` = samples per domain (default: the split's size).

    blind: False (real images), True or "blank" (mean-colour canvases of the same sizes), "none" (no images).
    """
    if blind not in (False, True, "blank", "none"):
        raise ValueError(f"blind must be False, True, 'blank' or 'none', got {blind!r}")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be positive")
    mode = "blank" if blind is True else blind
    dataset = select(data, domains, n, seed)
    tokenizer = processor.tokenizer
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    device = next(model.parameters()).device
    model.eval()
    records: list[dict[str, Any]] = []
    try:
        for rows in tqdm(list(batches(dataset, batch_size)), desc="evaluate", disable=not progress):
            images = [[] if mode == "none" else [blank_like(i, processor) if mode else i for i in r["images"]]
                      for r in rows]
            prompts = [processor.apply_chat_template([user_message(r["question"], len(imgs))],
                                                     add_generation_prompt=True, enable_thinking=thinking)
                       for r, imgs in zip(rows, images, strict=True)]
            inputs = processor(images=images if any(images) else None, text=prompts, return_tensors="pt",
                               padding=True).to(device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=False)
            for r, text in zip(rows, texts, strict=True):
                output = clean_output(text, tokenizer)
                records.append({"id": r["id"], "domain": r["domain"], "task": r["task"], "lang": r.get("lang"),
                                "question": r["question"], "answer": r["answer"], "output": output,
                                "prediction": extract_answer(output), "metric": r["metric"],
                                "score": score(output, r["answer"], r["metric"])})
    finally:
        tokenizer.padding_side = padding_side
    source = f"Dataset({len(dataset)} rows)" if isinstance(data, datasets.Dataset) else str(data)
    config = {"data": source, "domains": sorted({r["domain"] for r in records}), "n": n, "batch_size": batch_size,
              "blind": mode or False, "max_new_tokens": max_new_tokens, "thinking": thinking, "seed": seed}
    return EvalResult(records, config)
