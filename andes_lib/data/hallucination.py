"""Hallucination: POPE-style balanced yes/no presence questions (ANDESVL.md §3, POPE / HallusionBench).

Scenes are 96x96 px with 1-3 shapes out of six. Half the answers are "yes". Two question sets, as POPE's
sampling settings: `object` ("Is there a star?", absent objects drawn at random) and `attribute`
("Is there a red star?", adversarial: a "no" scene always holds the same shape in another colour or the same
colour on another shape, so only binding shape and colour answers it).
"""

from __future__ import annotations

import random
from typing import Any

from .base import Sample, build_sample
from .general_vqa import make_objects, render
from .render import BACKGROUNDS, COLOURS, SHAPES, grid_boxes

DOMAIN = "hallucination"
TASKS: tuple[str, ...] = ("object", "attribute")
SIZE = (96, 96)
GRID = (3, 3)


def plan(rng: random.Random) -> Sample:
    """Draw yes/no first, then a scene where the asked object is present or absent."""
    task, answer = rng.choice(TASKS), rng.choice(("yes", "no"))
    n = rng.randint(1, 3)
    shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
    if task == "object":
        others = [s for s in SHAPES if s != shape]
        shapes = [rng.choice(others) for _ in range(n)]
        colours = [rng.choice(sorted(COLOURS)) for _ in range(n)]
        if answer == "yes":
            shapes[rng.randrange(n)] = shape
        question = f"Is there a {shape} in the image?"
        query = {"task": task, "shape": shape}
    else:
        others = [(s, c) for s, c in ((rng.choice(SHAPES), rng.choice(sorted(COLOURS))) for _ in range(n - 1))
                  if (s, c) != (shape, colour)]
        if answer == "yes":
            key = (shape, colour)
        elif rng.random() < 0.5:
            key = (shape, rng.choice([c for c in sorted(COLOURS) if c != colour]))
        else:
            key = (rng.choice([s for s in SHAPES if s != shape]), colour)
        shapes, colours = [s for s, _ in others] + [key[0]], [c for _, c in others] + [key[1]]
        question = f"Is there a {colour} {shape} in the image?"
        query = {"task": task, "shape": shape, "colour": colour}
    boxes = grid_boxes(rng, len(shapes), SIZE, GRID, 22, 30)
    scene = {"size": list(SIZE), "background": list(rng.choice(BACKGROUNDS)),
             "objects": make_objects(shapes, colours, boxes), "query": query}
    return Sample(DOMAIN, task, question, answer, scene, ["yes", "no"], "yesno")


def solve(scene: dict[str, Any]) -> str:
    """'yes' when an object matching the query is in the scene."""
    query = scene["query"]
    hit = any(o["shape"] == query["shape"] and query.get("colour", o["colour"]) == o["colour"]
              for o in scene["objects"])
    return "yes" if hit else "no"


def generate(rng_or_seed: int | random.Random) -> Sample:
    """One hallucination sample (images rendered)."""
    return build_sample(plan, render, rng_or_seed)
