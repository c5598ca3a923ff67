"""Profiling: the roofline arithmetic, the device projection, and a decode loop that matches generate()."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from transformers import Qwen3Config, Qwen3ForCausalLM

from andes_lib.profile import (PHONE_SOC, LeanDecoder, LLMShape, copy_bandwidth, decode_bytes_per_token,
                               kv_bytes_per_token, measure_decode, project, read_bandwidth, roofline_bandwidth,
                               roofline_tokens_per_s, weight_bytes)
from andes_lib.profile.prepack import PackedLinear, prepack_available, prepack_linears


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
    rd = read_bandwidth(8 * 2**20, repeats=2)
    assert rd["median_gbs"] > 0 and rd["threads"] == torch.get_num_threads()
    both = roofline_bandwidth(8 * 2**20, repeats=2)
    assert both["gbs"] == max(both["copy_gbs"], both["read_gbs"])


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


def _tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(vocab_size=97, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True)).eval()
    return Qwen3ForCausalLM(Qwen3Config(**common, head_dim=16, tie_word_embeddings=False)).eval()


@pytest.mark.parametrize("kernel", ["matmul", "split"])
@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_lean_decoder_tokens_equal_greedy_generate(kind: str, kernel: str) -> None:
    model = _tiny(kind)
    ids = torch.randint(0, 97, (1, 10), generator=torch.Generator().manual_seed(1))
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                         do_sample=False)[0, 10:].tolist()
    dec = LeanDecoder(model, max_len=32, kernel=kernel)
    assert dec.generate(ids, 12) == ref
    assert dec.generate(ids, 12) == ref  # a second prompt resets the static cache
    prof = measure_decode(dec, ids, new_tokens=12, warmup=1)
    assert prof.tokens == ref and prof.decode_tokens_per_s > 0
    # it streams every weight once: the model's parameters (LM head once) less the embedding table but one row,
    # less the layer norms' weights (folded into the matrices after them)
    emb = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is emb
    folded = sum(p.nbytes for n, p in model.named_parameters() if n.endswith(("layernorm.weight", "model.norm.weight")))
    assert dec.weight_bytes() == weight_bytes(model) - sum(b.nbytes for b in model.buffers()) - folded - (
        emb.nbytes - emb[0].nbytes) + (emb.nbytes if tied else 0)
    with pytest.raises(ValueError, match="max_len"):
        dec.generate(ids, 40)
    with pytest.raises(ValueError, match="batch 1"):
        dec.prefill(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="kernel must be one of"):
        LeanDecoder(model, kernel="cuda")


def test_lean_decoder_runs_the_nano_vlm_language_model() -> None:
    import andes_lib

    model = andes_lib.build_model("nano").eval()
    ids = torch.randint(10, 200, (1, 8), generator=torch.Generator().manual_seed(2))
    ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6,
                         do_sample=False)[0, 8:].tolist()
    assert LeanDecoder(model, max_len=16).generate(ids, 6) == ref


@pytest.mark.skipif(not prepack_available(), reason="this torch build has no oneDNN linear prepack")
@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_prepacked_linears_compute_the_same_and_keep_weights_tied(kind: str) -> None:
    model = _tiny(kind)
    ids = torch.randint(0, 96, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_logits = model(ids).logits
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                         do_sample=False)[0, 10:].tolist()
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert prepack_linears(model) == linears
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                          do_sample=False)[0, 10:].tolist() == ref
    if kind == "llama":  # tied: the LM head still reads the embedding's Parameter
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with pytest.raises(ValueError, match="rows"):
        prepack_linears(_tiny(kind), rows=0)
    with pytest.raises(ValueError, match="float32"):
        PackedLinear(torch.nn.Linear(4, 4).to(torch.float64))
