"""Profiling: the roofline arithmetic, the device projection, and a decode loop that matches generate()."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from andes_lib.profile import (PHONE_SOC, LLMShape, copy_bandwidth, decode_bytes_per_token, kv_bytes_per_token,
                               measure_decode, project, roofline_tokens_per_s, weight_bytes)


def test_roofline_arithmetic_and_errors() -> None:
    assert kv_bytes_per_token(30, 3, 64, 2) == 2 * 30 * 3 * 64 * 2
    assert decode_bytes_per_token(1e9, 1e3, 100) == 1e9 + 1e5
    assert roofline_tokens_per_s(10.0, 5e8) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="positive"):
        roofline_tokens_per_s(0.0, 1e6)


def test_projection_scales_with_bits_and_speculation() -> None:
    shape = LLMShape("x", 1e9, 28, 8, 128)
    fp16, low = project(shape, 16.0, context=0), project(shape, 2.0, context=0)
    assert low["decode_tokens_per_s"] == pytest.approx(8 * fp16["decode_tokens_per_s"])
    assert fp16["decode_tokens_per_s"] == pytest.approx(PHONE_SOC.usable_gbs * 1e9 / 2e9)
    assert project(shape, 2.0, speculative_tokens_per_pass=3, context=0)["decode_tokens_per_s"] == pytest.approx(
        3 * low["decode_tokens_per_s"])
    assert project(shape, 2.0, context=1000)["memory_gib"] > low["memory_gib"]
    with pytest.raises(ValueError, match="bpw"):
        project(shape, 0.0)


def test_copy_bandwidth_is_positive_and_rejects_tiny_buffers() -> None:
    bw = copy_bandwidth(8 * 2**20, repeats=2)
    assert bw["median_gbs"] > 0 and bw["best_gbs"] >= bw["median_gbs"]
    with pytest.raises(ValueError, match="1 MiB"):
        copy_bandwidth(1024)


def test_measure_decode_matches_greedy_generate() -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    ids = torch.randint(0, 96, (1, 10))
    prof = measure_decode(model, ids, new_tokens=6, warmup=1)
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6,
                         do_sample=False)
    assert prof.tokens == ref[0, 10:].tolist()
    assert prof.decode_tokens_per_s > 0 and prof.prefill_s > 0 and prof.peak_rss_mib > 0
    assert weight_bytes(model) == sum(p.numel() * 4 for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    with pytest.raises(ValueError, match="batch 1"):
        measure_decode(model, torch.zeros(2, 4, dtype=torch.long))
