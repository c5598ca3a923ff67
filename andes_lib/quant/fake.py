"""Fake quantization with a straight-through estimator (ANDESVL.md §4, QAT; our re-creation of the recipe).

A fake-quantized tensor is quantized to integers and immediately dequantized, so the forward pass sees the
rounding error of the deployed integer model while everything stays in floating point. The backward pass
treats the rounding as the identity (straight-through estimator, STE): `x + (dq - x).detach()`.

Encodings follow torchao's affine conventions (so `tests/test_quant.py` can compare against
`IntxFakeQuantizeConfig` on the same tensor):
- symmetric: scale = max|x| / ((qmax - qmin) / 2), zero point 0 (int4: qmin -8, qmax 7, divisor 7.5);
- asymmetric: scale = (max(x, 0) - min(x, 0)) / (qmax - qmin), zero = qmin - round(min(x, 0) / scale);
- q = clamp(round(x / scale) + zero, qmin, qmax), dequantized (q - zero) * scale.
Weights are quantized per output channel (one encoding per row) or per group of `group_size` input columns;
activations per token (one encoding per row of the last dimension), dynamically, as the phone NPU does for int8/16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = torch.finfo(torch.float32).smallest_normal


def int_range(bits: int) -> tuple[int, int]:
    """(qmin, qmax) of a signed `bits`-bit integer."""
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer in 2..16, got {bits!r}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class Encoding:
    """Scale and integer zero point of a block-wise affine quantizer (float tensors, broadcast over blocks)."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int


def choose_qparams(x: torch.Tensor, bits: int, symmetric: bool) -> Encoding:
    """Encodings for each row of `x` (reduced over the last dimension), torchao's `choose_qparams_affine` rules."""
    qmin, qmax = int_range(bits)
    lo = x.detach().amin(-1, keepdim=True).clamp(max=0).float()
    hi = x.detach().amax(-1, keepdim=True).clamp(min=0).float()
    if symmetric:
        scale = (torch.maximum(-lo, hi) / ((qmax - qmin) / 2)).clamp(min=EPS)
        zero = torch.zeros_like(scale)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp(min=EPS)
        zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return Encoding(scale, zero, bits)


def quantize_dequantize(x: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """Round to the integer grid of `enc` and map back (no gradient trick: see `fake_quantize`)."""
    qmin, qmax = int_range(enc.bits)
    q = torch.clamp(torch.round(x / enc.scale) + enc.zero_point, qmin, qmax)
    return ((q - enc.zero_point) * enc.scale).to(x.dtype)


def fake_quantize(x: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """Quantize-dequantize in the forward pass, identity gradient in the backward pass (STE)."""
    return x + (quantize_dequantize(x, enc) - x).detach()


def _blocks(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """A (rows, cols) weight viewed as (rows, cols // group, group); group 0 means one block per row."""
    if w.dim() != 2:
        raise ValueError(f"weight fake quantization expects a 2-D matrix, got shape {tuple(w.shape)}")
    g = w.shape[1] if group_size == 0 else group_size
    if g < 1 or w.shape[1] % g:
        raise ValueError(f"group size {group_size} does not divide the {w.shape[1]} input columns")
    return w.reshape(w.shape[0], w.shape[1] // g, g)


def weight_encoding(w: torch.Tensor, bits: int, group_size: int = 0, symmetric: bool = True) -> Encoding:
    """Per-channel (`group_size=0`) or per-group encodings of a weight; scale shape (rows, n_groups, 1)."""
    return choose_qparams(_blocks(w, group_size), bits, symmetric)


def fake_quantize_weight(w: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """Fake-quantize a (rows, cols) weight with per-channel or per-group encodings from `weight_encoding`."""
    group = w.shape[1] // enc.scale.shape[1]
    return fake_quantize(_blocks(w, group), enc).reshape(w.shape)


def fake_quantize_per_token(x: torch.Tensor, bits: int, symmetric: bool = False,
                            clip: torch.Tensor | float | None = None) -> torch.Tensor:
    """Dynamic per-token fake quantization of activations (one encoding per row of the last dimension).

    `clip` (a frozen PTQ encoding) bounds every token's range to [-clip, clip] before its scale is chosen, so a
    rare outlier token cannot stretch the grid beyond what calibration saw.
    """
    if clip is not None:
        x = torch.maximum(torch.minimum(x, torch.as_tensor(clip, dtype=x.dtype)),
                          -torch.as_tensor(clip, dtype=x.dtype))
    return fake_quantize(x, choose_qparams(x, bits, symmetric))
