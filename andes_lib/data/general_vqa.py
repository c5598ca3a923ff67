"""General VQA: shapes, colours, sizes, positions and relations (ANDESVL.md §3, the MME/MMBench group).

Scenes are 96x96 px with 1-3 large shapes in a 3x3 grid. Tasks: `color` (colour of a named shape; a quarter ask
about a shape that is not there and answer "There is no star.", a look-up that also teaches absence, the circuit
POPE needs), `shape` (shape of a named colour), `relation` (left/right/above/below), `size` (which is bigger) and
`caption` (a short description, scored with Rouge-1).
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from .base import Sample, build_sample, join_en
from .render import BACKGROUNDS, BASIC_SHAPES, COLOURS, canvas, centre, cell_box, draw_shape, grid_boxes

DOMAIN = "general_vqa"
TASKS: tuple[str, ...] = ("color", "shape", "relation", "size", "caption")
SIZE = (96, 96)
GRID = (3, 3)
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
ABSENT_SHARE = 0.25  # colour questions about a shape that is not there


def absent(shape: str) -> str:
    """The answer to a colour question about a missing shape."""
    return f"There is no {shape}."


def plan(rng: random.Random) -> Sample:
    """Pick a task, draw its answer uniformly, then build a scene that makes the answer true."""
    task = rng.choice(TASKS)
    background = list(rng.choice(BACKGROUNDS))
    colours = rng.sample(sorted(COLOURS), 3)
    shapes = rng.sample(BASIC_SHAPES, 4)  # shapes[3] is never drawn: the absent one
    if task in ("color", "shape"):
        n = rng.randint(2, 3)
        objects = make_objects(shapes[:n], colours[:n], grid_boxes(rng, n, SIZE, GRID, 20, 30))
        if task == "color":
            asked = shapes[3] if rng.random() < ABSENT_SHARE else shapes[0]
            query = {"task": task, "shape": asked}
            question = f"What colour is the {asked}?"
            answer = colours[0] if asked == shapes[0] else absent(asked)
            options = sorted(COLOURS) + [absent(asked)]
        else:
            query = {"task": task, "colour": colours[0]}
            question, answer, options = f"What shape is the {colours[0]} object?", shapes[0], list(BASIC_SHAPES)
    elif task == "relation":
        relation = rng.choice(RELATIONS)
        line, (a, b) = rng.randrange(3), sorted(rng.sample(range(3), 2))
        first, second = (a, b) if relation in ("left", "above") else (b, a)
        cells = [(first, line), (second, line)] if relation in ("left", "right") else [(line, first), (line, second)]
        boxes = [cell_box(rng, col, row, SIZE, GRID, 20, 28) for col, row in cells]
        objects = make_objects(shapes[:2], colours[:2], boxes)
        query = {"task": task, "subject": shapes[0], "reference": shapes[1]}
        question = f"Where is the {shapes[0]} relative to the {shapes[1]}? Answer left, right, above or below."
        answer, options = relation, list(RELATIONS)
    elif task == "size":
        bigger = rng.randrange(2)
        boxes = grid_boxes(rng, 2, SIZE, GRID, 12, 16)
        x0, y0, _, _ = boxes[bigger]
        side = rng.randint(26, 30)
        x0, y0 = min(x0, (x0 // 32) * 32 + 31 - side), min(y0, (y0 // 32) * 32 + 31 - side)
        boxes[bigger] = (x0, y0, x0 + side, y0 + side)
        objects = make_objects(shapes[:2], colours[:2], boxes)
        query = {"task": task, "first": shapes[0], "second": shapes[1]}
        question = f"Which is bigger, the {shapes[0]} or the {shapes[1]}?"
        answer, options = shapes[bigger], shapes[:2]
    else:
        n = rng.randint(1, 3)
        objects = make_objects(shapes[:n], colours[:n], grid_boxes(rng, n, SIZE, GRID, 20, 30))
        query = {"task": task}
        question, answer = "Describe the objects in the image.", caption(objects)
        options = [random_caption(rng, n) for _ in range(10)]
    scene = {"size": list(SIZE), "background": background, "objects": objects, "query": query}
    return Sample(DOMAIN, task, question, answer, scene, options, "rouge1" if task == "caption" else "exact")


def make_objects(shapes: list[str], colours: list[str], boxes: list[tuple[int, int, int, int]]) -> list[dict]:
    """Scene objects as JSON-ready dicts."""
    return [{"shape": s, "colour": c, "box": list(b)} for s, c, b in zip(shapes, colours, boxes, strict=True)]


def caption(objects: list[dict[str, Any]]) -> str:
    """'a red circle and a blue square', objects in reading order (row by row, left to right)."""
    ordered = sorted(objects, key=lambda o: (int(centre(o["box"])[1] // 32), centre(o["box"])[0]))
    return join_en([f"{article(o['colour'])} {o['colour']} {o['shape']}" for o in ordered])


def random_caption(rng: random.Random, n: int) -> str:
    """A caption of `n` random objects: a sample of the caption answer space, for the chance baseline."""
    colours = [rng.choice(sorted(COLOURS)) for _ in range(n)]
    return join_en([f"{article(c)} {c} {rng.choice(BASIC_SHAPES)}" for c in colours])


def article(word: str) -> str:
    """'an' before a vowel, else 'a'."""
    return "an" if word[0] in "aeiou" else "a"


def render(scene: dict[str, Any]) -> list[Image.Image]:
    """Draw the scene's shapes."""
    image, draw = canvas(*scene["size"], tuple(scene["background"]))
    for obj in scene["objects"]:
        draw_shape(draw, obj["shape"], tuple(obj["box"]), COLOURS[obj["colour"]])
    return [image]


def solve(scene: dict[str, Any]) -> str:
    """Re-derive the answer from the scene description alone."""
    query, objects = scene["query"], scene["objects"]
    by_shape = {o["shape"]: o for o in objects}
    if query["task"] == "color":
        return by_shape[query["shape"]]["colour"] if query["shape"] in by_shape else absent(query["shape"])
    if query["task"] == "shape":
        return next(o["shape"] for o in objects if o["colour"] == query["colour"])
    if query["task"] == "relation":
        (sx, sy), (rx, ry) = centre(by_shape[query["subject"]]["box"]), centre(by_shape[query["reference"]]["box"])
        if abs(sx - rx) > abs(sy - ry):
            return "left" if sx < rx else "right"
        return "above" if sy < ry else "below"
    if query["task"] == "size":
        def area(shape: str) -> int:
            x0, y0, x1, y1 = by_shape[shape]["box"]
            return (x1 - x0) * (y1 - y0)
        return max((query["first"], query["second"]), key=area)
    return caption(objects)


def generate(rng_or_seed: int | random.Random) -> Sample:
    """One general-VQA sample (images rendered)."""
    return build_sample(plan, render, rng_or_seed)
