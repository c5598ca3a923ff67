"""Apply an eviction policy to the shared prefill cache and keep generating with `generate` (report §4, OKV).

`evict` gathers the kept positions of every layer into a fresh `DynamicCache` (the keys are post-RoPE, so
each kept entry keeps its original position). `generate_evicted` then calls the ordinary `model.generate`
with only the last prompt token as input and an all-ones attention mask of the full prompt length:
transformers 5 derives the position ids from that mask, so the new tokens sit at their true positions
while attending to the shorter cache. Several compressed caches of equal length run as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import DynamicCache

from .policies import SINKS, check_policy, check_ratio, select
from .prefill import Prefill


def kept_positions(pre: Prefill, policy: str, ratio: float) -> list[torch.Tensor]:
    """Per layer, the (kv_heads, keep) positions `policy` keeps at eviction `ratio`."""
    check_policy(policy)
    check_ratio(ratio)
    return [select(policy, s, pre.layout, ratio) for s in pre.scores]


def evict(pre: Prefill, policy: str, ratio: float) -> tuple[DynamicCache, list[torch.Tensor]]:
    """A new cache holding only the kept positions of each layer, and those positions."""
    kept = kept_positions(pre, policy, ratio)
    return gather_cache(pre, kept), kept


def gather_cache(pre: Prefill, kept: Sequence[torch.Tensor]) -> DynamicCache:
    """A new cache holding, per layer, the (kv_heads, keep) positions `kept` of the prefill's cache."""
    cache = DynamicCache()
    for layer_idx, (layer, idx) in enumerate(zip(pre.cache.layers, kept, strict=True)):
        gather = idx[None, :, :, None].expand(1, -1, -1, layer.keys.shape[-1])
        cache.update(layer.keys.gather(2, gather).contiguous(), layer.values.gather(2, gather).contiguous(), layer_idx)
    return cache


def random_drop(pre: Prefill, n: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Per layer, every position but `n` document positions drawn at random (the same in every layer and head);
    the question and the attention sinks stay. A near-full cache: how much an answer moves when almost nothing
    is evicted."""
    layout = pre.layout
    candidates = (~layout.question & ~layout.boundaries).nonzero().flatten()[SINKS:]
    if not 0 <= n <= candidates.numel():
        raise ValueError(f"cannot drop {n} of the {candidates.numel()} document positions")
    keep = torch.ones(layout.length, dtype=torch.bool)
    keep[candidates[torch.randperm(candidates.numel(), generator=generator)[:n]]] = False
    heads = pre.cache.layers[0].keys.shape[1]
    return [keep.nonzero().flatten().expand(heads, -1) for _ in pre.cache.layers]


def stack_caches(caches: Sequence[DynamicCache]) -> DynamicCache:
    """One batched cache from caches of equal per-layer length (one row each)."""
    out = DynamicCache()
    for layer_idx in range(len(caches[0].layers)):
        lengths = {c.layers[layer_idx].keys.shape[-2] for c in caches}
        if len(lengths) != 1:
            raise ValueError(f"layer {layer_idx}: caches of different lengths {sorted(lengths)} cannot share a batch")
        out.update(torch.cat([c.layers[layer_idx].keys for c in caches]),
                   torch.cat([c.layers[layer_idx].values for c in caches]), layer_idx)
    return out


def cache_bytes(cache: DynamicCache) -> int:
    """Bytes held by the cache's key and value tensors (measured on the tensors, not computed)."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


@torch.no_grad()
def generate_evicted(model: nn.Module, pre: Prefill, cache: DynamicCache, max_new_tokens: int,
                     **generate_kwargs) -> torch.Tensor:
    """Greedy answers (batch, new tokens) continuing the prompt from `cache` through `model.generate`."""
    batch = cache.layers[0].keys.shape[0]
    length = pre.input_ids.shape[1]
    last = pre.input_ids[:, -1:].expand(batch, 1).contiguous()
    out = model.generate(input_ids=last, attention_mask=torch.ones(batch, length, dtype=torch.long),
                         past_key_values=cache, max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)
    return out[:, 1:]


def kept_share(pre: Prefill, policy: str, ratio: float) -> torch.Tensor:
    """Per position, the share of (layer, KV head) pairs that keep it."""
    counts = torch.zeros(pre.layout.length)
    total = 0
    for idx in kept_positions(pre, policy, ratio):
        for row in idx:
            counts[row] += 1
            total += 1
    return counts / total
