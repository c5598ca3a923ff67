"""Pixel shuffle + 2-layer MLP projector (ANDESVL.md §1, SPEC §1.4).

Because patches arrive in 2x2-block order, merging each 2x2 neighbourhood into one LLM token is a view:
(N, C) -> (N/4, 4C). Four times fewer visual tokens, each carrying a 28 px (AIMv2) or 32 px (SigLIP2) block.
"""

from __future__ import annotations

import torch
from torch import nn


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

    def __init__(self, vision_hidden: int, text_hidden: int, layernorm: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(4 * vision_hidden) if layernorm else nn.Identity()
        self.linear_1 = nn.Linear(4 * vision_hidden, 4 * vision_hidden)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(4 * vision_hidden, text_hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(self.norm(pixel_shuffle(features)))))
