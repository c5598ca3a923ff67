"""Verifiable-answer prompts for GRPO (ANDESVL.md §2, Thinking post-training): a prompt and a checkable answer.

Rows carry `prompt` (the user turn, TRL conversational format), `images`, `answer` and `metric`; a reward
function scores a completion with `andes_lib.eval.metrics.reward(completions, answer, metric)`.
"""

from __future__ import annotations

from typing import Any

from .base import Sample, user_message


def verifiable_row(sample: Sample) -> dict[str, Any]:
    """One GRPO row: the question as a prompt, the reference answer and the metric that checks it."""
    return {
        "domain": sample.domain, "task": sample.task, "lang": sample.lang, "seed": sample.seed,
        "images": list(sample.images), "prompt": [user_message(sample.question, len(sample.images))],
        "question": sample.question, "answer": sample.answer, "metric": sample.metric,
    }
