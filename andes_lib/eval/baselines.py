"""Chance and majority baselines per domain and task, computed from the data itself (ANDESVL.md §3).

Chance: the expected score of a uniform guess among a sample's `options` (its answer space, or a random sample
of it). Majority: the score of always answering the most frequent answer of the sample's task in this data
(an upper bound for any model that ignores the image and keys on the task). The blind baseline (the model with
a blank image) lives in `harness.evaluate(..., blind=True)`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from .metrics import METRICS

COLUMNS = ("domain", "task", "answer", "options", "metric")


def chance_score(answer: str, options: Sequence[str], metric: str) -> float:
    """Mean score of the options against the answer (NaN when there are no options)."""
    if not options:
        return float("nan")
    return sum(METRICS[metric](option, answer) for option in options) / len(options)


def _rows(data: Any) -> list[Mapping[str, Any]]:
    """The needed columns as dicts, without decoding images."""
    if hasattr(data, "select_columns"):
        missing = [c for c in COLUMNS if c not in data.column_names]
        if missing:
            raise ValueError(f"data lacks column(s) {missing} needed for baselines")
        data = data.select_columns(list(COLUMNS))
    return list(data)


def baselines(data: Iterable[Mapping[str, Any]], by: str = "domain") -> pd.DataFrame:
    """Table of n, chance and majority, one row per domain (`by="domain"`) or per (domain, task) (`by="task"`)."""
    if by not in ("domain", "task"):
        raise ValueError(f"by must be 'domain' or 'task', got {by!r}")
    rows = _rows(data)
    answers: dict[tuple[str, str], Counter] = {}
    for r in rows:
        answers.setdefault((r["domain"], r["task"]), Counter())[r["answer"]] += 1
    majority = {key: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for key, c in answers.items()}
    scored = pd.DataFrame([{
        "domain": r["domain"], "task": r["task"],
        "chance": chance_score(r["answer"], r["options"], r["metric"]),
        "majority": METRICS[r["metric"]](majority[(r["domain"], r["task"])], r["answer"]),
    } for r in rows])
    keys = ["domain"] if by == "domain" else ["domain", "task"]
    table = scored.groupby(keys, sort=False).agg(n=("chance", "size"), chance=("chance", "mean"),
                                                  majority=("majority", "mean")).reset_index()
    if by == "task":
        table["majority_answer"] = [majority[(d, t)] for d, t in zip(table["domain"], table["task"], strict=True)]
    return table
