"""Pixel shuffle + 2-layer MLP projector (ANDESVL.md §1, SPEC §1.4).

Because patches arrive in 2x2-block order, merging each 2x2 neighbourhood into one LLM token is a view:
(N, C) -> (N/4, 4C). Four times fewer visual tokens, each carrying a 28 px (AIMv2) or 32 px (SigLIP2) block.

`output_rms` (ours, for LLMs trained from scratch): the rows are RMS-normalised and multiplied by a learned gain
that starts at `output_rms`. nano's text embeddings sit at about 0.05 RMS; unnormalised visual rows start near 0.1
and drift with training, and at those scales the LLM did not learn to look up a named object among them, while
rows held at RMS 1 did (`benchmarks/oracle_binding.py`, recorded in `03_pretraining`).
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

    def __init__(self, vision_hidden: int, text_hidden: int, layernorm: bool = False, output_rms: float = 0.0):
        super().__init__()
        if output_rms < 0:
            raise ValueError(f"output_rms must be >= 0 (0 turns the output normalisation off), got {output_rms}")
        self.output_gain = nn.Parameter(torch.full((text_hidden,), float(output_rms))) if output_rms else None
        self.norm = nn.LayerNorm(4 * vision_hidden) if layernorm else nn.Identity()
        self.linear_1 = nn.Linear(4 * vision_hidden, 4 * vision_hidden)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(4 * vision_hidden, text_hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        rows = self.linear_2(self.act(self.linear_1(self.norm(pixel_shuffle(features)))))
        if self.output_gain is None:
            return rows
        return nn.functional.rms_norm(rows, (rows.shape[-1],)) * self.output_gain
