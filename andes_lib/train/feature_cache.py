"""Features of a frozen vision tower, computed once per image of the stage (alignment with a frozen encoder).

pt1 and pt2 do not train the tower, yet a plain loop runs it on every image of every step, and each pool image comes
back many times (pt2: 25,600 draws from about 4,000 images). `FrozenTowerCache` runs the tower once over the distinct
images the stage's plan draws, in a fixed order and fixed chunks, before the first step; during training the tower's
forward looks each image up by the bytes of its patches. The chunks depend on the plan alone (all its steps, not only
those left), so a resumed run uses exactly the features of the uninterrupted one: resume stays bit-exact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

CHUNK_IMAGES = 64  # images per tower forward while filling
MAX_BYTES = 2 * 1024**3  # features kept at most; images past it are computed in their step, as without a cache


def image_key(patches: torch.Tensor, grid: tuple[int, int]) -> bytes:
    """Identity of one image: its patch grid and the bytes of its normalised patches."""
    digest = hashlib.blake2b(patches.detach().cpu().float().contiguous().numpy().tobytes(), digest_size=16)
    digest.update(f"{grid[0]}x{grid[1]}".encode())
    return digest.digest()


def plan_slots(order: np.ndarray, batch_size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """The distinct (pool, row) pairs this process draws over the whole plan (`stream.DataStream.order`), sorted."""
    steps = len(order) // batch_size
    mine = order.reshape(steps, batch_size, 2)[:, rank::world].reshape(-1, 2)
    return sorted({(int(p), int(i)) for p, i in mine})


class FrozenTowerCache:
    """Stands in for a frozen tower's `forward`: features of known images come from memory, others are computed."""

    def __init__(self, tower: torch.nn.Module, max_bytes: int = MAX_BYTES):
        self.tower, self.forward, self.max_bytes = tower, tower.forward, max_bytes
        self.features: dict[bytes, torch.Tensor] = {}
        self.bytes = self.hits = self.misses = 0

    @torch.no_grad()
    def fill(self, images: Iterable[Any], processor: Any) -> int:
        """Compute and keep the features of `images` (PIL), CHUNK_IMAGES per forward, in the given order."""
        chunk: dict[bytes, tuple[torch.Tensor, tuple[int, int]]] = {}

        def flush() -> None:
            weight = next(self.tower.parameters())
            pixels = torch.cat([p for p, _ in chunk.values()]).to(weight.device)
            grids = torch.tensor([g for _, g in chunk.values()], dtype=torch.long, device=weight.device)
            out = self.forward(pixel_values=pixels, image_grid_hw=grids).last_hidden_state.to(weight.dtype)
            for key, part in zip(chunk, out.split([h * w for _, (h, w) in chunk.values()]), strict=True):
                self.features[key] = part.clone()
                self.bytes += part.numel() * part.element_size()
            chunk.clear()

        for image in images:
            if self.bytes >= self.max_bytes:
                break
            patches, grid = processor.image_processor.preprocess_one(image)
            key = image_key(patches, grid)
            if key not in self.features:
                chunk[key] = (patches, grid)
            if len(chunk) == CHUNK_IMAGES:
                flush()
        if chunk:
            flush()
        return len(self.features)

    def __call__(self, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor, **kwargs: Any) -> BaseModelOutput:
        grids = [(int(h), int(w)) for h, w in image_grid_hw.tolist()]
        parts = pixel_values.split([h * w for h, w in grids])
        keys = [image_key(p, g) for p, g in zip(parts, grids, strict=True)]
        missing = [i for i, k in enumerate(keys) if k not in self.features]
        self.hits, self.misses = self.hits + len(keys) - len(missing), self.misses + len(missing)
        computed: dict[int, torch.Tensor] = {}
        if missing:  # images the plan did not announce or the budget left out: computed in this step, not kept
            with torch.no_grad():
                out = self.forward(pixel_values=torch.cat([parts[i] for i in missing]),
                                   image_grid_hw=image_grid_hw[missing], **kwargs).last_hidden_state
            computed = dict(zip(missing, out.split([grids[i][0] * grids[i][1] for i in missing]), strict=True))
        dtype = next(self.tower.parameters()).dtype  # computed rows may come out of an autocast region
        rows = [computed[i].to(dtype) if i in computed else self.features[k] for i, k in enumerate(keys)]
        return BaseModelOutput(last_hidden_state=torch.cat(rows).to(pixel_values.device))


def install(tower: torch.nn.Module, rows: Sequence[dict[str, Any]], processor: Any,
            max_bytes: int = MAX_BYTES) -> FrozenTowerCache:
    """Fill a cache with the images of `rows` and make it the tower's forward (`uninstall` undoes it)."""
    cache = FrozenTowerCache(tower, max_bytes)
    cache.fill((image for row in rows for image in row.get("images") or []), processor)
    tower.forward = cache
    return cache


def uninstall(tower: torch.nn.Module) -> None:
    """Give the tower its own forward back."""
    if isinstance(tower.__dict__.get("forward"), FrozenTowerCache):
        del tower.forward
