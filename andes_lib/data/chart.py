"""Charts: bar and line charts with known values (ANDESVL.md §3, the ChartQA part of the text-rich group).

144x112 px, 3-5 categories labelled A-E with integer values 1-9 written above each bar or point (as chart
data labels). Tasks: `max` / `min` (which category), `value` (read one value) and `diff` (how much larger one
category is than another). Each sample has a rationale listing the values and ending in `\\boxed{answer}`.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from .base import Sample, build_sample
from .render import BACKGROUNDS, COLOURS, canvas, draw_text

DOMAIN = "chart"
TASKS: tuple[str, ...] = ("max", "min", "value", "diff")
SIZE = (144, 112)
LEFT, RIGHT, BASELINE, TOP = 10, 138, 92, 26
MAX_VALUE = 9


def plan(rng: random.Random) -> Sample:
    """Pick a task and its answer uniformly, then values consistent with it."""
    task, kind = rng.choice(TASKS), rng.choice(("bar", "line"))
    k = rng.randint(3, 5)
    labels = list("ABCDE"[:k])
    values = [rng.randint(1, MAX_VALUE) for _ in labels]
    i, j = rng.sample(range(k), 2)
    if task == "max":
        values[i] = rng.randint(4, MAX_VALUE)
        values = [v if n == i else rng.randint(1, values[i] - 1) for n, v in enumerate(values)]
        question, answer, options = "Which category has the highest value?", labels[i], labels
        step = f"The highest is {labels[i]} with {values[i]}."
    elif task == "min":
        values[i] = rng.randint(1, MAX_VALUE - 3)
        values = [v if n == i else rng.randint(values[i] + 1, MAX_VALUE) for n, v in enumerate(values)]
        question, answer, options = "Which category has the lowest value?", labels[i], labels
        step = f"The lowest is {labels[i]} with {values[i]}."
    elif task == "value":
        question, answer = f"What is the value of {labels[i]}?", str(values[i])
        options = [str(v) for v in range(1, MAX_VALUE + 1)]
        step = f"{labels[i]} is {values[i]}."
    else:
        diff = rng.randint(1, MAX_VALUE - 1)
        values[j] = rng.randint(1, MAX_VALUE - diff)
        values[i] = values[j] + diff
        question, answer = f"How much larger is {labels[i]} than {labels[j]}?", str(diff)
        options = [str(v) for v in range(1, MAX_VALUE)]
        step = f"{labels[i]} - {labels[j]} = {values[i]} - {values[j]} = {diff}."
    listing = ", ".join(f"{lab} = {v}" for lab, v in zip(labels, values, strict=True))
    rationale = f"The chart shows {listing}. {step} The answer is \\boxed{{{answer}}}."
    query = {"task": task} | ({"label": labels[i]} if task == "value" else {}) | (
        {"first": labels[i], "second": labels[j]} if task == "diff" else {})
    scene = {"size": list(SIZE), "background": list(rng.choice(BACKGROUNDS)), "kind": kind,
             "colour": rng.choice(sorted(COLOURS)), "labels": labels, "values": values, "query": query}
    return Sample(DOMAIN, task, question, answer, scene, options, "relaxed", rationale=rationale)


def render(scene: dict[str, Any]) -> list[Image.Image]:
    """Draw axes, light gridlines, the bars or line, data labels and category labels."""
    image, draw = canvas(*scene["size"], tuple(scene["background"]))
    labels, values = scene["labels"], scene["values"]
    unit = (BASELINE - TOP) / MAX_VALUE
    slot = (RIGHT - LEFT) / len(labels)
    for g in (3, 6, 9):
        draw.line((LEFT, BASELINE - g * unit, RIGHT, BASELINE - g * unit), fill=(215, 215, 215), width=1)
    draw.line((LEFT, BASELINE, RIGHT, BASELINE), fill=(60, 60, 60), width=2)
    draw.line((LEFT, TOP - 8, LEFT, BASELINE), fill=(60, 60, 60), width=2)
    colour = COLOURS[scene["colour"]]
    points = [(LEFT + slot * (n + 0.5), BASELINE - v * unit) for n, v in enumerate(values)]
    if scene["kind"] == "bar":
        half = slot * 0.3
        for x, y in points:
            draw.rectangle((x - half, y, x + half, BASELINE), fill=colour)
    else:
        draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
    for (x, y), label, v in zip(points, labels, values, strict=True):
        draw_text(draw, (x, y - 11), str(v), 14, (25, 25, 25))
        draw_text(draw, (x, BASELINE + 11), label, 15, (25, 25, 25))
    return [image]


def solve(scene: dict[str, Any]) -> str:
    """Answer from the chart's labels and values."""
    query, table = scene["query"], dict(zip(scene["labels"], scene["values"], strict=True))
    if query["task"] == "max":
        return max(table, key=table.__getitem__)
    if query["task"] == "min":
        return min(table, key=table.__getitem__)
    if query["task"] == "value":
        return str(table[query["label"]])
    return str(table[query["first"]] - table[query["second"]])


def generate(rng_or_seed: int | random.Random) -> Sample:
    """One chart sample (images rendered)."""
    return build_sample(plan, render, rng_or_seed)
