"""Preference pairs for MPO (ANDESVL.md §2, Instruct post-training): same prompt, a correct and a wrong answer.

The rejected answer comes from the scene's own answer space: another colour, shape or number, the flipped
yes/no of a presence question (a hallucinated object), the box of another element, or a caption of objects
that are not there. Format: TRL's conversational DPO columns `prompt`, `chosen`, `rejected` (+ `images`).
"""

from __future__ import annotations

import random
from typing import Any

from .base import Sample, assistant_message, user_message


def rejected_answer(sample: Sample) -> str:
    """A wrong answer drawn (deterministically per seed) from the sample's options."""
    def words(text: str) -> list[str]:
        return sorted(text.lower().replace(",", " ").split())

    wrong = [o for o in sample.options if words(o) != words(sample.answer)]
    if not wrong:
        raise ValueError(f"{sample.domain}/{sample.task}: no wrong option to reject for answer {sample.answer!r}")
    return random.Random(f"rejected-{sample.seed}-{sample.question}").choice(wrong)


def preference_row(sample: Sample) -> dict[str, Any]:
    """One DPO row: the prompt turn, the chosen and the rejected assistant turns."""
    return {
        "domain": sample.domain, "task": sample.task, "lang": sample.lang, "seed": sample.seed,
        "images": list(sample.images),
        "prompt": [user_message(sample.question, len(sample.images))],
        "chosen": [assistant_message(sample.answer)],
        "rejected": [assistant_message(rejected_answer(sample))],
        "answer": sample.answer, "metric": sample.metric,
    }
