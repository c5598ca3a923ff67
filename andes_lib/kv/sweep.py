"""Quality, memory and speed of every policy x eviction ratio on shared prefills (report §4, OKV).

Per prompt: one prefill; the full cache answers once (ratio 0); at every other ratio the four policies'
caches (equal lengths) answer together as one batch of `generate`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..eval.harness import clean_output
from ..eval.metrics import score as metric_score
from .evict import cache_bytes, evict, gather_cache, generate_evicted, kept_share, random_drop, stack_caches
from .policies import check_policy, check_ratio
from .prefill import Prefill, make_layout, prefill
from .tasks import Sample, encode, encode_image, score


def prepare(model: nn.Module, tokenizer, sample: Sample, window: int = 32) -> Prefill:
    """Encode a text sample and run its shared prefill."""
    ids, question_start = encode(tokenizer, sample)
    return prefill(model, ids, make_layout(tokenizer, ids, question_start), window=window)


def answer_rows(model: nn.Module, tokenizer, pre: Prefill, policies: Sequence[str], ratio: float,
                max_new_tokens: int) -> list[dict]:
    """Each policy's answer at one ratio, with its cache size; ratio 0 is the full cache, answered once."""
    for p in policies:
        check_policy(p)
    check_ratio(ratio)
    if ratio == 0:
        cache, kept = evict(pre, policies[0], 0.0)
        size = cache_bytes(cache)  # before generate appends the answer's entries
        text = tokenizer.decode(generate_evicted(model, pre, cache, max_new_tokens)[0], skip_special_tokens=True)
        return [{"policy": p, "ratio": 0.0, "answer": text, "kv_bytes": size, "kept": pre.layout.length}
                for p in policies]
    caches, sizes = [], []
    for p in policies:
        cache, kept = evict(pre, p, ratio)
        caches.append(cache)
        sizes.append(cache_bytes(cache))
    out = generate_evicted(model, pre, stack_caches(caches), max_new_tokens)
    return [{"policy": p, "ratio": ratio, "answer": tokenizer.decode(o, skip_special_tokens=True), "kv_bytes": size,
             "kept": int(caches[0].layers[0].keys.shape[-2])}
            for p, o, size in zip(policies, out, sizes, strict=True)]


def run_sweep(model: nn.Module, tokenizer, samples: Sequence[Sample], policies: Sequence[str],
              ratios: Sequence[float], max_new_tokens: dict[str, int],
              progress: bool = True) -> tuple[list[dict], dict[str, Prefill]]:
    """One row per (sample, policy, ratio): the answer, its score, the measured KV bytes and kept count;
    and each task's first prefill, kept for the figures."""
    rows, first = [], {}
    for i, sample in enumerate(tqdm(samples, desc="prompts", disable=not progress)):
        pre = prepare(model, tokenizer, sample)
        first.setdefault(sample.task, pre)
        for ratio in ratios:
            for row in answer_rows(model, tokenizer, pre, policies, ratio, max_new_tokens[sample.task]):
                rows.append({"task": sample.task, "prompt": i, "tokens": pre.input_ids.shape[1],
                             "score": score(row["answer"], sample), **row})
    return rows, first


def noise_floor(model: nn.Module, tokenizer, samples: Sequence[Sample], share: float = 0.01, repeats: int = 2,
                max_new_tokens: int = 48, seed: int = 0, progress: bool = True) -> list[dict]:
    """How much one prompt's score moves when a `share` of its document positions, drawn at random, leave the
    full cache: the noise every policy's per-prompt score carries, whatever it keeps. One row per (prompt, repeat)
    with the full cache's score and the near-full one's."""
    if not 0 < share < 1 or repeats < 1:
        raise ValueError(f"share must be in (0, 1) and repeats >= 1, got {share!r} and {repeats!r}")
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i, sample in enumerate(tqdm(samples, desc="noise floor", disable=not progress)):
        pre = prepare(model, tokenizer, sample)
        answer = generate_evicted(model, pre, evict(pre, "okv", 0.0)[0], max_new_tokens)[0]
        full = score(tokenizer.decode(answer, skip_special_tokens=True), sample)
        n = max(1, int(round(share * int((~pre.layout.question).sum()))))
        caches = [gather_cache(pre, random_drop(pre, n, generator)) for _ in range(repeats)]
        out = generate_evicted(model, pre, stack_caches(caches), max_new_tokens)
        rows += [{"task": sample.task, "prompt": i, "repeat": r, "dropped": n, "full": full,
                  "near_full": score(tokenizer.decode(o, skip_special_tokens=True), sample)} for r, o in enumerate(out)]
    return rows


def image_sweep(model: nn.Module, processor, rows: Sequence[dict], policies: Sequence[str], ratios: Sequence[float],
                max_new_tokens: int = 8, progress: bool = True) -> list[dict]:
    """The same policies on a VLM: one row per (image question, policy, ratio), scored like the evaluation harness.

    `rows` are single-image samples of `andes_lib.data` (`images`, `question`, `answer`, `metric`); the prefill
    runs through the vision tower, so the cache holds the visual tokens, which the policies keep or evict like text.
    """
    rows_out = []
    for i, r in enumerate(tqdm(rows, desc="image prompts", disable=not progress)):
        if len(r["images"]) != 1:
            raise ValueError(f"image_sweep takes single-image samples; {r.get('id', i)} has {len(r['images'])}")
        batch, start = encode_image(processor, r["images"][0].convert("RGB"), r["question"])
        layout = make_layout(processor.tokenizer, batch["input_ids"], start)
        pre = prefill(model, batch["input_ids"], layout, pixel_values=batch["pixel_values"],
                      image_grid_hw=batch["image_grid_hw"])
        for ratio in ratios:
            for row in answer_rows(model, processor.tokenizer, pre, policies, ratio, max_new_tokens):
                answer = clean_output(row["answer"], processor.tokenizer)
                visual_kept = float(kept_share(pre, row["policy"], ratio)[layout.visual].mean())
                rows_out.append({"prompt": i, "domain": r["domain"], "task": r["task"], "tokens": layout.length,
                                 "visual": int(layout.visual.sum()), "visual_kept": visual_kept, **row,
                                 "answer": answer, "score": metric_score(answer, r["answer"], r["metric"])})
    return rows_out


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every `interval` s), in bytes."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self.start = interval, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


@torch.no_grad()
def decode_speed(model: nn.Module, pre: Prefill, policy: str, ratio: float, new_tokens: int) -> dict[str, float]:
    """Tokens/s of `new_tokens` forced greedy steps on the compressed cache (batch 1), its bytes and RSS growth."""
    with PeakRSS() as mem:
        cache, _ = evict(pre, policy, ratio)
        size = cache_bytes(cache)
        start = time.perf_counter()
        generate_evicted(model, pre, cache, new_tokens, min_new_tokens=new_tokens)
        seconds = time.perf_counter() - start
    return {"policy": policy, "ratio": ratio, "decode_tok_s": new_tokens / seconds, "kv_bytes": size,
            "peak_rss_growth": mem.growth}


@torch.no_grad()
def prefill_speed(model: nn.Module, pre: Prefill) -> dict[str, float]:
    """Tokens/s of the plain prefill (no scoring hooks) next to the scored prefill this `Prefill` took."""
    ids = pre.input_ids[:, :-1]
    start = time.perf_counter()
    model(input_ids=ids, use_cache=True)
    plain = time.perf_counter() - start
    return {"prefill_tok_s": ids.shape[1] / plain, "scored_prefill_tok_s": ids.shape[1] / pre.seconds,
            "scoring_overhead": pre.seconds / plain}
