"""The data mix of a stage as a deterministic, resumable stream of training rows.

A recipe's mix (visual domain or `domain/task` -> weight, plus a text-only share) becomes a fixed plan: for
each of the `steps * batch_size` slots, which pool it draws from and which row. The plan depends only on the
recipe and the pools, so a resumed run re-creates it and continues at the saved position (`step * batch_size`)
with exactly the rows an uninterrupted run would have seen. Each pool is walked in a fresh random permutation
per pass (epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .collate import sequence_length
from .recipes import StageRecipe

Row = dict[str, Any]


@dataclass
class Pool:
    """Rows of one source (a domain, a domain/task, text-only conversations or corpus texts)."""

    name: str
    get: Callable[[int], Row]
    lengths: list[int]  # tokens of each row once its images are expanded
    skipped: int = 0  # rows dropped because they exceed max_seq_len

    @property
    def size(self) -> int:
        return len(self.lengths)


def _lengths(processor: Any, rows: Any, max_len: int) -> tuple[list[int], list[int]]:
    """(indices of the rows that fit, their lengths)."""
    lengths = [sequence_length(processor, r) for r in rows]
    keep = [i for i, n in enumerate(lengths) if n <= max_len]
    return keep, [lengths[i] for i in keep]


def build_pools(recipe: StageRecipe, processor: Any, datasets_fn: Callable[..., Any] | None = None,
                progress: bool = True) -> list[tuple[Pool, float]]:
    """(pool, probability) for every source of the recipe's mix; rows longer than max_seq_len are left out."""
    from ..data import build_dataset, corpus_texts

    build = datasets_fn or build_dataset
    pools: list[tuple[Pool, float]] = []
    visual_total = sum(recipe.data.values())
    for key, weight in recipe.data.items():
        if weight <= 0:
            continue
        domain, _, task = key.partition("/")
        ds = build("train", domains=[domain], n_per_domain=recipe.n_per_domain, seed=recipe.data_seed,
                   progress=progress)
        if task:
            ds = ds.select([i for i, t in enumerate(ds["task"]) if t == task])
            if not len(ds):
                raise ValueError(f"recipe {recipe.name!r}: domain {domain!r} has no task {task!r}")
        labelled = recipe.objective == "patch_labels"  # the labels are drawn again from the row's generator
        ds = ds.select_columns(["images", "messages"] + (["domain", "scene"] if labelled else []))
        keep, lengths = _lengths(processor, ds, recipe.max_seq_len)
        if not keep:
            raise ValueError(f"recipe {recipe.name!r}: every {key} sample is longer than max_seq_len="
                             f"{recipe.max_seq_len}")
        skipped = len(ds) - len(keep)
        ds = ds.select(keep)
        pools.append((Pool(key, ds.__getitem__, lengths, skipped), (1 - recipe.text_only) * weight / visual_total))
    if recipe.text_only > 0:
        ds = build("train", domains=["text_only"], n_per_domain=recipe.n_per_domain, seed=recipe.data_seed,
                   progress=progress).select_columns(["images", "messages"])
        rows: list[Row] = [dict(r) for r in ds]
        if recipe.text_corpus:
            rows += [{"text": t} for t in corpus_texts(recipe.text_corpus, seed=recipe.data_seed)]
        keep, lengths = _lengths(processor, rows, recipe.max_seq_len)
        kept = [rows[i] for i in keep]
        pools.append((Pool("text_only", kept.__getitem__, lengths, len(rows) - len(keep)), recipe.text_only))
    return pools


def plan(recipe: StageRecipe, sizes: Sequence[int], probs: Sequence[float]) -> np.ndarray:
    """(steps * batch_size, 2) array of (pool index, row index): the whole stage's data order."""
    total = recipe.steps * recipe.batch_size
    probs = np.asarray(probs, dtype=np.float64)
    rng = np.random.default_rng([recipe.seed, recipe.data_seed, 7919])
    choice = rng.choice(len(sizes), size=total, p=probs / probs.sum())
    out = np.zeros((total, 2), dtype=np.int64)
    out[:, 0] = choice
    for p, size in enumerate(sizes):
        slots = np.flatnonzero(choice == p)
        epochs = -(-len(slots) // size) if len(slots) else 0
        order = np.concatenate([np.random.default_rng([recipe.seed, recipe.data_seed, p, e]).permutation(size)
                                for e in range(epochs)]) if epochs else np.zeros(0, dtype=np.int64)
        out[slots, 1] = order[:len(slots)]
    return out


def length_sorted_split(rows: Sequence[Row], lengths: Sequence[int], parts: int) -> list[list[Row]]:
    """`parts` equal micro-batches of rows sorted by length: similar lengths pad less, and since the loop normalises
    the loss over the whole step, the gradient does not depend on the split (`benchmarks/bench_microbatch.py`)."""
    ordered = [rows[i] for i in sorted(range(len(rows)), key=lambda i: (lengths[i], i))]
    size = len(ordered) // parts
    return [ordered[i * size:(i + 1) * size] for i in range(parts)]


class DataStream:
    """Global batches of rows in plan order; `batch(step)` is a pure function of the step."""

    def __init__(self, recipe: StageRecipe, pools: list[tuple[Pool, float]]):
        self.recipe = recipe
        self.pools = [p for p, _ in pools]
        self.order = plan(recipe, [p.size for p in self.pools], [w for _, w in pools])

    def slots(self, step: int) -> np.ndarray:
        bs = self.recipe.batch_size
        return self.order[step * bs:(step + 1) * bs]

    def batch(self, step: int) -> list[Row]:
        """The rows of global batch `step`, in plan order."""
        return [self.pools[p].get(int(i)) for p, i in self.slots(step)]

    def lengths(self, step: int) -> list[int]:
        """Token counts of the rows of global batch `step` (same order as `batch`)."""
        return [self.pools[p].lengths[int(i)] for p, i in self.slots(step)]

    def summary(self) -> list[dict[str, Any]]:
        """Per source: pool size, rows skipped for length, and share of the stream actually drawn."""
        counts = np.bincount(self.order[:, 0], minlength=len(self.pools))
        return [{"source": p.name, "pool": p.size, "skipped_too_long": p.skipped,
                 "share": round(float(c) / max(1, len(self.order)), 4)} for p, c in zip(self.pools, counts)]
