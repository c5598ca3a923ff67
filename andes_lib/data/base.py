"""The `Sample` every generator returns, and its conversion to the chat format (ANDESVL.md §1-§3).

A generator is split in three pure functions so each part can be checked on its own:
`plan(rng) -> Sample` (scene, question, answer; no pixels), `render(scene) -> images`, and
`solve(scene) -> answer` (re-derives the answer from the scene description, used by the tests).
Questions are built "answer first": the answer is drawn uniformly from its options, then a scene is built
that makes it true, so a model that ignores the image cannot beat chance.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

METRIC_NAMES: tuple[str, ...] = ("exact", "relaxed", "yesno", "iou", "rouge1")


@dataclass
class Sample:
    """One generated item: images + question + short answer, and the scene they were drawn from.

    `options` is the answer space of the question (or a random sample of it when it is large); the chance
    baseline is the expected score of a uniform guess among them. `rationale` is a step-by-step solution
    ending in `\\boxed{answer}` (reasoning and chart tasks), used by the Thinking chapter.
    """

    domain: str
    task: str
    question: str
    answer: str
    scene: dict[str, Any]
    options: list[str]
    metric: str
    rationale: str = ""
    lang: str = "en"
    images: list[Image.Image] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {self.metric!r}; known: {METRIC_NAMES}")

    def messages(self, thinking: bool = False) -> list[dict[str, Any]]:
        """User turn (one image item per image, then the question) and the assistant's answer."""
        return [user_message(self.question, len(self.images)),
                assistant_message(assistant_text(self.answer, self.rationale, thinking))]

    def record(self) -> dict[str, Any]:
        """A flat dict for `datasets` (scene as JSON text, messages in the TRL conversational format)."""
        return {
            "domain": self.domain, "task": self.task, "lang": self.lang, "seed": self.seed,
            "images": list(self.images), "messages": self.messages(),
            "question": self.question, "answer": self.answer, "rationale": self.rationale,
            "options": list(self.options), "metric": self.metric,
            "scene": json.dumps(self.scene, ensure_ascii=False, sort_keys=True),
        }


def user_message(question: str, n_images: int) -> dict[str, Any]:
    """ChatML user turn: `n_images` image items, then the question text."""
    images = [{"type": "image", "text": None} for _ in range(n_images)]
    return {"role": "user", "content": images + [{"type": "text", "text": question}]}


def assistant_message(text: str) -> dict[str, Any]:
    """Assistant turn with one text item."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def assistant_text(answer: str, rationale: str = "", thinking: bool = False) -> str:
    """The answer, or in thinking mode `<think>\\n{rationale}\\n</think>\\n\\n{answer}` (empty think if none)."""
    if not thinking:
        return answer
    return f"<think>\n{rationale}\n</think>\n\n{answer}" if rationale else f"<think>\n\n</think>\n\n{answer}"


def as_rng(rng_or_seed: int | random.Random) -> tuple[random.Random, int | None]:
    """A `random.Random` and the seed it came from (None when an rng was passed)."""
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed, None
    if isinstance(rng_or_seed, bool) or not isinstance(rng_or_seed, int):
        raise TypeError(f"expected an int seed or random.Random, got {type(rng_or_seed).__name__}")
    return random.Random(rng_or_seed), rng_or_seed


def build_sample(plan: Callable[[random.Random], Sample], render: Callable[[dict[str, Any]], list[Image.Image]],
                 rng_or_seed: int | random.Random) -> Sample:
    """Plan a sample with the rng, then render its images from the scene alone."""
    rng, seed = as_rng(rng_or_seed)
    sample = plan(rng)
    sample.images = render(sample.scene)
    sample.seed = seed
    return sample


def box_string(box: tuple[int, int, int, int] | list[int], width: int, height: int) -> str:
    """A pixel box as the released models write it: `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` on a 0-1000 grid."""
    x0, y0, x1, y1 = box
    g = [round(x0 * 1000 / width), round(y0 * 1000 / height), round(x1 * 1000 / width), round(y1 * 1000 / height)]
    return f"<|box_start|>({g[0]},{g[1]}),({g[2]},{g[3]})<|box_end|>"


def join_en(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
