"""Text-rich images: signs, price tags, short receipts, coloured words (ANDESVL.md §3, TextVQA/OCRBench group).

Text is large (18-30 px) so a patch-8 encoder can read it. Tasks: `sign` (read a one-word sign, 24 words),
`price` (read a two-digit price), `receipt` (find an item's price on a three-line receipt) and `word_color`
(which word is written in a given colour).
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from .base import Sample, build_sample
from .render import BACKGROUNDS, COLOURS, INK, canvas, draw_text

DOMAIN = "text_rich"
TASKS: tuple[str, ...] = ("sign", "price", "receipt", "word_color")
SIGN_WORDS: tuple[str, ...] = (
    "OPEN", "STOP", "EXIT", "SALE", "CAFE", "BANK", "TAXI", "HOTEL", "PARK", "BUS", "SHOP", "ZOO",
    "GYM", "FOOD", "BOOK", "GIFT", "TOYS", "MILK", "FISH", "PIZZA", "WAY", "POOL", "INFO", "KEYS",
)
ITEMS: tuple[str, ...] = ("TEA", "CAKE", "MILK", "SOUP", "RICE", "PIE", "JAM", "EGGS", "BUN", "CORN")
PLATES: tuple[str, ...] = ("red", "green", "blue", "purple")  # dark enough for white letters
SIGN_SIZE, PAGE_SIZE = (128, 64), (128, 96)


def plan(rng: random.Random) -> Sample:
    """Pick a task and its answer uniformly, then lay out the text that shows it."""
    task = rng.choice(TASKS)
    background = list(rng.choice(BACKGROUNDS))
    if task == "sign":
        word, plate = rng.choice(SIGN_WORDS), rng.choice(PLATES)
        lines = [{"text": word, "xy": [64 + rng.randint(-8, 8), 32 + rng.randint(-4, 4)], "size": 26,
                  "ink": [255, 255, 255]}]
        scene = {"size": list(SIGN_SIZE), "background": background, "plate": [6, 10, 122, 54, plate],
                 "lines": lines, "query": {"task": task}}
        question, answer, options, metric = "What does the sign say?", word, list(SIGN_WORDS), "exact"
    elif task == "price":
        price = rng.randint(10, 99)
        lines = [{"text": f"${price}", "xy": [64 + rng.randint(-12, 12), 32 + rng.randint(-5, 5)], "size": 30,
                  "ink": list(rng.choice(INK))}]
        scene = {"size": list(SIGN_SIZE), "background": background, "lines": lines, "query": {"task": task}}
        question, answer, metric = "What is the price on the tag?", str(price), "exact"
        options = [str(v) for v in range(10, 100)]
    elif task == "receipt":
        items = rng.sample(ITEMS, 3)
        prices = [rng.randint(1, 9) for _ in items]
        ink = list(rng.choice(INK))
        lines = [{"text": f"{item} {p}", "xy": [12, 18 + 30 * n], "size": 20, "ink": ink, "anchor": "lm"}
                 for n, (item, p) in enumerate(zip(items, prices, strict=True))]
        target = rng.randrange(3)
        scene = {"size": list(PAGE_SIZE), "background": background, "lines": lines,
                 "query": {"task": task, "item": items[target]}}
        question, answer, metric = f"How much is the {items[target]}?", str(prices[target]), "exact"
        options = [str(v) for v in range(1, 10)]
    else:
        n = rng.randint(2, 3)
        words, colours = rng.sample(SIGN_WORDS, n), rng.sample(sorted(COLOURS), n)
        lines = [{"text": w, "xy": [64 + rng.randint(-20, 20), 18 + 30 * k], "size": 22, "ink": list(COLOURS[c])}
                 for k, (w, c) in enumerate(zip(words, colours, strict=True))]
        target = rng.randrange(n)
        scene = {"size": list(PAGE_SIZE), "background": background, "lines": lines,
                 "query": {"task": task, "colour": colours[target]}}
        question, answer, options, metric = (f"Which word is written in {colours[target]}?", words[target],
                                             list(SIGN_WORDS), "exact")
    return Sample(DOMAIN, task, question, answer, scene, options, metric)


def render(scene: dict[str, Any]) -> list[Image.Image]:
    """Draw the optional sign plate, then every line of text."""
    image, draw = canvas(*scene["size"], tuple(scene["background"]))
    if "plate" in scene:
        x0, y0, x1, y1, colour = scene["plate"]
        draw.rounded_rectangle((x0, y0, x1, y1), radius=6, fill=COLOURS[colour])
    for line in scene["lines"]:
        draw_text(draw, tuple(line["xy"]), line["text"], line["size"], tuple(line["ink"]), line.get("anchor", "mm"))
    return [image]


def solve(scene: dict[str, Any]) -> str:
    """Read the answer back from the drawn lines."""
    query, lines = scene["query"], scene["lines"]
    if query["task"] == "sign":
        return lines[0]["text"]
    if query["task"] == "price":
        return lines[0]["text"].lstrip("$")
    if query["task"] == "receipt":
        return next(line["text"].split()[1] for line in lines if line["text"].split()[0] == query["item"])
    return next(line["text"] for line in lines if tuple(line["ink"]) == COLOURS[query["colour"]])


def generate(rng_or_seed: int | random.Random) -> Sample:
    """One text-rich sample (images rendered)."""
    return build_sample(plan, render, rng_or_seed)
