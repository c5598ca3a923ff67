"""Prefill and decode latency, tokens/s and peak memory of one model setting (ANDESVL.md §4, on-device speed).

`measure_decode` runs a plain greedy loop on the transformers KV cache (the same math as `generate`, without its
per-step bookkeeping) or on a `LeanDecoder` (transposed fused weights, static cache), times the prefill and each
decode step separately, and samples the process's resident
memory in a background thread to report its peak. Figures are medians: other processes share the machine, so
compare settings measured side by side in one run, as ratios.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psutil
import torch
from transformers import DynamicCache

from .lean import LeanDecoder


@dataclass
class DecodeProfile:
    """One measurement: prefill seconds, median decode seconds per token, tokens/s, peak RSS, the tokens."""

    prompt_tokens: int
    new_tokens: int
    prefill_s: float
    decode_s_per_token: float
    decode_tokens_per_s: float
    peak_rss_mib: float
    tokens: list[int]

    def as_row(self) -> dict:
        row = asdict(self)
        row.pop("tokens")
        return row


class PeakMemory:
    """Context manager sampling this process's RSS every `interval` seconds; `.peak_mib` after exit."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20


@torch.inference_mode()
def greedy_decode(model: torch.nn.Module | LeanDecoder, input_ids: torch.Tensor, new_tokens: int,
                  step_hook: Callable[[int, float], None] | None = None) -> tuple[list[int], float, list[float]]:
    """Greedy decoding on a `DynamicCache` (or a `LeanDecoder`): (generated ids, prefill seconds, step seconds)."""
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"greedy_decode profiles batch 1: input_ids must be (1, T), got {tuple(input_ids.shape)}")
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be at least 1, got {new_tokens}")
    if isinstance(model, LeanDecoder):
        first, step = model.prefill, model.step
    else:
        cache = DynamicCache(config=model.config)

        def first(ids: torch.Tensor) -> torch.Tensor:
            out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1:].argmax(-1)

        def step(tok: torch.Tensor) -> torch.Tensor:
            return model(input_ids=tok, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
    t = time.perf_counter()
    token = first(input_ids)
    prefill = time.perf_counter() - t
    ids, steps = [int(token)], []
    for i in range(new_tokens - 1):
        t = time.perf_counter()
        token = step(token)
        steps.append(time.perf_counter() - t)
        ids.append(int(token))
        if step_hook is not None:
            step_hook(i, steps[-1])
    return ids, prefill, steps


def measure_decode(model: torch.nn.Module | LeanDecoder, input_ids: torch.Tensor, new_tokens: int = 32,
                   warmup: int = 4) -> DecodeProfile:
    """Prefill + `new_tokens` greedy steps after a short warm-up; median per-step time and peak RSS."""
    if new_tokens < 2:
        raise ValueError(f"measure_decode needs new_tokens >= 2 to time a decode step, got {new_tokens}")
    if warmup:
        greedy_decode(model, input_ids[:, : min(8, input_ids.shape[1])], warmup)
    with PeakMemory() as mem:
        ids, prefill, steps = greedy_decode(model, input_ids, new_tokens)
    per_token = statistics.median(steps)
    return DecodeProfile(int(input_ids.shape[1]), new_tokens, prefill, per_token, 1.0 / per_token,
                         mem.peak_mib, ids)
