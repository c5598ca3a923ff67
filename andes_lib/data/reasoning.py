"""Reasoning and math: arithmetic on rendered digits, counting, comparing quantities (ANDESVL.md §3, MathVista).

Tasks: `arithmetic` ("7 + 5" drawn in a 36 px font on 128x64 px; answer 0-18, uniform), `count` (how many
of one shape among distractors, 1-6, uniform, 96x96 px) and `compare` (which half of a 128x64 image holds
more dots). Every sample carries a rationale that ends in `\\boxed{answer}` for the Thinking chapter.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from .base import Sample, build_sample
from .general_vqa import make_objects
from .render import (BACKGROUNDS, BASIC_SHAPES, COLOURS, INK, canvas, cell_box, centre, draw_shape, draw_text,
                     grid_boxes, plural)

DOMAIN = "reasoning"
TASKS: tuple[str, ...] = ("arithmetic", "count", "compare")
WIDE = (128, 64)
SQUARE = (96, 96)
MAX_COUNT = 6


def plan(rng: random.Random) -> Sample:
    """Pick a task and its answer uniformly, then build the scene and the step-by-step rationale."""
    task = rng.choice(TASKS)
    background = list(rng.choice(BACKGROUNDS))
    if task == "arithmetic":
        op = rng.choice("+-")
        if op == "+":
            value = rng.randint(0, 18)
            a = rng.randint(max(0, value - 9), min(9, value))
            b = value - a
        else:
            value = rng.randint(0, 9)
            b = rng.randint(0, 9 - value)
            a = value + b
        text = f"{a} {op} {b}"
        scene = {"size": list(WIDE), "background": background, "ink": list(rng.choice(INK)), "text": text,
                 "xy": [64 + rng.randint(-14, 14), 32 + rng.randint(-6, 6)], "query": {"task": task}}
        question = "What is the value of the expression in the image?"
        answer, options = str(value), [str(v) for v in range(19)]
        rationale = f"The image shows {text}. {text} = {value}. The answer is \\boxed{{{value}}}."
    elif task == "count":
        target, decoy = rng.sample(BASIC_SHAPES, 2)
        count, n_decoys = rng.randint(1, MAX_COUNT), rng.randint(0, 3)
        shapes = [target] * count + [decoy] * n_decoys
        colours = [rng.choice(sorted(COLOURS)) for _ in shapes]
        objects = make_objects(shapes, colours, grid_boxes(rng, len(shapes), SQUARE, (4, 4), 14, 20))
        scene = {"size": list(SQUARE), "background": background, "objects": objects,
                 "query": {"task": task, "shape": target}}
        question = f"How many {plural(target)} are there?"
        answer, options = str(count), [str(v) for v in range(1, MAX_COUNT + 1)]
        ignore = f", ignoring the {n_decoys} {decoy if n_decoys == 1 else plural(decoy)}" if n_decoys else ""
        steps = ", ".join(str(i) for i in range(1, count + 1))
        noun = target if count == 1 else plural(target)
        rationale = (f"I count the {plural(target)}{ignore}: {steps}. There {'is' if count == 1 else 'are'} "
                     f"{count} {noun}. The answer is \\boxed{{{count}}}.")
    else:
        answer = rng.choice(("left", "right"))
        more = rng.randint(3, 8)
        counts = {"left": more, "right": rng.randint(1, more - 2)}
        if answer == "right":
            counts = {"left": counts["right"], "right": counts["left"]}
        colour = rng.choice(sorted(COLOURS))
        objects = []
        for side, offset in (("left", 0), ("right", 64)):
            for col, row in (divmod(c, 4)[::-1] for c in rng.sample(range(16), counts[side])):
                x0, y0, x1, y1 = cell_box(rng, col, row, (64, 64), (4, 4), 8, 11)
                objects.append({"shape": "circle", "colour": colour, "box": [x0 + offset, y0, x1 + offset, y1]})
        scene = {"size": list(WIDE), "background": background, "objects": objects, "divider": 64,
                 "query": {"task": task}}
        question = "Which side has more dots, left or right?"
        options = ["left", "right"]
        hi, lo = max(counts.values()), min(counts.values())
        rationale = (f"The left side has {counts['left']} dots and the right side has {counts['right']} dots. "
                     f"{hi} > {lo}, so the {answer} side has more. The answer is \\boxed{{{answer}}}.")
    return Sample(DOMAIN, task, question, answer, scene, options, "exact", rationale=rationale)


def render(scene: dict[str, Any]) -> list[Image.Image]:
    """Draw the expression, or the shapes (and the divider line of `compare`)."""
    image, draw = canvas(*scene["size"], tuple(scene["background"]))
    if "text" in scene:
        draw_text(draw, tuple(scene["xy"]), scene["text"], 36, tuple(scene["ink"]))
    for obj in scene.get("objects", []):
        draw_shape(draw, obj["shape"], tuple(obj["box"]), COLOURS[obj["colour"]])
    if "divider" in scene:
        x = scene["divider"]
        draw.line((x, 0, x, scene["size"][1]), fill=(60, 60, 60), width=2)
    return [image]


def solve(scene: dict[str, Any]) -> str:
    """Evaluate the drawn expression, count the shapes, or compare the two halves."""
    task = scene["query"]["task"]
    if task == "arithmetic":
        a, op, b = scene["text"].split()
        return str(int(a) + int(b) if op == "+" else int(a) - int(b))
    if task == "count":
        return str(sum(o["shape"] == scene["query"]["shape"] for o in scene["objects"]))
    left = sum(centre(o["box"])[0] < scene["divider"] for o in scene["objects"])
    return "left" if left > len(scene["objects"]) - left else "right"


def generate(rng_or_seed: int | random.Random) -> Sample:
    """One reasoning sample (images rendered)."""
    return build_sample(plan, render, rng_or_seed)
