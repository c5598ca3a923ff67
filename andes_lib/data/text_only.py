"""Text-only data, mixed into joint pre-training to keep the language ability (ANDESVL.md §2, stage 2).

Tasks, in English or Chinese: `arithmetic` (two-digit sums and differences), `fact` (short general facts),
`translate` (colour, shape and number words between English and Chinese) and `sequence` (next number).
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from .base import Sample, build_sample
from .render import COLOURS_ZH, SHAPES_ZH

DOMAIN = "text_only"
TASKS: tuple[str, ...] = ("arithmetic", "fact", "translate", "sequence")
# (question en, answer en, question zh, answer zh)
FACTS: tuple[tuple[str, str, str, str], ...] = (
    ("How many days are in a week?", "7", "一周有几天？", "7"),
    ("How many legs does a cat have?", "4", "猫有几条腿？", "4"),
    ("How many sides does a triangle have?", "3", "三角形有几条边？", "3"),
    ("How many sides does a square have?", "4", "正方形有几条边？", "4"),
    ("How many months are in a year?", "12", "一年有几个月？", "12"),
    ("How many hours are in a day?", "24", "一天有几个小时？", "24"),
    ("What colour is grass?", "green", "草是什么颜色？", "绿色"),
    ("What colour is the sky on a clear day?", "blue", "晴天的天空是什么颜色？", "蓝色"),
    ("What colour is a ripe banana?", "yellow", "熟香蕉是什么颜色？", "黄色"),
    ("What colour is snow?", "white", "雪是什么颜色？", "白色"),
    ("What is the capital of France?", "Paris", "法国的首都是哪里？", "巴黎"),
    ("What is the capital of China?", "Beijing", "中国的首都是哪里？", "北京"),
    ("What is the capital of Japan?", "Tokyo", "日本的首都是哪里？", "东京"),
    ("Which animal says meow?", "cat", "哪种动物会喵喵叫？", "猫"),
    ("Which animal barks?", "dog", "哪种动物会汪汪叫？", "狗"),
    ("What do bees make?", "honey", "蜜蜂酿什么？", "蜂蜜"),
    ("What is frozen water called?", "ice", "结冰的水叫什么？", "冰"),
    ("Which planet do we live on?", "Earth", "我们住在哪个星球上？", "地球"),
    ("What rises in the east?", "the sun", "什么从东方升起？", "太阳"),
    ("What do you use to write on paper?", "a pen", "在纸上写字用什么？", "笔"),
)
NUMBERS_ZH: dict[str, str] = {"one": "一", "two": "二", "three": "三", "four": "四", "five": "五",
                              "six": "六", "seven": "七", "eight": "八", "nine": "九", "ten": "十"}
LEXICON: dict[str, str] = COLOURS_ZH | SHAPES_ZH | NUMBERS_ZH


def plan(rng: random.Random) -> Sample:
    """One text-only question with a short, checkable answer."""
    task, lang = rng.choice(TASKS), rng.choice(("en", "zh"))
    zh = lang == "zh"
    if task == "arithmetic":
        a, b, op = rng.randint(0, 99), rng.randint(0, 99), rng.choice("+-")
        a, b = (a, b) if op == "+" or a >= b else (b, a)
        value = a + b if op == "+" else a - b
        question = f"{a} {op} {b} 等于多少？" if zh else f"What is {a} {op} {b}?"
        answer, metric = str(value), "exact"
        options = [str(value + d) for d in (-10, -2, -1, 1, 2, 10)] + [answer]
        query: dict[str, Any] = {"a": a, "op": op, "b": b}
    elif task == "fact":
        k = rng.randrange(len(FACTS))
        question, answer = (FACTS[k][2], FACTS[k][3]) if zh else (FACTS[k][0], FACTS[k][1])
        options, metric, query = sorted({f[3] if zh else f[1] for f in FACTS}), "exact", {"fact": k}
    elif task == "translate":
        word = rng.choice(sorted(LEXICON))
        if zh:
            question, answer = f"把“{LEXICON[word]}”翻译成英文。", word
            options = sorted(LEXICON)
        else:
            question, answer = f"Translate '{word}' into Chinese.", LEXICON[word]
            options = sorted(LEXICON.values())
        metric, query = "exact", {"word": word}
    else:
        start, step = rng.randint(0, 20), rng.randint(1, 5)
        shown = [start + step * n for n in range(4)]
        listing = ", ".join(map(str, shown))
        question = f"下一个数是多少：{listing}？" if zh else f"What number comes next: {listing}?"
        answer, metric = str(start + step * 4), "exact"
        options = [str(start + step * 4 + d) for d in (-2, -1, 1, 2)] + [answer]
        query = {"start": start, "step": step}
    scene = {"query": {"task": task, "lang": lang} | query}
    return Sample(DOMAIN, task, question, answer, scene, options, metric, lang=lang)


def render(scene: dict[str, Any]) -> list[Image.Image]:
    """Text-only samples have no image."""
    return []


def solve(scene: dict[str, Any]) -> str:
    """Recompute the answer from the query."""
    q, zh = scene["query"], scene["query"]["lang"] == "zh"
    if q["task"] == "arithmetic":
        return str(q["a"] + q["b"] if q["op"] == "+" else q["a"] - q["b"])
    if q["task"] == "fact":
        return FACTS[q["fact"]][3 if zh else 1]
    if q["task"] == "translate":
        return q["word"] if zh else LEXICON[q["word"]]
    return str(q["start"] + 4 * q["step"])


def generate(rng_or_seed: int | random.Random) -> Sample:
    """One text-only sample (no images)."""
    return build_sample(plan, render, rng_or_seed)
