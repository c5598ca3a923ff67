"""Pixel shuffle + 2-layer MLP projector (ANDESVL.md §1, SPEC §1.4).

Because patches arrive in 2x2-block order, merging each 2x2 neighbourhood into one LLM token is a view:
(N, C) -> (N/4, 4C). Four times fewer visual tokens, each carrying a 28 px (AIMv2) or 32 px (SigLIP2) block.

`output_rms` (ours, for LLMs trained from scratch): the rows are RMS-normalised and multiplied by a learned gain
that starts at `output_rms`. nano's text embeddings sit at about 0.05 RMS; unnormalised visual rows start near 0.1
and drift with training, and at those scales the LLM did not learn to look up a named object among them, while
rows held at RMS 1 did (`benchmarks/oracle_binding.py`, recorded in `03_pretraining`).

`place_scale` (ours): each row gets `place_scale` times its token's (x, y) in the image (-1 to 1) along two fixed
orthogonal directions, so the LLM can read *where* a token is (relations, grounding) as well as *what* it is. The
encoder's rows say where only faintly (a linear probe reads x and y at R^2 0.1-0.2 after training); relation questions
stayed at chance without this and reach 86% after pt2 with it (`03` section 7, round 6).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .vision import block_order_coords


def pixel_shuffle(features: torch.Tensor) -> torch.Tensor:
    """(N, C) patch features in 2x2-block order -> (N/4, 4C) merged tokens."""
    if features.dim() != 2:
        raise ValueError(f"pixel_shuffle expects (N, C) packed features, got shape {tuple(features.shape)}")
    n, c = features.shape
    if n % 4:
        raise ValueError(f"pixel_shuffle needs a multiple of 4 patches (whole 2x2 blocks), got {n}")
    return features.reshape(n // 4, 4 * c)


class PixelShuffleProjector(nn.Module):
    """`Linear(4C, 4C) -> GELU -> Linear(4C, H)`; with `layernorm=True`, the InternVL-style LayerNorm(4C) first."""

    def __init__(self, vision_hidden: int, text_hidden: int, layernorm: bool = False, output_rms: float = 0.0,
                 place_scale: float = 0.0):
        super().__init__()
        if output_rms < 0:
            raise ValueError(f"output_rms must be >= 0 (0 turns the output normalisation off), got {output_rms}")
        if place_scale < 0:
            raise ValueError(f"place_scale must be >= 0 (0 adds no place code), got {place_scale}")
        self.text_hidden, self.place_scale = text_hidden, float(place_scale)
        self.output_gain = nn.Parameter(torch.full((text_hidden,), float(output_rms))) if output_rms else None
        self.norm = nn.LayerNorm(4 * vision_hidden) if layernorm else nn.Identity()
        self.linear_1 = nn.Linear(4 * vision_hidden, 4 * vision_hidden)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(4 * vision_hidden, text_hidden)

    def forward(self, features: torch.Tensor, image_grid_hw: torch.Tensor | None = None) -> torch.Tensor:
        """Rows for the LLM; with `image_grid_hw` (each image's patch grid) and `place_scale`, the place code too."""
        rows = self.linear_2(self.act(self.linear_1(self.norm(pixel_shuffle(features)))))
        if self.output_gain is not None:
            rows = nn.functional.rms_norm(rows, (rows.shape[-1],)) * self.output_gain
        if self.place_scale and image_grid_hw is not None:
            places, directions = token_positions(image_grid_hw).to(rows), place_directions(self.text_hidden).to(rows)
            rows = rows + self.place_scale * places @ directions
        return rows


@functools.cache
def place_directions(hidden: int) -> torch.Tensor:
    """Two fixed orthogonal directions of RMS 1, (2, hidden), seeded: the same in every process and checkpoint."""
    q = torch.linalg.qr(torch.randn(hidden, 2, generator=torch.Generator().manual_seed(0)))[0]
    return q.T * hidden**0.5


def token_positions(image_grid_hw: torch.Tensor) -> torch.Tensor:
    """(x, y) centre of every visual token (a 2x2 patch block), -1 to 1 across its image, in the order the projector
    emits them, as (N, 2)."""
    out = []
    for h, w in image_grid_hw.tolist():
        rows, cols = block_order_coords(h, w)
        rows, cols = rows.view(-1, 4).float().mean(1), cols.view(-1, 4).float().mean(1)  # a token's 4 patches
        out.append(torch.stack([(cols + 0.5) / w * 2 - 1, (rows + 0.5) / h * 2 - 1], -1))
    return torch.cat(out)
