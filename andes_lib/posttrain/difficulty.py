"""Difficulty grading for the two GRPO stages (ANDESVL.md §2, SPEC §3.4): by the model's own pass rate.

Each prompt is answered `k` times by the Thinking-SFT model (sampling, thinking on); its pass rate is the share
of well-formed, correct answers. Buckets, for a rate p = passes / k:

| bucket | rate | use |
|---|---|---|
| `solved` | p = 1 | dropped: every answer right, GRPO's group advantage is zero |
| `easy` | hard_below <= p < 1 | stage 1 |
| `hard` | 0 < p < hard_below | stage 2 |
| `unsolved` | p = 0 | dropped by default: no correct sample, zero advantage (kept as a stage-2 fallback) |

With k = 8 and `hard_below = 3/8` this is the SPEC's suggestion: stage 1 on 3-7/8, stage 2 on 1-2/8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .common import sample_answers
from .rewards import accuracy_score

BUCKETS: tuple[str, ...] = ("unsolved", "hard", "easy", "solved")
HARD_BELOW = 3 / 8


def bucket(passes: int, k: int, hard_below: float = HARD_BELOW) -> str:
    """The difficulty bucket of a prompt answered correctly `passes` times out of `k`."""
    if k < 1 or not 0 <= passes <= k:
        raise ValueError(f"need 0 <= passes <= k and k >= 1, got passes={passes}, k={k}")
    if passes == 0:
        return "unsolved"
    if passes == k:
        return "solved"
    return "hard" if passes / k < hard_below else "easy"


def grade(model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], k: int = 8, temperature: float = 1.0,
          max_new_tokens: int = 64, thinking: bool = True, hard_below: float = HARD_BELOW, batch_size: int = 32,
          seed: int = 0) -> pd.DataFrame:
    """Pass rate and bucket of every row (`question`, `images`, `answer`, `metric`), from `k` sampled answers.

    A pass is a well-formed Thinking completion whose answer the row's metric scores >= 0.5
    (`rewards.accuracy_score`); with `thinking=False` the plain answer is scored.
    """
    samples = sample_answers(model, processor, rows, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                             thinking=thinking, batch_size=batch_size, seed=seed)
    out = []
    for i, (row, outs) in enumerate(zip(rows, samples, strict=True)):
        if thinking:
            scores = [accuracy_score(o["text"], row["answer"], row["metric"], o["finished"]) for o in outs]
        else:
            from ..eval.metrics import score

            scores = [score(o["text"], row["answer"], row["metric"]) for o in outs]
        passes = sum(s >= 0.5 for s in scores)
        out.append({"index": i, "id": row.get("id", str(i)), "domain": row.get("domain", ""),
                    "task": row.get("task", ""), "passes": passes, "k": k, "pass_rate": passes / k,
                    "bucket": bucket(passes, k, hard_below)})
    return pd.DataFrame(out)


def stage_indices(grades: pd.DataFrame, stage1: Sequence[str] = ("easy",), stage2: Sequence[str] = ("hard",),
                  fallback2: Sequence[str] = ("unsolved",), min_rows: int = 1) -> tuple[list[int], list[int]]:
    """Row indices of stage 1 (easier) and stage 2 (harder) prompts; stage 2 adds `fallback2` buckets when it
    would otherwise have fewer than `min_rows` rows."""
    unknown = (set(stage1) | set(stage2) | set(fallback2)) - set(BUCKETS)
    if unknown:
        raise ValueError(f"unknown bucket(s) {sorted(unknown)}; known: {BUCKETS}")
    first = grades.loc[grades["bucket"].isin(stage1), "index"].tolist()
    second = grades.loc[grades["bucket"].isin(stage2), "index"].tolist()
    if len(second) < min_rows:
        second += grades.loc[grades["bucket"].isin(fallback2), "index"].tolist()
    return first, second


def bucket_table(grades: pd.DataFrame) -> pd.DataFrame:
    """Counts per domain and bucket (columns in difficulty order)."""
    table = grades.pivot_table(index="domain", columns="bucket", values="index", aggfunc="count", fill_value=0)
    return table.reindex(columns=[b for b in BUCKETS if b in table.columns]).reset_index()
