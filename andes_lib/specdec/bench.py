"""Side-by-side wall-clock comparison of decoding methods on the same prompts, in one process (ANDESVL.md §4).

Methods run interleaved prompt by prompt, so a busy machine slows them alike and the *ratios* (speedup over plain
greedy on the same prompt) stay meaningful. Every method's tokens are compared with plain greedy's: speculative
decoding must be lossless.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm
from transformers.generation.streamers import BaseStreamer

from .data import chat_ids
from .decode import SpecResult

Method = Callable[..., SpecResult]  # (input_ids, max_new_tokens, **first-forward inputs) -> result
REFERENCE = "greedy (HF generate)"


class FirstTokenClock(BaseStreamer):
    """A `generate` streamer that only notes when the first new token arrives (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.start, self.first, self.puts = time.perf_counter(), None, 0

    def put(self, value: torch.Tensor) -> None:
        self.puts += 1
        if self.puts == 2 and self.first is None:
            self.first = time.perf_counter() - self.start

    def end(self) -> None:
        pass


def hf_method(model: torch.nn.Module, **generate_kwargs) -> Method:
    """A transformers `generate` configuration (greedy; assisted or prompt lookup through `generate_kwargs`).

    The time to the first token comes from a streamer; assisted and prompt-lookup generation draft already in their
    first round, so their "prefill" also holds one round of drafting (subtracting it favours them slightly).
    """
    def call(ids: torch.Tensor, max_new_tokens: int, **inputs) -> SpecResult:
        clock = FirstTokenClock()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, streamer=clock, **inputs, **generate_kwargs)
        seconds = time.perf_counter() - clock.start
        return SpecResult(tokens=out[0, ids.shape[1]:].tolist(), seconds=seconds,
                          first_token_seconds=seconds if clock.first is None else clock.first)
    return call


def compare(methods: Mapping[str, Method], tokenizer, prompts: Sequence[Mapping], max_new_tokens: int,
            reference: str = REFERENCE, warmup: bool = True, progress: bool = True,
            encode: Callable[[Mapping], tuple[torch.Tensor, dict]] | None = None) -> list[dict]:
    """One row per (prompt, method): seconds, tokens, speedup over `reference` end to end and in decoding alone
    (after the first token: prefill is the same work for every method), lossless flag, accepted length (None for
    the transformers methods, which do not report it).

    `encode` turns a prompt row into (input_ids, extra inputs of the first forward, e.g. a VLM's `pixel_values`);
    the default reads a text row's `prompt` into the tokenizer's chat template.
    """
    if reference not in methods:
        raise ValueError(f"the reference method {reference!r} is not among {list(methods)}")
    encode = encode or (lambda p: (chat_ids(tokenizer, p["prompt"]), {}))
    if warmup and prompts:
        ids, extra = encode(prompts[0])
        for fn in methods.values():
            fn(ids, 4, **extra)
    rows = []
    for i, p in enumerate(tqdm(prompts, desc="benchmark", disable=not progress)):
        ids, extra = encode(p)
        ref = methods[reference](ids, max_new_tokens, **extra)
        for name, fn in methods.items():
            res = ref if name == reference else fn(ids, max_new_tokens, **extra)
            decode = ref.decode_seconds / res.decode_seconds if len(ref.tokens) > 1 and res.decode_seconds > 0 else None
            rows.append({"prompt": i, "kind": p.get("kind", p.get("domain")), "method": name, "seconds": res.seconds,
                         "tokens": len(res.tokens), "tok_per_s": len(res.tokens) / res.seconds,
                         "speedup": ref.seconds / res.seconds, "decode_speedup": decode,
                         "decode_tok_per_s": (len(res.tokens) - 1) / res.decode_seconds if decode else None,
                         "lossless": res.tokens == ref.tokens,
                         "accepted_length": res.mean_accepted_length if res.rounds else None})
    return rows


def summarise(rows: Sequence[Mapping]) -> list[dict]:
    """Per method: median / peak decode speedup, median / peak / min end-to-end speedup, mean accepted length,
    tokens/s, share of lossless outputs."""
    out = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        acc = [r["accepted_length"] for r in mine if r["accepted_length"] is not None]
        dec = [r["decode_speedup"] for r in mine if r.get("decode_speedup") is not None]
        out.append({"method": name, "median_decode_speedup": statistics.median(dec) if dec else None,
                    "peak_decode_speedup": max(dec) if dec else None,
                    "median_speedup": statistics.median(r["speedup"] for r in mine),
                    "peak_speedup": max(r["speedup"] for r in mine), "min_speedup": min(r["speedup"] for r in mine),
                    "mean_accepted_length": statistics.fmean(acc) if acc else None,
                    "tok_per_s": sum(r["tokens"] for r in mine) / sum(r["seconds"] for r in mine),
                    "lossless": sum(r["lossless"] for r in mine) / len(mine), "prompts": len(mine)})
    return out
