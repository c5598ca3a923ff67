"""Batch-invariant verification: a draft row attends exactly as one decoding step would (ANDESVL.md §4).

Speculative decoding is lossless only if scoring k tokens in one forward gives each of them the logits that k
single-token steps would. In float32 the differences are ~1e-7 and rarely flip a greedy choice. With bf16-packed
weights (`profile/prepack.py`, the AMX path) each linear layer rounds its inputs to bfloat16, so such a tiny
difference in the attention output can move an input across a rounding boundary, and the outputs drift apart
within a few dozen tokens (measured: 9 of 30 prompts). The packed linear layers are row-invariant already (a row's
result does not depend on the rows beside it; so are the norms, rotary and activations); attention is not, because
one call over k query rows takes a different kernel path from k calls of one row.

`exact_verify(model)` installs an attention function that, for a pass with q > 1 new tokens after a cache, runs
the ordinary SDPA once per query row, over exactly the keys that row may see (the causal prefix, or its branch of a
draft tree), which is the call a decoding step makes. Prefill and single-token steps go through SDPA unchanged.
Cost: k small attention calls per layer instead of one (measured on SmolLM2: verifying 8 tokens about 1.3x a step
instead of 1.2x); a draft tree's rows also gather their keys (read once per forward, reused by every layer).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ROWWISE = "andes_rowwise_sdpa"


class _RowKeys:
    """Which keys each query row may see, read once per mask (every layer of one forward gets the same mask)."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self.rows: list[slice | torch.Tensor] = []

    def __call__(self, mask: torch.Tensor, past: int, kv: int) -> list[slice | torch.Tensor]:
        mask = mask[0, 0, :, :kv]
        if self.mask is not None and self.mask.shape == mask.shape and torch.equal(self.mask, mask):
            return self.rows
        rows = []
        for i, row in enumerate(mask):
            index = (row if row.dtype == torch.bool else row == 0).nonzero()[:, 0]
            prefix = len(index) == past + i + 1 and int(index[-1]) == past + i
            rows.append(slice(0, past + i + 1) if prefix else index)  # a causal prefix is a view, not a copy
        self.mask, self.rows = mask.clone(), rows
        return rows


_row_keys = _RowKeys()


def rowwise_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """SDPA, one query row at a time when q > 1 tokens follow a cache (batch 1); otherwise plain SDPA."""
    q, kv = query.shape[2], key.shape[2]
    if q == 1 or kv == q or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    past = kv - q
    seen = [slice(0, past + i + 1) for i in range(q)] if attention_mask is None else _row_keys(attention_mask, past, kv)
    rows = []
    for i, keys in enumerate(seen):
        if isinstance(keys, slice):
            k_i, v_i = key[:, :, keys], value[:, :, keys]
        else:
            k_i, v_i = key.index_select(2, keys), value.index_select(2, keys)
        out, _ = sdpa_attention_forward(module, query[:, :, i:i + 1], k_i, v_i, None, **kwargs)
        rows.append(out)
    return torch.cat(rows, dim=1), None


def exact_verify(model: nn.Module) -> nn.Module:
    """Make `model`'s multi-token passes after a cache give each row its single-step result (in place; returns it).

    Only for models on SDPA attention (Llama, Qwen3 and AndesVL's text backbones here).
    """
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current not in ("sdpa", ROWWISE):
        raise ValueError(f"exact_verify needs a model on 'sdpa' attention, got {current!r}")
    AttentionInterface.register(ROWWISE, rowwise_sdpa)
    model.config._attn_implementation = ROWWISE
    if getattr(model.config, "text_config", None) is not None:  # AndesVL: the language model reads its own config
        model.config.text_config._attn_implementation = ROWWISE
    return model
