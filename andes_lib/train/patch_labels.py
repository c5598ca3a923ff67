"""Dense scene parsing: the stand-in for a pre-trained vision encoder (ANDESVL.md §1, SPEC §1.3).

AndesVL starts from SigLIP2 / AIMv2, encoders that already know what is in an image; SigLIP2 adds dense and
localisation objectives (LocCa captioning with boxes, self-distillation on patches) so its patch features say
*what* is *where*. The nano vision tower starts random, and learning shapes through the language-model loss
alone is slow (in our runs, a single-object "what shape is it?" was at about 50% after 300 VLM steps). The `vision`
stage gives it the same kind of start cheaply: every patch of a synthetic scene is labelled with the shape and
the colour of the object that covers it (or background), and two linear heads on the vision tower's patch
features learn them. A step costs the vision tower only (no LLM), and every patch is a training signal.

The labels come from the scene description itself: each object is drawn again into a mask with the generators'
own `draw_shape`, so labels and pixels agree by construction. The heads are not part of the final model: they
are saved beside it (`HEAD_FILE`) for held-out checks and figures (`load_labeler`).

When the stage also trains the projector (`code_weight` > 0), the projector learns, on detached tower features, to
send each 2x2 token as a fixed code of the object under it (`patch_label_loss`): the object then dominates the rows
the LLM receives, as a semantic encoder's features would (`03` sections 7-8).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from torch import nn

from ..data.render import COLOURS, SHAPES, draw_shape
from ..model.vision import block_order_coords
from ..processing.image import patchify, resize_and_pad

SHAPE_CLASSES: tuple[str, ...] = ("background", *SHAPES)
COLOUR_CLASSES: tuple[str, ...] = ("background", *sorted(COLOURS))
MIN_COVER = 0.25  # share of a patch's pixels an object must cover to give the patch its label
HEAD_PREFIX = "patch_label_head."  # where the head sits on the model during the stage (checkpoints include it)
HEAD_FILE = "patch_label_head.safetensors"  # the head beside the final artifact, for inspection
CODE_SEED = 0  # seed of the fixed per-class codes (`PatchLabelHead`)


def scene_panels(scene: dict[str, Any] | str) -> list[dict[str, Any]]:
    """The drawable panels of a scene (one per image): `{"size", "objects"}`; multi-image scenes have several."""
    scene = json.loads(scene) if isinstance(scene, str) else scene
    panels = scene.get("panels", [scene])
    for panel in panels:
        if "objects" not in panel or "size" not in panel:
            raise ValueError("patch labels need scenes of shapes (a 'size' and an 'objects' list per image); "
                             f"got keys {sorted(panel)}")
    return panels


def label_maps(panel: dict[str, Any], size: tuple[int, int], patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(shape ids, colour ids) per patch, each (rows, cols), for the panel as the processor sizes it to `size`."""
    width, height = panel["size"]
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for k, obj in enumerate(panel["objects"], start=1):  # later objects are drawn on top, as in the image
        draw_shape(draw, obj["shape"], tuple(obj["box"]), k)
    mask = resize_and_pad(mask, size, 0, Image.Resampling.NEAREST)  # the processor's geometry, padding included
    w, h = size
    ids = np.asarray(mask).reshape(h // patch_size, patch_size, w // patch_size, patch_size).transpose(0, 2, 1, 3)
    ids = ids.reshape(h // patch_size, w // patch_size, -1)
    shape, colour = np.zeros(ids.shape[:2], dtype=np.int64), np.zeros(ids.shape[:2], dtype=np.int64)
    for k, obj in enumerate(panel["objects"], start=1):
        covered = (ids == k).mean(-1) >= MIN_COVER
        shape[covered] = SHAPE_CLASSES.index(obj["shape"])
        colour[covered] = COLOUR_CLASSES.index(obj["colour"])
    return shape, colour


def block_order(grid: np.ndarray) -> torch.Tensor:
    """A (rows, cols) map flattened in the vision tower's 2x2-block patch order (see `processing.image`)."""
    labels = torch.as_tensor(grid)[None].float()  # (1, rows, cols): one channel, patch size 1
    return patchify(labels, 1).reshape(-1).long()


def collate_patch_labels(processor: Any, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Packed pixels of every image of `rows` and the matching per-patch shape and colour labels."""
    images, panels = [], []
    for row in rows:
        row_panels = scene_panels(row["scene"])
        if len(row_panels) != len(row["images"]):
            raise ValueError(f"a scene with {len(row_panels)} panels came with {len(row['images'])} images")
        images += list(row["images"])
        panels += row_panels
    batch = processor.image_processor(images, return_tensors="pt")
    p = processor.image_processor.patch_size
    shapes, colours = [], []
    for panel, (gh, gw) in zip(panels, batch["image_grid_hw"].tolist(), strict=True):
        shape, colour = label_maps(panel, (gw * p, gh * p), p)
        shapes.append(block_order(shape))
        colours.append(block_order(colour))
    return {"pixel_values": batch["pixel_values"], "image_grid_hw": batch["image_grid_hw"],
            "shape_labels": torch.cat(shapes), "colour_labels": torch.cat(colours)}


class PatchLabelHead(nn.Module):
    """Two linear classifiers on each patch feature, shape (7 classes) and colour (7 classes), and fixed codes.

    The codes are one fixed random vector per shape and per colour at the LLM's width (RMS 1/sqrt(2) each, seeded):
    what a perfect teacher would send the LLM for an object (`code_target`, used when the stage warms the projector).
    """

    def __init__(self, hidden_size: int, code_size: int = 0):
        super().__init__()
        self.shape = nn.Linear(hidden_size, len(SHAPE_CLASSES))
        self.colour = nn.Linear(hidden_size, len(COLOUR_CLASSES))
        g = torch.Generator().manual_seed(CODE_SEED)
        codes = torch.randn(len(SHAPE_CLASSES) + len(COLOUR_CLASSES), code_size, generator=g) / 2 ** 0.5
        self.register_buffer("shape_codes", codes[:len(SHAPE_CLASSES)].clone(), persistent=False)
        self.register_buffer("colour_codes", codes[len(SHAPE_CLASSES):].clone(), persistent=False)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.shape(features), self.colour(features)

    def code_target(self, shape_ids: torch.Tensor, colour_ids: torch.Tensor) -> torch.Tensor:
        """The row a perfect teacher sends for each token: its shape's code plus its colour's code."""
        return self.shape_codes[shape_ids] + self.colour_codes[colour_ids]


class PatchLabeler(nn.Module):
    """Vision tower + head (+ the projector, when the stage warms it) as one module, so `accelerate` wraps and syncs
    exactly what the stage trains."""

    def __init__(self, vision_tower: nn.Module, head: PatchLabelHead, projector: nn.Module | None = None):
        super().__init__()
        self.vision_tower, self.head, self.projector = vision_tower, head, projector

    def forward(self, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(shape logits, colour logits) per patch, and the projector's rows per token (None without a projector).
        The projector reads detached features: its code term shapes what the LLM will receive, not the tower."""
        features = self.vision_tower(pixel_values, image_grid_hw).last_hidden_state
        rows = self.projector(features.detach()) if self.projector is not None else None
        return *self.head(features), rows


def token_labels(patch_labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(shape id, colour id) per visual token: the most common object label of its 4 patches (0: background)."""
    s, c = patch_labels["shape_labels"].view(-1, 4), patch_labels["colour_labels"].view(-1, 4)
    out_s, out_c = torch.zeros(len(s), dtype=torch.long), torch.zeros(len(s), dtype=torch.long)
    for i in range(len(s)):
        objects = [(int(a), int(b)) for a, b in zip(s[i], c[i]) if a > 0]
        if objects:
            out_s[i], out_c[i] = collections.Counter(objects).most_common(1)[0][0]
    return out_s, out_c


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


def patch_label_loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], batch: dict[str, torch.Tensor],
                     head: PatchLabelHead, code_weight: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of both label maps, plus `code_weight` x the summed squared distance (mean over the
    width) of each projector row from its object's code (the loop divides by the number of patch labels).

    Cross-entropy makes shape and colour *decodable* from the patches, yet the object stays a small share of what the
    projector sends (36-49% of the variance of object tokens in our runs) and the LLM did not find it in a CPU budget;
    with the rows pulled onto the codes it is about 90%, as in the oracle that learns (`03` sections 7-8).
    """
    shape_logits, colour_logits, rows = outputs
    ce = nn.functional.cross_entropy
    loss = (ce(shape_logits.float(), batch["shape_labels"], reduction="sum")
            + ce(colour_logits.float(), batch["colour_labels"], reduction="sum"))
    if code_weight:
        if rows is None:
            raise ValueError("a code_weight needs the projector's rows: attach the head with warm_projector=True")
        target = head.code_target(*token_labels(batch)).to(rows.device)
        loss = loss + code_weight * (rows.float() - target).pow(2).mean(-1).sum()
    return loss


@torch.no_grad()
def predict_shape_maps(labeler: PatchLabeler, processor: Any, images: Sequence[Image.Image]) -> list[torch.Tensor]:
    """The predicted shape class of every patch, one (rows, cols) map per image (indices into SHAPE_CLASSES)."""
    batch = processor.image_processor(list(images), return_tensors="pt")
    pred = labeler(batch["pixel_values"], batch["image_grid_hw"])[0].argmax(-1)
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
    shape_logits, colour_logits, _ = labeler(batch["pixel_values"], batch["image_grid_hw"])
    shape, colour = shape_logits.argmax(-1), colour_logits.argmax(-1)
    obj = batch["shape_labels"] > 0
    return {"shape": float((shape[obj] == batch["shape_labels"][obj]).float().mean()),
            "colour": float((colour[obj] == batch["colour_labels"][obj]).float().mean()),
            "background": float((shape[~obj] == 0).float().mean()),
            "object_patches": int(obj.sum()), "patches": int(obj.numel())}
