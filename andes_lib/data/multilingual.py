"""Multilingual: the same kinds of tasks asked and answered in Chinese or English (ANDESVL.md §3, MMMB/MTVQA).

Half the samples are Chinese. Tasks: `color`, `shape` and `count` on 96x96 shape scenes, and `read` (a sign
written in the question's language; Chinese signs are drawn with a real CJK font, see `render.find_cjk_font`).
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from .base import Sample, build_sample
from .general_vqa import make_objects
from .general_vqa import render as render_shapes
from .render import (BACKGROUNDS, BASIC_SHAPES, COLOURS, COLOURS_ZH, SHAPES_ZH, canvas, draw_text, grid_boxes,
                     plural)

DOMAIN = "multilingual"
TASKS: tuple[str, ...] = ("color", "shape", "count", "read")
LANGS: tuple[str, ...] = ("en", "zh")
WORDS: dict[str, tuple[str, ...]] = {
    "en": ("EXIT", "SHOP", "BANK", "PARK", "CAFE", "HOTEL", "TAXI", "BUS", "ZOO", "SCHOOL", "BOOKS", "MARKET"),
    "zh": ("出口", "商店", "银行", "停车", "咖啡", "酒店", "出租", "公交", "动物", "学校", "书店", "市场"),
}
SIZE, SIGN_SIZE = (96, 96), (128, 64)
MAX_COUNT = 5


def plan(rng: random.Random) -> Sample:
    """Pick a language, a task and its answer uniformly, then build the scene."""
    lang, task = rng.choice(LANGS), rng.choice(TASKS)
    zh = lang == "zh"
    background = list(rng.choice(BACKGROUNDS))
    colours, shapes = rng.sample(sorted(COLOURS), 3), rng.sample(BASIC_SHAPES, 3)
    if task in ("color", "shape"):
        n = rng.randint(2, 3)
        objects = make_objects(shapes[:n], colours[:n], grid_boxes(rng, n, SIZE, (3, 3), 20, 30))
        scene = {"size": list(SIZE), "background": background, "objects": objects}
        if task == "color":
            query = {"task": task, "shape": shapes[0]}
            question = f"图中的{SHAPES_ZH[shapes[0]]}是什么颜色？" if zh else f"What colour is the {shapes[0]}?"
            answer = COLOURS_ZH[colours[0]] if zh else colours[0]
            options = [COLOURS_ZH[c] for c in sorted(COLOURS)] if zh else sorted(COLOURS)
        else:
            query = {"task": task, "colour": colours[0]}
            question = f"{COLOURS_ZH[colours[0]]}的物体是什么形状？" if zh else f"What shape is the {colours[0]} object?"
            answer = SHAPES_ZH[shapes[0]] if zh else shapes[0]
            options = [SHAPES_ZH[s] for s in BASIC_SHAPES] if zh else list(BASIC_SHAPES)
    elif task == "count":
        count = rng.randint(1, MAX_COUNT)
        kinds = [shapes[0]] * count + [shapes[1]] * rng.randint(0, 2)
        boxes = grid_boxes(rng, len(kinds), SIZE, (4, 4), 14, 20)
        objects = make_objects(kinds, [rng.choice(sorted(COLOURS)) for _ in kinds], boxes)
        scene = {"size": list(SIZE), "background": background, "objects": objects}
        query = {"task": task, "shape": shapes[0]}
        question = f"图中有几个{SHAPES_ZH[shapes[0]]}？" if zh else f"How many {plural(shapes[0])} are there?"
        answer, options = str(count), [str(v) for v in range(1, MAX_COUNT + 1)]
    else:
        word = rng.choice(WORDS[lang])
        scene = {"size": list(SIGN_SIZE), "background": background, "plate": rng.choice(("red", "green", "blue")),
                 "text": word, "xy": [64 + rng.randint(-8, 8), 32 + rng.randint(-4, 4)]}
        query = {"task": task}
        question, answer, options = ("牌子上写的是什么？" if zh else "What does the sign say?"), word, list(WORDS[lang])
    scene["query"] = query | {"lang": lang}
    return Sample(DOMAIN, task, question, answer, scene, options, "exact", lang=lang)


def render(scene: dict[str, Any]) -> list[Image.Image]:
    """Shapes, or a sign plate with the word (CJK font for Chinese)."""
    if "text" not in scene:
        return render_shapes(scene)
    image, draw = canvas(*scene["size"], tuple(scene["background"]))
    draw.rounded_rectangle((6, 10, 122, 54), radius=6, fill=COLOURS[scene["plate"]])
    size = 32 if scene["query"]["lang"] == "zh" else 24
    draw_text(draw, tuple(scene["xy"]), scene["text"], size, (255, 255, 255))
    return [image]


def solve(scene: dict[str, Any]) -> str:
    """Answer from the scene, in the query's language."""
    query, zh = scene["query"], scene["query"]["lang"] == "zh"
    if query["task"] == "read":
        return scene["text"]
    objects = scene["objects"]
    if query["task"] == "count":
        return str(sum(o["shape"] == query["shape"] for o in objects))
    if query["task"] == "color":
        colour = next(o["colour"] for o in objects if o["shape"] == query["shape"])
        return COLOURS_ZH[colour] if zh else colour
    shape = next(o["shape"] for o in objects if o["colour"] == query["colour"])
    return SHAPES_ZH[shape] if zh else shape


def generate(rng_or_seed: int | random.Random) -> Sample:
    """One multilingual sample (images rendered)."""
    return build_sample(plan, render, rng_or_seed)
