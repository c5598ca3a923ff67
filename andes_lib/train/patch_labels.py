"""Dense scene parsing: the stand-in for a pre-trained vision encoder (ANDESVL.md §1, SPEC §1.3).

AndesVL starts from SigLIP2 / AIMv2, encoders that already know what is in an image; SigLIP2 adds dense and
localisation objectives (LocCa captioning with boxes, self-distillation on patches) so its patch features say
*what* is *where*. The nano vision tower starts random, and learning shapes through the language-model loss
alone is slow (in our runs, a single-object "what shape is it?" was at about 50% after 300 VLM steps). The `vision`
stage gives it the same kind of start cheaply: every patch of a synthetic image is labelled with the shape and
the colour of the object that covers it, and with the character of text written over it (OCR, as LocCa's
captioning teaches SigLIP2 to read), or background; three linear heads on the vision tower's patch features learn
them. A step costs the vision tower only (no LLM), and every patch is a training signal.

The labels come from the drawing itself: the row's generator renders its scene again under `render.recording()`,
and each shape and each character's ink box is drawn again into a mask, so labels and pixels agree by
construction, for every generator. The heads are not part of the final model: they
are saved beside it (`HEAD_FILE`) for held-out checks and figures (`load_labeler`).

When the stage also trains the projector (`code_weight` > 0), the projector learns, on detached tower features, to
send each 2x2 token as a fixed code of the object (or character) under it (`patch_label_loss`): the object then
dominates the rows the LLM receives, as a semantic encoder's features would (`03` sections 7-8).
"""

from __future__ import annotations

import collections
import json
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from torch import nn

from ..data.multilingual import WORDS
from ..data.registry import GENERATORS
from ..data.render import COLOURS, SHAPES, draw_shape, font_for, recording
from ..model.vision import block_order_coords
from ..processing.image import patchify, resize_and_pad

SHAPE_CLASSES: tuple[str, ...] = ("background", *SHAPES)
COLOUR_CLASSES: tuple[str, ...] = ("background", *sorted(COLOURS))
COLOUR_NAMES = {rgb: name for name, rgb in COLOURS.items()}
# Every character the generators write: digits, Latin letters, price and arithmetic signs, the Chinese signs.
GLYPH_CLASSES: tuple[str, ...] = ("background", "other", *string.digits, *string.ascii_uppercase,
                                  *string.ascii_lowercase, *"$+-", *sorted(set("".join(WORDS["zh"]))))
GLYPH_INDEX = {ch: k for k, ch in enumerate(GLYPH_CLASSES) if k > 1}
MAX_ELEMENTS = 255
LABELS: tuple[str, ...] = ("shape_labels", "colour_labels", "glyph_labels")
MIN_COVER = 0.25  # share of a patch's pixels an object must cover to give the patch its label
HEAD_PREFIX = "patch_label_head."  # where the head sits on the model during the stage (checkpoints include it)
HEAD_FILE = "patch_label_head.safetensors"  # the head beside the final artifact, for inspection
CODE_SEED = 0  # seed of the fixed per-class codes (`PatchLabelHead`)


def drawn_elements(row: dict[str, Any]) -> list[tuple[tuple[int, int], list[dict[str, Any]]]]:
    """(size, elements) per image of a dataset row: its generator renders the row's scene again while
    `render.recording()` lists every shape and line of text drawn on each image, in drawing order."""
    domain = row.get("domain")
    if domain not in GENERATORS:
        raise ValueError(f"patch labels need the row's 'domain' (one of {list(GENERATORS)}), got {domain!r}")
    scene = json.loads(row["scene"]) if isinstance(row["scene"], str) else row["scene"]
    with recording() as calls:
        images = GENERATORS[domain].render(scene)
    return [(image.size, [c for c in calls if c["image"] is image]) for image in images]


