"""Preference pairs for MPO (SPEC §3.3): chosen = the correct, grounded answer; rejected = a wrong one.

Two sources, both judged by the generator's ground truth (never by another model):

- `answer_space_pairs`: the data package's pairs; the rejected answer is another value of the question's own
  answer space (another colour, count, box, the flipped yes/no of a presence question: a hallucinated object).
- `sampled_pairs`: InternVL's MPO recipe, on-policy. The SFT model answers each prompt `k` times with sampling;
  every answer the metric scores below `threshold` is a mistake *this model actually makes*, and becomes the
  rejected side of a pair. Its chosen side is the ground truth, or (`chosen="sampled"`, InternVL's
  correctness-based pipeline) one of the model's own right answers, so that a prompt the model never gets right
  gives no pair: no preference is taught where the model cannot see the answer. Prompts the model always gets right
  give no pair either: the preference signal concentrates where the model sometimes hallucinates.

`build_mpo_pairs` mixes both, balances yes/no pairs (`balance_yes_no`) and returns per-domain statistics (how often
the sampled answers were wrong).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import pandas as pd

from ..data.base import assistant_message, user_message
from ..data.dataset import FEATURES, build_dataset, build_preference_dataset
from ..eval.metrics import score
from ..processing.tokenizer import IMAGE_END, IMAGE_PAD, IMAGE_START
from .common import sample_answers

PAIR_FEATURES = datasets.Features(dict(FEATURES["preference"]) | {"source": datasets.Value("string")})
PAIR_COLUMNS = tuple(PAIR_FEATURES)
IMAGE_TOKENS = (IMAGE_START, IMAGE_END, IMAGE_PAD)


def answer_space_pairs(split: str = "train", domains: Sequence[str] | None = None, n_per_domain: int = 32,
                       seed: int = 2, progress: bool = False) -> datasets.Dataset:
    """Pairs whose rejected answer is drawn from the question's answer space (`andes_lib.data.preferences`)."""
    ds = build_preference_dataset(split, domains, n_per_domain, seed, progress=progress)
    return ds.add_column("source", ["answer_space"] * len(ds)).cast(PAIR_FEATURES)


def sampled_pairs(model: Any, processor: Any, rows: datasets.Dataset, k: int = 4, temperature: float = 1.0,
                  max_new_tokens: int = 32, threshold: float = 0.5, max_pairs_per_prompt: int = 1,
                  batch_size: int = 32, seed: int = 0, chosen: str = "reference"
                  ) -> tuple[datasets.Dataset, pd.DataFrame]:
    """On-policy pairs: sample `k` answers per SFT-format row, reject those the row's metric scores < threshold.
    `chosen`: "reference" (the row's answer) or "sampled" (a right sampled answer; rows with none give no pair).

    Returns the pairs and one row per domain: prompts, sampled answers, share judged wrong, pairs made.
    """
    if chosen not in ("reference", "sampled"):
        raise ValueError(f"chosen must be 'reference' or 'sampled', got {chosen!r}")
    samples = sample_answers(model, processor, rows, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, seed=seed)
    pairs, stats = [], Counter()
    for row, outs in zip(rows, samples, strict=True):
        domain = row["domain"]
        stats[(domain, "prompts")] += 1
        wrong: list[str] = []
        right: list[str] = []
        for out in outs:
            text = out["text"].strip()
            stats[(domain, "sampled")] += 1
            is_right = score(text, row["answer"], row["metric"]) >= threshold
            stats[(domain, "wrong")] += not is_right
            # an answer that emits image tokens could not be re-encoded next to its images: no pair from it
            side = right if is_right else wrong
            if text and text not in side and not any(t in text for t in IMAGE_TOKENS):
                side.append(text)
        if chosen == "sampled" and not right:
            continue
        good = right[0] if chosen == "sampled" else row["answer"]
        for rejected in wrong[:max_pairs_per_prompt]:
            stats[(domain, "pairs")] += 1
            pairs.append({
                "id": f"{row['id']}-sampled-{len(pairs)}", "domain": domain, "task": row["task"],
                "lang": row.get("lang") or "en", "seed": row.get("seed"), "images": list(row["images"]),
                "prompt": [user_message(row["question"], len(row["images"]))],
                "chosen": [assistant_message(good)], "rejected": [assistant_message(rejected)],
                "answer": row["answer"], "metric": row["metric"], "source": "sampled",
            })
    table = pd.DataFrame([{
        "domain": d, "prompts": stats[(d, "prompts")], "sampled": stats[(d, "sampled")],
        "wrong_share": stats[(d, "wrong")] / max(1, stats[(d, "sampled")]), "pairs": stats[(d, "pairs")],
    } for d in dict.fromkeys(rows["domain"])])
    data = datasets.Dataset.from_list(pairs, features=PAIR_FEATURES) if pairs else empty_pairs()
    return data, table


