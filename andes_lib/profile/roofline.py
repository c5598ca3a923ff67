"""The decode roofline: tokens/s <= memory bandwidth / bytes read per generated token.

At batch 1 every decode step streams all weights (the tied embedding once, as the LM head) plus the KV cache
written so far, and does ~2 FLOPs per weight, far below what the cores could compute in that time: the step is
memory-bound, so bandwidth / bytes is its ceiling.
"""

from __future__ import annotations

from torch import nn


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers at their current dtypes (tied tensors once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())


def kv_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, bytes_per_value: float) -> float:
    """KV-cache bytes one token adds (keys and values, every layer)."""
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_value


def decode_bytes_per_token(weights: float, kv_per_token: float, context: int) -> float:
    """Bytes one decode step reads: all weights plus the cached keys/values of `context` tokens."""
    return weights + kv_per_token * context


def roofline_tokens_per_s(bandwidth_gbs: float, bytes_per_token: float) -> float:
    """The memory-bandwidth ceiling on batch-1 decode speed."""
    if bandwidth_gbs <= 0 or bytes_per_token <= 0:
        raise ValueError(f"bandwidth and bytes per token must be positive ({bandwidth_gbs}, {bytes_per_token})")
    return bandwidth_gbs * 1e9 / bytes_per_token