def glyph_boxes(text: dict[str, Any]) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(character, ink box) of every visible character of a recorded line of text, in image coordinates."""
    font, chars, anchor = font_for(text["text"], text["size"]), text["text"], text["anchor"]
    x, y = text["xy"]
    x -= {"l": 0.0, "m": 0.5, "r": 1.0}[anchor[0]] * font.getlength(chars)  # the line's left edge
    boxes = []
    for i, ch in enumerate(chars):
        if ch.isspace():
            continue
        left = x + font.getlength(chars[:i])
        x0, y0, x1, y1 = font.getbbox(ch, anchor="l" + anchor[1], stroke_width=text["stroke"])
        boxes.append((ch, (left + x0, y + y0, left + x1, y + y1)))
    return boxes


def label_maps(image_size: tuple[int, int], elements: Sequence[dict[str, Any]], size: tuple[int, int],
               patch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shape, colour, glyph) ids per patch, each (rows, cols), for an image of `image_size` drawn from `elements`
    (`drawn_elements`), as the processor sizes it to `size`. A shape labels its shape and colour; a character of
    text its glyph and, when the ink is a named colour, that colour. Later elements cover earlier ones."""
    mask = Image.new("L", image_size, 0)
    draw = ImageDraw.Draw(mask)
    labels: list[tuple[int, int, int]] = []
    for element in elements:
        fill = tuple(element["fill"])
        colour = COLOUR_CLASSES.index(COLOUR_NAMES[fill]) if fill in COLOUR_NAMES else 0
        if element["kind"] == "shape":
            parts = [(element["shape"], element["box"], (SHAPE_CLASSES.index(element["shape"]), colour, 0))]
        else:
            parts = [("box", box, (0, colour, glyph_id(ch))) for ch, box in glyph_boxes(element)]
        for kind, box, label in parts:
            if len(labels) == MAX_ELEMENTS:
                break  # the mask holds 255 ids; later elements stay unlabelled (no generator draws that many)
            labels.append(label)
            if kind == "box":
                draw.rectangle(box, fill=len(labels))
            else:
                draw_shape(draw, kind, box, len(labels))
    mask = resize_and_pad(mask, size, 0, Image.Resampling.NEAREST)  # the processor's geometry, padding included
    w, h = size
    ids = np.asarray(mask).reshape(h // patch_size, patch_size, w // patch_size, patch_size).transpose(0, 2, 1, 3)
    ids = ids.reshape(h // patch_size, w // patch_size, -1)
    maps = np.zeros((3, *ids.shape[:2]), dtype=np.int64)
    for k, label in enumerate(labels, start=1):
        covered = (ids == k).mean(-1) >= MIN_COVER
        maps[:, covered] = np.asarray(label)[:, None]
    return maps[0], maps[1], maps[2]


def glyph_id(ch: str) -> int:
    """The glyph class of a character ("other" for characters outside GLYPH_CLASSES)."""
    return GLYPH_INDEX.get(ch, 1)


def block_order(grid: np.ndarray) -> torch.Tensor:
    """A (rows, cols) map flattened in the vision tower's 2x2-block patch order (see `processing.image`)."""
    labels = torch.as_tensor(grid)[None].float()  # (1, rows, cols): one channel, patch size 1
    return patchify(labels, 1).reshape(-1).long()


def collate_patch_labels(processor: Any, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Packed pixels of every image of `rows`, the matching per-patch shape, colour and glyph labels, and
    `text_images` (True on every patch of an image that shows text)."""
    images, drawn = [], []
    for row in rows:
        row_drawn = drawn_elements(row)
        if [size for size, _ in row_drawn] != [image.size for image in row["images"]]:
            raise ValueError(f"the {row['domain']} scene renders {len(row_drawn)} image(s) that do not match the "
                             f"row's {len(row['images'])} image(s): was the row made by another generator version?")
        images += list(row["images"])
        drawn += row_drawn
    batch = processor.image_processor(images, return_tensors="pt")
    p = processor.image_processor.patch_size
    maps: dict[str, list[torch.Tensor]] = {k: [] for k in LABELS}
    for (image_size, elements), (gh, gw) in zip(drawn, batch["image_grid_hw"].tolist(), strict=True):
        for key, grid in zip(LABELS, label_maps(image_size, elements, (gw * p, gh * p), p), strict=True):
            maps[key].append(block_order(grid))
    text = [torch.full_like(g, bool(g.any()), dtype=torch.bool) for g in maps["glyph_labels"]]  # per image
    return {"pixel_values": batch["pixel_values"], "image_grid_hw": batch["image_grid_hw"],
            **{key: torch.cat(grids) for key, grids in maps.items()}, "text_images": torch.cat(text)}


class PatchLabelHead(nn.Module):
    """Three linear classifiers on each patch feature, shape (7 classes), colour (7) and glyph, and fixed codes.

    The codes are one fixed random vector per shape, per colour and per glyph at the LLM's width (RMS 1/sqrt(2)
    each, seeded; the background glyph's is zero): what a perfect teacher would send the LLM for an object or a
    character (`code_target`, used when the stage warms the projector).
    """

    def __init__(self, hidden_size: int, code_size: int = 0):
        super().__init__()
        self.shape = nn.Linear(hidden_size, len(SHAPE_CLASSES))
        self.colour = nn.Linear(hidden_size, len(COLOUR_CLASSES))
        self.glyph = nn.Linear(hidden_size, len(GLYPH_CLASSES))
        g = torch.Generator().manual_seed(CODE_SEED)
        codes = torch.randn(len(SHAPE_CLASSES) + len(COLOUR_CLASSES), code_size, generator=g) / 2 ** 0.5
        glyph_codes = torch.randn(len(GLYPH_CLASSES), code_size, generator=g) / 2 ** 0.5
        glyph_codes[0] = 0.0
        self.register_buffer("shape_codes", codes[:len(SHAPE_CLASSES)].clone(), persistent=False)
        self.register_buffer("colour_codes", codes[len(SHAPE_CLASSES):].clone(), persistent=False)
        self.register_buffer("glyph_codes", glyph_codes, persistent=False)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.shape(features), self.colour(features), self.glyph(features)

    def code_target(self, shape_ids: torch.Tensor, colour_ids: torch.Tensor, glyph_ids: torch.Tensor
                    ) -> torch.Tensor:
        """The row a perfect teacher sends for each token: the codes of its shape, its colour and its glyph."""
        return self.shape_codes[shape_ids] + self.colour_codes[colour_ids] + self.glyph_codes[glyph_ids]


class PatchLabeler(nn.Module):
    """Vision tower + head (+ the projector, when the stage warms it) as one module, so `accelerate` wraps and syncs
    exactly what the stage trains."""

    def __init__(self, vision_tower: nn.Module, head: PatchLabelHead, projector: nn.Module | None = None):
        super().__init__()
        self.vision_tower, self.head, self.projector = vision_tower, head, projector

    def forward(self, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(shape, colour, glyph logits) per patch, and the projector's rows per token (None without a projector).
        The projector reads detached features: its code term shapes what the LLM will receive, not the tower."""
        features = self.vision_tower(pixel_values, image_grid_hw).last_hidden_state
        rows = self.projector(features.detach()) if self.projector is not None else None
        return *self.head(features), rows


def token_labels(patch_labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(shape id, colour id, glyph id) per visual token: the most common object or character label of its 4
    patches (0: background; glyphs are 0 when the labels have none)."""
    s, c = patch_labels["shape_labels"].view(-1, 4), patch_labels["colour_labels"].view(-1, 4)
    g = patch_labels.get("glyph_labels", torch.zeros_like(patch_labels["shape_labels"])).view(-1, 4)
    out = torch.zeros(3, len(s), dtype=torch.long)
    for i in range(len(s)):
        found = [(int(a), int(b), int(d)) for a, b, d in zip(s[i], c[i], g[i], strict=True) if a > 0 or d > 0]
        if found:
            out[:, i] = torch.tensor(collections.Counter(found).most_common(1)[0][0])
    return out[0], out[1], out[2]


def attach_head(model: nn.Module, warm_projector: bool = False) -> PatchLabeler:
    """Give `model` a fresh head as `model.patch_label_head` and return what the stage trains: (vision tower, head)
    and, with `warm_projector`, the projector."""
    tower = model.model.vision_tower
    model.patch_label_head = PatchLabelHead(tower.config.hidden_size, model.config.text_config.hidden_size)
    return PatchLabeler(tower, model.patch_label_head, model.model.projector if warm_projector else None)


def load_labeler(artifact: str | Path) -> tuple[PatchLabeler, Any]:
    """(vision tower + trained head, processor) of a `vision` stage artifact, for held-out checks and figures."""
    from transformers import AutoModelForImageTextToText

    from ..processing.processor import AndesVLProcessor

    artifact = Path(artifact)
    if not (artifact / HEAD_FILE).is_file():
        raise FileNotFoundError(f"{artifact} has no {HEAD_FILE}: it is not the artifact of a patch-label stage")
    model = AutoModelForImageTextToText.from_pretrained(str(artifact), dtype=torch.float32)
    labeler = PatchLabeler(model.model.vision_tower, PatchLabelHead(model.config.vision_config.hidden_size))
    labeler.head.load_state_dict(load_file(str(artifact / HEAD_FILE)))
    return labeler.eval(), AndesVLProcessor.from_pretrained(str(artifact))


def n_labels(batch: dict[str, torch.Tensor]) -> int:
    """Labels a batch trains: shape and colour on every patch, glyph on the patches of images that show text (on
    scenes of shapes a glyph term only pulls the tower towards "no text", which cost 11 points of patch shape accuracy
    over the 800 steps of `vision`: `03` section 7)."""
    return 2 * batch["shape_labels"].numel() + int(batch["text_images"].sum())


def patch_label_loss(outputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor],
                     head: PatchLabelHead, code_weight: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of the label maps (glyph on images with text only: `n_labels`), plus `code_weight` x the
    summed squared distance (mean over the width) of each projector row from its object's code (the loop divides by
    the number of patch labels).

    Cross-entropy makes shape and colour *decodable* from the patches, yet the object stays a small share of what the
    projector sends (36-49% of the variance of object tokens in our runs) and the LLM did not find it in a CPU budget;
    with the rows pulled onto the codes it is about 90%, as in the oracle that learns (`03` sections 7-8).
    """
    (shape, colour, glyph), rows = outputs[:3], outputs[3]
    text = batch["text_images"]
    loss = (nn.functional.cross_entropy(shape.float(), batch["shape_labels"], reduction="sum")
            + nn.functional.cross_entropy(colour.float(), batch["colour_labels"], reduction="sum")
            + nn.functional.cross_entropy(glyph[text].float(), batch["glyph_labels"][text], reduction="sum"))
    if code_weight:
        if rows is None:
            raise ValueError("a code_weight needs the projector's rows: attach the head with warm_projector=True")
        target = head.code_target(*token_labels(batch)).to(rows.device)
        loss = loss + code_weight * (rows.float() - target).pow(2).mean(-1).sum()
    return loss


@torch.no_grad()
def predict_label_maps(labeler: PatchLabeler, processor: Any, images: Sequence[Image.Image], label: str = "shape"
                       ) -> list[torch.Tensor]:
    """The predicted class of every patch, one (rows, cols) map per image: indices into SHAPE_CLASSES
    (`label="shape"`), COLOUR_CLASSES ("colour") or GLYPH_CLASSES ("glyph")."""
    heads = ("shape", "colour", "glyph")
    if label not in heads:
        raise ValueError(f"label must be one of {heads}, got {label!r}")
    batch = processor.image_processor(list(images), return_tensors="pt")
    pred = labeler(batch["pixel_values"], batch["image_grid_hw"])[heads.index(label)].argmax(-1)
    maps, start = [], 0
    for gh, gw in batch["image_grid_hw"].tolist():
        rows, cols = block_order_coords(gh, gw)
        grid = torch.zeros(gh, gw, dtype=torch.long)
        grid[rows, cols] = pred[start:start + gh * gw]
        maps.append(grid)
        start += gh * gw
    return maps


@torch.no_grad()
def patch_label_accuracy(labeler: PatchLabeler, processor: Any, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Held-out accuracy on object patches (shape, colour) and on background patches."""
    batch = collate_patch_labels(processor, rows)
    shape_logits, colour_logits, glyph_logits, _ = labeler(batch["pixel_values"], batch["image_grid_hw"])
    shape, colour, glyph = shape_logits.argmax(-1), colour_logits.argmax(-1), glyph_logits.argmax(-1)
    obj, text = batch["shape_labels"] > 0, batch["glyph_labels"] > 0
    return {"shape": float((shape[obj] == batch["shape_labels"][obj]).float().mean()),
            "colour": float((colour[obj] == batch["colour_labels"][obj]).float().mean()),
            "glyph": float((glyph[text] == batch["glyph_labels"][text]).float().mean()) if text.any() else float("nan"),
            "background": float((shape[~obj & ~text] == 0).float().mean()),
            "object_patches": int(obj.sum()), "glyph_patches": int(text.sum()), "patches": int(obj.numel())}
