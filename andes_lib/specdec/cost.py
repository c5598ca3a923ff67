"""What verification costs: one target forward with k new tokens against one decoding step (ANDESVL.md §4).

At batch 1 a decoding step is bound by reading the weights, so scoring k draft tokens at once costs far less
than k steps; this ratio is the budget speculative decoding spends.
"""

from __future__ import annotations

import time

import torch

from .target import Target, truncate_cache


@torch.no_grad()
def verify_cost(target: Target, context: int = 300, ks: list[int] | tuple[int, ...] = (1, 2, 4, 8, 16),
                repeats: int = 3, seed: int = 0) -> list[dict[str, float]]:
    """Median milliseconds of a forward with k new tokens after a `context`-token cache, and its ratio to k=1."""
    if context < 1 or repeats < 1 or not ks or min(ks) < 1:
        raise ValueError(f"need context >= 1, repeats >= 1 and ks >= 1; got {context}, {repeats}, {list(ks)}")
    vocab = target.text_config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, context + max(ks)), generator=gen)
    cache = target.new_cache()
    target.forward(ids[:, :context], cache)
    target.forward(ids[:, context:context + 1], cache)  # warm-up
    truncate_cache(cache, context)
    times: dict[int, float] = {}
    for k in sorted(set([1, *ks])):
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            target.forward(ids[:, context:context + k], cache)
            runs.append(time.perf_counter() - t0)
            truncate_cache(cache, context)
        times[k] = sorted(runs)[len(runs) // 2]
    return [{"k": k, "ms": 1000 * times[k], "relative": times[k] / times[1]} for k in ks]
