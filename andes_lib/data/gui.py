"""GUI: synthetic phone screens (ANDESVL.md §3, ScreenSpot and the paper's AndesUI grounding/referring/QA).

A 112x192 px screen: a title bar, then 4-5 rows of buttons, text fields, switches and list items, sometimes
under a Yes/No dialog. Tasks: `ground` (locate an element; answer `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` on a
0-1000 grid, scored by IoU >= 0.5), `refer` (name the element at a box) and `action` (tap a switch or done).
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image, ImageDraw

from .base import Sample, box_string, build_sample
from .render import COLOURS, canvas, draw_text

DOMAIN = "gui"
TASKS: tuple[str, ...] = ("ground", "refer", "action")
SIZE = (112, 192)
ROW_HEIGHT = 24
LABELS: dict[str, tuple[str, ...]] = {
    "button": ("OK", "Cancel", "Send", "Save", "Back", "Next", "Login", "Delete", "Share", "Edit", "Buy", "Menu"),
    "field": ("Name", "Email", "Phone", "Search", "City", "Code"),
    "switch": ("WiFi", "GPS", "Sound", "Sync", "Alarm", "Dark"),
    "item": ("Inbox", "Photos", "Music", "Maps", "Notes", "Files"),
}
DIALOG_BUTTONS: tuple[str, str] = ("Yes", "No")
APPS: tuple[str, ...] = ("Mail", "Shop", "Notes", "Chat", "Photos", "Setup")
ROW_KINDS: tuple[str, ...] = ("button", "pair", "field", "switch", "item")
NOUN = {"button": "the {} button", "field": "the {} field", "switch": "the {} switch", "item": "{} in the list"}
FILLS: tuple[str, ...] = ("blue", "green", "red", "purple", "orange")


def layout(rng: random.Random, kinds: list[str]) -> list[dict[str, Any]]:
    """Elements for rows of the given kinds (jittered margins, row pitch and button widths; unique labels)."""
    pools = {kind: rng.sample(labels, len(labels)) for kind, labels in LABELS.items()}
    margin, rows = rng.randint(4, 14), len(kinds) - 1
    pitch = rng.randint(28, min(36, (SIZE[1] - 32 - ROW_HEIGHT) // rows))
    top = rng.randint(28, SIZE[1] - 4 - ROW_HEIGHT - rows * pitch)
    left, right = margin, SIZE[0] - margin
    elements = []
    for row, kind in enumerate(kinds):
        y0 = top + row * pitch
        y1 = y0 + ROW_HEIGHT
        if kind == "pair":
            mid = (left + right) // 2
            for x0, x1 in ((left, mid - 2), (mid + 2, right)):
                elements.append({"kind": "button", "label": pools["button"].pop(), "box": [x0, y0, x1, y1],
                                 "fill": rng.choice(FILLS)})
        elif kind == "button":
            width = rng.randint((right - left) // 2, right - left)
            x0 = left + rng.randint(0, right - left - width)
            elements.append({"kind": kind, "label": pools[kind].pop(), "box": [x0, y0, x0 + width, y1],
                             "fill": rng.choice(FILLS)})
        elif kind == "switch":
            elements.append({"kind": kind, "label": pools[kind].pop(), "box": [right - 26, y0 + 5, right, y0 + 19],
                             "label_x": left + 2, "on": rng.random() < 0.5})
        else:
            elements.append({"kind": kind, "label": pools[kind].pop(), "box": [left, y0, right, y1]})
    return elements


def plan(rng: random.Random) -> Sample:
    """Lay out a screen, then ask to locate an element, name one, or decide an action."""
    task = rng.choice(TASKS)
    kinds = [rng.choice(ROW_KINDS) for _ in range(rng.randint(4, 5))]
    if task != "ground":  # make sure the screen holds what the question needs
        kinds[rng.randrange(len(kinds))] = "switch" if task == "action" else rng.choice(("button", "field", "item"))
    elements = layout(rng, kinds)
    dialog = None
    if task == "ground" and rng.random() < 0.3:
        dx, dy = rng.randint(-8, 8), rng.randint(-40, 40)
        slots = ([20 + dx, 104 + dy, 52 + dx, 124 + dy], [60 + dx, 104 + dy, 92 + dx, 124 + dy])
        dialog = {"message": rng.choice(("Delete?", "Save?", "Quit?", "Buy?")),
                  "box": [14 + dx, 70 + dy, 98 + dx, 132 + dy],
                  "buttons": [{"kind": "button", "label": label, "box": box, "fill": "blue"}
                              for label, box in zip(DIALOG_BUTTONS, slots, strict=True)]}
    scene: dict[str, Any] = {"size": list(SIZE), "title": rng.choice(APPS), "bar": rng.choice(FILLS),
                             "elements": elements, "dialog": dialog}
    if task == "ground":
        visible = dialog["buttons"] if dialog else elements
        target = rng.choice(visible)
        scene["query"] = {"task": task, "kind": target["kind"], "label": target["label"]}
        question = f"Where is {NOUN[target['kind']].format(target['label'])}?"
        answer = box_string(target["box"], *SIZE)
        options, metric = [box_string(e["box"], *SIZE) for e in visible], "iou"
    elif task == "refer":
        target = rng.choice([e for e in elements if e["kind"] != "switch"])
        scene["query"] = {"task": task, "box": target["box"]}
        question = f"What is the text of the element at {box_string(target['box'], *SIZE)}?"
        answer, metric = target["label"], "exact"
        options = [label for kind in ("button", "field", "item") for label in LABELS[kind]]
    else:
        answer, want = rng.choice(("tap", "done")), rng.choice(("on", "off"))
        target = rng.choice([e for e in elements if e["kind"] == "switch"])
        target["on"] = (want == "on") == (answer == "done")
        scene["query"] = {"task": task, "label": target["label"], "want": want}
        question = f"Task: turn {want} {target['label']}. What should you do, tap or done?"
        options, metric = ["tap", "done"], "exact"
    return Sample(DOMAIN, task, question, answer, scene, options, metric)


def render(scene: dict[str, Any]) -> list[Image.Image]:
    """Draw the title bar, the rows and the optional dialog."""
    image, draw = canvas(*scene["size"], (250, 250, 250))
    draw.rectangle((0, 0, SIZE[0], 24), fill=COLOURS[scene["bar"]])
    draw_text(draw, (8, 12), scene["title"], 15, (255, 255, 255), anchor="lm")
    for e in scene["elements"]:
        draw_element(draw, e)
    if scene["dialog"]:
        image = Image.blend(image, Image.new("RGB", image.size, (0, 0, 0)), 0.45)
        draw = ImageDraw.Draw(image)
        dialog = scene["dialog"]
        draw.rounded_rectangle(dialog["box"], radius=6, fill=(255, 255, 255))
        draw_text(draw, ((dialog["box"][0] + dialog["box"][2]) / 2, dialog["box"][1] + 16), dialog["message"], 14,
                  (20, 20, 20))
        for button in dialog["buttons"]:
            draw_element(draw, button)
    return [image]


def draw_element(draw: ImageDraw.ImageDraw, e: dict[str, Any]) -> None:
    """One button, field, switch (with its label to the left) or list item."""
    x0, y0, x1, y1 = e["box"]
    mid = ((x0 + x1) / 2, (y0 + y1) / 2)
    if e["kind"] == "button":
        draw.rounded_rectangle(e["box"], radius=5, fill=COLOURS[e["fill"]])
        draw_text(draw, mid, e["label"], 13, (255, 255, 255))
    elif e["kind"] == "field":
        draw.rectangle(e["box"], fill=(255, 255, 255), outline=(150, 150, 150), width=2)
        draw_text(draw, (x0 + 6, mid[1]), e["label"], 13, (140, 140, 140), anchor="lm", bold=False)
    elif e["kind"] == "switch":
        draw_text(draw, (e["label_x"], mid[1]), e["label"], 13, (30, 30, 30), anchor="lm")
        draw.rounded_rectangle(e["box"], radius=7, fill=(40, 170, 70) if e["on"] else (190, 190, 190))
        kx = x1 - 13 if e["on"] else x0 + 1
        draw.ellipse((kx, y0 + 1, kx + 12, y1 - 1), fill=(255, 255, 255))
    else:
        draw_text(draw, (x0 + 2, mid[1]), e["label"], 13, (30, 30, 30), anchor="lm")
        draw.line((x0, y1 + 2, x1, y1 + 2), fill=(200, 200, 200), width=1)


def solve(scene: dict[str, Any]) -> str:
    """Find the queried element on the screen."""
    query = scene["query"]
    visible = scene["dialog"]["buttons"] if scene["dialog"] else scene["elements"]
    if query["task"] == "ground":
        hit = next(e for e in visible if e["kind"] == query["kind"] and e["label"] == query["label"])
        return box_string(hit["box"], *scene["size"])
    if query["task"] == "refer":
        return next(e["label"] for e in visible if e["box"] == query["box"])
    switch = next(e for e in visible if e["kind"] == "switch" and e["label"] == query["label"])
    return "done" if switch["on"] == (query["want"] == "on") else "tap"


def generate(rng_or_seed: int | random.Random) -> Sample:
    """One GUI sample (a rendered screen)."""
    return build_sample(plan, render, rng_or_seed)
