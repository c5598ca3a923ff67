"""Multi-image: questions that need two or three images at once (ANDESVL.md §3, BLINK/MUIRBench group).

Each image is 64x64 px. Tasks: `more` (which image has more of a shape), `odd` (which of three images differs),
`changed` (which shape changed colour between two images) and `same` (do two images show the same shape).
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from .base import Sample, build_sample
from .general_vqa import make_objects
from .general_vqa import render as render_shapes
from .render import BACKGROUNDS, BASIC_SHAPES, COLOURS, grid_boxes, plural

DOMAIN = "multi_image"
TASKS: tuple[str, ...] = ("more", "odd", "changed", "same")
SIZE = (64, 64)
GRID = (3, 3)


def panel(rng: random.Random, shapes: list[str], colours: list[str], min_side: int, max_side: int) -> dict:
    """The scene of one image: shapes in distinct cells of a 3x3 grid."""
    boxes = grid_boxes(rng, len(shapes), SIZE, GRID, min_side, max_side)
    return {"size": list(SIZE), "background": list(rng.choice(BACKGROUNDS)),
            "objects": make_objects(shapes, colours, boxes)}


def single(rng: random.Random, shape: str, colour: str) -> dict:
    """The scene of one image holding one large shape."""
    side = rng.randint(30, 44)
    x0, y0 = rng.randint(2, 62 - side), rng.randint(2, 62 - side)
    return {"size": list(SIZE), "background": list(rng.choice(BACKGROUNDS)),
            "objects": make_objects([shape], [colour], [(x0, y0, x0 + side, y0 + side)])}


def plan(rng: random.Random) -> Sample:
    """Pick a task and its answer uniformly, then build the panels."""
    task = rng.choice(TASKS)
    colour_names = sorted(COLOURS)
    if task == "more":
        shape, answer = rng.choice(BASIC_SHAPES), rng.choice(("first", "second"))
        big = rng.randint(2, 5)
        counts = [big, rng.randint(1, big - 1)]
        if answer == "second":
            counts.reverse()
        panels = [panel(rng, [shape] * c, [rng.choice(colour_names) for _ in range(c)], 12, 17) for c in counts]
        query = {"task": task, "shape": shape}
        question = f"Which image has more {plural(shape)}, the first or the second?"
        options = ["first", "second"]
    elif task == "odd":
        odd = rng.randrange(3)
        shape, colour = rng.choice(BASIC_SHAPES), rng.choice(colour_names)
        if rng.random() < 0.5:
            other = (rng.choice([s for s in BASIC_SHAPES if s != shape]), colour)
        else:
            other = (shape, rng.choice([c for c in colour_names if c != colour]))
        panels = [single(rng, *(other if k == odd else (shape, colour))) for k in range(3)]
        query, answer, options = {"task": task}, str(odd + 1), ["1", "2", "3"]
        question = "Which image is different from the other two? Answer 1, 2 or 3."
    elif task == "changed":
        n = rng.randint(2, 3)
        shapes, colours = rng.sample(BASIC_SHAPES, n), rng.sample(colour_names, n)
        first = panel(rng, shapes, colours, 14, 19)
        target = rng.randrange(n)
        second = {**first, "objects": [dict(o) for o in first["objects"]]}
        second["objects"][target]["colour"] = rng.choice([c for c in colour_names if c not in colours])
        panels, query, answer = [first, second], {"task": task}, shapes[target]
        question = "One shape changed colour from the first image to the second. Which shape?"
        options = list(BASIC_SHAPES)
    else:
        answer = rng.choice(("yes", "no"))
        a = rng.choice(BASIC_SHAPES)
        b = a if answer == "yes" else rng.choice([s for s in BASIC_SHAPES if s != a])
        panels = [single(rng, a, rng.choice(colour_names)), single(rng, b, rng.choice(colour_names))]
        query, options = {"task": task}, ["yes", "no"]
        question = "Do the two images show the same shape? Answer yes or no."
    scene = {"panels": panels, "query": query}
    return Sample(DOMAIN, task, question, answer, scene, options, "exact")


def render(scene: dict[str, Any]) -> list[Image.Image]:
    """One image per panel."""
    return [render_shapes(p)[0] for p in scene["panels"]]


def solve(scene: dict[str, Any]) -> str:
    """Compare the panels' objects."""
    query, panels = scene["query"], scene["panels"]
    if query["task"] == "more":
        a, b = (sum(o["shape"] == query["shape"] for o in p["objects"]) for p in panels)
        return "first" if a > b else "second"
    if query["task"] == "odd":
        looks = [(p["objects"][0]["shape"], p["objects"][0]["colour"]) for p in panels]
        return str(next(k + 1 for k, look in enumerate(looks) if looks.count(look) == 1))
    if query["task"] == "changed":
        before, after = panels[0]["objects"], panels[1]["objects"]
        return next(a["shape"] for a, b in zip(before, after, strict=True) if a["colour"] != b["colour"])
    return "yes" if panels[0]["objects"][0]["shape"] == panels[1]["objects"][0]["shape"] else "no"


def generate(rng_or_seed: int | random.Random) -> Sample:
    """One multi-image sample (two or three images)."""
    return build_sample(plan, render, rng_or_seed)
