"""Drawing helpers shared by the synthetic generators: palette, shapes, fonts and layout (ANDESVL.md §3).

Everything here is a pure function of its arguments, so an image is a pure function of its scene.
Latin text uses the font bundled with Pillow (always present); Chinese text needs a real CJK font, found on
disk (Debian package `fonts-wqy-microhei`) or named by the `ANDES_CJK_FONT` environment variable.

`recording()` lists every shape and every line of text the helpers draw, with the image they land on: the dense
labels of the `vision` stage (`train.patch_labels`) are drawn again from that list, for any generator.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (30, 160, 60),
    "blue": (40, 90, 225),
    "yellow": (235, 195, 20),
    "purple": (145, 60, 190),
    "orange": (245, 125, 20),
}
COLOURS_ZH: dict[str, str] = {
    "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
BASIC_SHAPES: tuple[str, ...] = SHAPES[:4]
SHAPES_ZH: dict[str, str] = {
    "circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "cross": "十字形", "diamond": "菱形",
}
BACKGROUNDS: tuple[RGB, ...] = ((255, 255, 255), (246, 246, 240), (238, 243, 250), (250, 244, 234))
INK: tuple[RGB, ...] = ((20, 20, 20), (30, 40, 90), (80, 20, 20), (20, 70, 40))

CJK_FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
)


_RECORDING: ContextVar[list[dict[str, Any]] | None] = ContextVar("andes_render_recording", default=None)


@contextmanager
def recording() -> Iterator[list[dict[str, Any]]]:
    """Inside the block, `draw_shape` and `draw_text` append what they draw to the yielded list, in drawing order:
    `{"image", "kind": "shape", "shape", "box", "fill"}` or `{"image", "kind": "text", "text", "xy", "size",
    "anchor", "fill", "stroke"}`, where `image` is the PIL image drawn on."""
    calls: list[dict[str, Any]] = []
    token = _RECORDING.set(calls)
    try:
        yield calls
    finally:
        _RECORDING.reset(token)


def _record(draw: ImageDraw.ImageDraw, **call: Any) -> None:
    calls = _RECORDING.get()
    if calls is not None:
        calls.append({"image": getattr(draw, "_image", None), **call})


def plural(shape: str) -> str:
    """English plural of a shape name ("cross" -> "crosses")."""
    return shape + ("es" if shape.endswith("s") else "s")


@lru_cache(maxsize=None)
def latin_font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font at `size` px (no system font needed)."""
    return ImageFont.load_default(size=size)


def find_cjk_font() -> Path:
    """Path of an installed CJK font; raises FileNotFoundError naming the package to install."""
    explicit = os.environ.get("ANDES_CJK_FONT")
    candidates = ([explicit] if explicit else []) + list(CJK_FONT_CANDIDATES)
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "No CJK font found for the multilingual generator (looked in: " + ", ".join(candidates) + "). "
        "Install the Debian package fonts-wqy-microhei (`apt-get install -y fonts-wqy-microhei`) "
        "or point ANDES_CJK_FONT at a .ttf/.ttc/.otf font that covers Chinese."
    )


@lru_cache(maxsize=None)
def cjk_font(size: int) -> ImageFont.FreeTypeFont:
    """The CJK font at `size` px (basic layout, so the output does not depend on libraqm)."""
    return ImageFont.truetype(str(find_cjk_font()), size, layout_engine=ImageFont.Layout.BASIC)


def is_cjk(text: str) -> bool:
    """True when `text` contains a CJK ideograph or CJK punctuation."""
    return any("\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in text)


def font_for(text: str, size: int) -> ImageFont.FreeTypeFont:
    """The CJK font for Chinese text, else the bundled Latin font."""
    return cjk_font(size) if is_cjk(text) else latin_font(size)


def canvas(width: int, height: int, background: RGB) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A new RGB image and its drawing context."""
    image = Image.new("RGB", (width, height), background)
    return image, ImageDraw.Draw(image)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, fill: RGB) -> None:
    """Draw a filled shape inscribed in `box` = (x0, y0, x1, y1)."""
    _record(draw, kind="shape", shape=shape, box=tuple(box), fill=fill)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        t = (x1 - x0) / 3
        draw.rectangle((x0 + t, y0, x1 - t, y1), fill=fill)
        draw.rectangle((x0, y0 + t, x1, y1 - t), fill=fill)
    elif shape == "star":
        r_out, r_in = (x1 - x0) / 2, (x1 - x0) / 5
        points = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(angle), cy + r * math.sin(angle) + r_out * 0.08))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, fill: RGB,
              anchor: str = "mm", bold: bool = True) -> None:
    """Draw `text` at `xy` (anchor as in Pillow); Latin text gets a 1 px stroke so it reads at small sizes."""
    stroke = 1 if bold and not is_cjk(text) else 0
    _record(draw, kind="text", text=text, xy=tuple(xy), size=size, anchor=anchor, fill=fill, stroke=stroke)
    draw.text(xy, text, font=font_for(text, size), fill=fill, anchor=anchor, stroke_width=stroke, stroke_fill=fill)


def text_width(text: str, size: int) -> int:
    """Rendered width of `text` in px."""
    left, _, right, _ = font_for(text, size).getbbox(text)
    return int(right - left)


def grid_boxes(rng: random.Random, n: int, size: tuple[int, int], grid: tuple[int, int],
               min_side: int, max_side: int) -> list[Box]:
    """`n` square boxes in distinct random cells of a `grid` (cols, rows) over an image of `size` (w, h)."""
    cols, rows = grid
    if n > cols * rows:
        raise ValueError(f"cannot place {n} objects in a {cols}x{rows} grid")
    cells = rng.sample(range(cols * rows), n)
    return [cell_box(rng, c % cols, c // cols, size, grid, min_side, max_side) for c in cells]


def cell_box(rng: random.Random, col: int, row: int, size: tuple[int, int], grid: tuple[int, int],
             min_side: int, max_side: int) -> Box:
    """A square box of random side in [min_side, max_side], jittered inside cell (col, row)."""
    cw, ch = size[0] // grid[0], size[1] // grid[1]
    side = rng.randint(min_side, min(max_side, cw - 2, ch - 2))
    x0 = col * cw + rng.randint(1, cw - side - 1)
    y0 = row * ch + rng.randint(1, ch - side - 1)
    return (x0, y0, x0 + side, y0 + side)


def centre(box: Box | list[int]) -> tuple[float, float]:
    """Centre point of a box."""
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