def empty_pairs() -> datasets.Dataset:
    return datasets.Dataset.from_dict({c: [] for c in PAIR_COLUMNS}, features=PAIR_FEATURES)


def balance_yes_no(pairs: datasets.Dataset, seed: int = 0) -> tuple[datasets.Dataset, Counter]:
    """Per domain, keep as many pairs whose chosen answer is "yes" as "no" (a random subset of the larger side).

    On-policy pairs mirror the model's bias: an SFT model that says "yes" to three questions in four makes mostly
    false-"yes" mistakes, so nearly every chosen answer is "no". MPO's generation term then teaches "no" itself, not
    when to say it, and the model flips to the opposite bias (measured in chapter 05: POPE yes-ratio 0.77 -> 0.29,
    accuracy 65% -> 57%). Returns the balanced pairs and the number dropped per domain.
    """
    rng = random.Random(seed)
    sides: dict[tuple[str, str], list[int]] = {}
    for i, (domain, answer) in enumerate(zip(pairs["domain"], pairs["answer"], strict=True)):
        label = answer.strip().lower()
        if label in ("yes", "no"):
            sides.setdefault((domain, label), []).append(i)
    drop, dropped = set(), Counter()
    for domain in {d for d, _ in sides}:
        yes, no = sides.get((domain, "yes"), []), sides.get((domain, "no"), [])
        larger, n = (yes, len(no)) if len(yes) > len(no) else (no, len(yes))
        cut = rng.sample(larger, len(larger) - n)
        drop.update(cut)
        dropped[domain] = len(cut)
    keep = [i for i in range(len(pairs)) if i not in drop]
    return pairs.select(keep), dropped


def build_mpo_pairs(model: Any, processor: Any, domains: Sequence[str] | None = None, n_sampled: int = 48,
                    n_answer_space: int = 16, k: int = 4, temperature: float = 1.0, max_new_tokens: int = 32,
                    seed: int = 2, batch_size: int = 32, balance: bool = True, progress: bool = False,
                    extra_answer_space: Mapping[str, int] | None = None, chosen: str = "reference"
                    ) -> tuple[datasets.Dataset, pd.DataFrame]:
    """The MPO training set: on-policy pairs from `n_sampled` train prompts per domain, plus `n_answer_space`
    answer-space pairs per domain (fresh train-split seeds: `seed`, never the test split), plus
    `extra_answer_space[domain]` more for the named domains (other fresh scenes), yes/no pairs balanced per domain
    when `balance` (`balance_yes_no`). `chosen`: the sampled pairs' chosen side (`sampled_pairs`). Shuffled.
    """
    parts, table = [], pd.DataFrame()
    if n_sampled:
        rows = build_dataset("train", domains, n_sampled, seed, progress=progress)
        sampled, table = sampled_pairs(model, processor, rows, k=k, temperature=temperature,
                                       max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                                       chosen=chosen)
        parts.append(sampled)
    extra = dict(extra_answer_space or {})
    bad = [(d, n) for d, n in extra.items() if isinstance(n, bool) or not isinstance(n, int) or n < 0]
    if bad:
        raise ValueError(f"extra_answer_space counts must be ints >= 0, got {bad}")
    statics = [answer_space_pairs("train", domains, n_answer_space, seed + 1, progress)] if n_answer_space else []
    statics += [answer_space_pairs("train", [d], n, seed + 3, progress) for d, n in extra.items() if n]
    if statics:
        static = datasets.concatenate_datasets(statics)
        parts.append(static)
        counts = Counter(static["domain"])
        if table.empty:
            table = pd.DataFrame({"domain": list(counts)})
        table["answer_space_pairs"] = table["domain"].map(counts).fillna(0).astype(int)
    if not parts:
        raise ValueError("no pairs requested: n_sampled, n_answer_space and extra_answer_space are all 0")
    data = datasets.concatenate_datasets(parts)
    if balance:
        data, dropped = balance_yes_no(data, seed)
        table["yes_no_dropped"] = table["domain"].map(dropped).fillna(0).astype(int)
    return data.shuffle(seed=seed), table
