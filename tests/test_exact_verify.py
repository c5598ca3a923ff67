"""Exact verification: bf16-prepacked linears are row-invariant and row-wise attention gives every verified row the
bits of a decoding step, so speculative decoding stays identical to greedy (notebook 10, step 1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import andes_lib
from andes_lib.profile.prepack import PackedLinear, amx_available, pack_dtype, prepack_available, prepack_linears
from andes_lib.specdec import DraftHead, Target, greedy_generate, speculative_generate
from andes_lib.specdec.invariant import ROWWISE, exact_verify, rowwise_sdpa
from andes_lib.specdec.lookup import NgramLookup
from andes_lib.specdec.target import truncate_cache

needs_amx = pytest.mark.skipif(not (prepack_available() and amx_available()),
                               reason="bf16 row invariance is measured on oneDNN with AMX tiles")


class _Attn(torch.nn.Module):
    num_key_value_groups = 2
    is_causal = True


def test_rowwise_attention_gives_each_row_its_single_step_result():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, n, 16, generator=gen) for h, n in ((4, 5), (2, 12), (2, 12)))
    out, _ = rowwise_sdpa(_Attn(), q, k, v, None, scaling=0.25)
    assert out.shape == (1, 5, 4, 16)
    kr, vr = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    for i in range(5):  # row i sees the 7 cached keys and the new ones up to itself
        step = F.scaled_dot_product_attention(q[:, :, i:i + 1], kr[:, :, :8 + i], vr[:, :, :8 + i], scale=0.25)
        torch.testing.assert_close(out[:, i], step[:, :, 0], rtol=1e-5, atol=1e-6)
        single, _ = rowwise_sdpa(_Attn(), q[:, :, i:i + 1], k[:, :, :8 + i], v[:, :, :8 + i], None, scaling=0.25)
        assert torch.equal(out[:, i:i + 1], single)  # bit for bit the call a decoding step makes
    tree = torch.full((1, 1, 5, 12), float("-inf"))  # a draft tree: causal, except that row 3 skips rows 1 and 2
    for i in range(5):
        tree[0, 0, i, :8 + i] = 0.0
    tree[0, 0, 3, 8:10] = float("-inf")
    out, _ = rowwise_sdpa(_Attn(), q, k, v, tree, scaling=0.25)
    keep = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 10])
    single, _ = rowwise_sdpa(_Attn(), q[:, :, 3:4], k[:, :, keep], v[:, :, keep], None, scaling=0.25)
    assert torch.equal(out[:, 3:4], single)
    tree[0, 0, 3, 8:10] = torch.tensor([float("-inf"), 0.0])  # a new tree of the same shape: row 3 sees row 1 now
    out, _ = rowwise_sdpa(_Attn(), q, k, v, tree, scaling=0.25)
    keep = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 9, 10])
    single, _ = rowwise_sdpa(_Attn(), q[:, :, 3:4], k[:, :, keep], v[:, :, keep], None, scaling=0.25)
    assert torch.equal(out[:, 3:4], single)  # not the previous tree's rows


@needs_amx
def test_bf16_packed_linear_rows_do_not_depend_on_their_neighbours():
    linear = torch.nn.Linear(96, 200, bias=True)
    packed = PackedLinear(linear, dtype=torch.bfloat16)
    x = torch.randn(80, 96, generator=torch.Generator().manual_seed(1))
    full = packed(x)
    for m in (1, 7, 32, 33, 80):  # above 32 rows oneDNN changes kernel: the layer goes through in blocks of 32
        assert torch.equal(packed(x[:m]), full[:m])
    assert full.dtype == torch.float32
    torch.testing.assert_close(full, linear(x), rtol=0.05, atol=0.05)


@needs_amx
def test_exact_verify_makes_a_verify_pass_bit_identical_to_decoding_steps():
    model = andes_lib.build_model("nano", seed=3).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    prepack_linears(model, dtype=torch.bfloat16)
    exact_verify(model)
    assert model.config.text_config._attn_implementation == ROWWISE
    target = Target(model)
    ids = torch.randint(10, 400, (1, 40), generator=torch.Generator().manual_seed(4))
    cache = target.new_cache()
    target.forward(ids[:, :30], cache)
    batched = target.forward(ids[:, 30:], cache).logits
    truncate_cache(cache, 30)
    steps = torch.cat([target.forward(ids[:, i:i + 1], cache).logits for i in range(30, 40)], dim=1)
    assert torch.equal(batched, steps)
    reference = model.generate(input_ids=ids, max_new_tokens=40, do_sample=False)[0, 40:].tolist()
    head = DraftHead.from_target(target)
    lookup = NgramLookup([torch.tensor(reference)])  # drafts the reference itself: long accepted runs
    for kw in (dict(mode="chain", draft_len=0, lookup=lookup, lookup_len=8), dict(mode="tree", tree_size=12)):
        assert speculative_generate(target, head, ids, 40, **kw).tokens == reference
    assert greedy_generate(target, ids, 40).tokens == reference


def test_bad_pack_and_attention_settings_are_refused():
    with pytest.raises(ValueError, match="unknown pack dtype"):
        pack_dtype("int3")
    assert pack_dtype("fp32") == torch.float32
    with pytest.raises(ValueError, match="packed dtype"):
        PackedLinear(torch.nn.Linear(4, 4), dtype=torch.float16)
    model = andes_lib.build_model("nano")
    model.config._attn_implementation = "eager"
    with pytest.raises(ValueError, match="sdpa"):
        exact_verify(model)
