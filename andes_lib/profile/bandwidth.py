"""This machine's memory bandwidth, from a copy benchmark (STREAM "copy" convention: bytes read + bytes written).

Decoding one token reads every weight once, so memory bandwidth, not arithmetic, bounds small-batch decode on a
phone and on a laptop CPU alike (ANDESVL.md §4 quotes ~200 tokens/s on a phone; the roofline says why).
"""

from __future__ import annotations

import statistics
import time

import torch


def copy_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 7) -> dict[str, float]:
    """Copy an fp32 buffer of `n_bytes` (well past the caches) `repeats` times; GB/s as median and best.

    Counted as 2 * n_bytes per copy (read + write), at torch's current thread count.
    """
    if n_bytes < 2**20 or repeats < 1:
        raise ValueError(f"use at least 1 MiB and one repeat (got {n_bytes} B, {repeats})")
    src = torch.ones(n_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults are not bandwidth
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        rates.append(2 * src.numel() * 4 / (time.perf_counter() - t) / 1e9)
    return {"median_gbs": statistics.median(rates), "best_gbs": max(rates), "threads": torch.get_num_threads(),
            "buffer_mib": n_bytes / 2**20}


def read_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 7) -> dict[str, float]:
    """Stream-read an fp32 buffer of `n_bytes` (a sum: one read per byte, no writes); GB/s as median and best.

    A decode step only reads its weights, so the roofline takes the higher of this and `copy_bandwidth`
    (the stricter ceiling): on some machines a read-only stream outruns a copy's read+write traffic.
    """
    if n_bytes < 2**20 or repeats < 1:
        raise ValueError(f"use at least 1 MiB and one repeat (got {n_bytes} B, {repeats})")
    src = torch.ones(n_bytes // 4, dtype=torch.float32)
    src.sum()  # first touch
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        src.sum()
        rates.append(src.numel() * 4 / (time.perf_counter() - t) / 1e9)
    return {"median_gbs": statistics.median(rates), "best_gbs": max(rates), "threads": torch.get_num_threads(),
            "buffer_mib": n_bytes / 2**20}


def roofline_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 7) -> dict[str, float]:
    """Copy and read bandwidth side by side, and the one the decode roofline uses: the higher median."""
    copy, read = copy_bandwidth(n_bytes, repeats), read_bandwidth(n_bytes, repeats)
    return {"copy_gbs": copy["median_gbs"], "read_gbs": read["median_gbs"],
            "gbs": max(copy["median_gbs"], read["median_gbs"]), "threads": copy["threads"]}
