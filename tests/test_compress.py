"""Packed sub-2-bit weights: exact code round trips, bpw from the file, clear errors on bad files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from andes_lib.compress import (activation_importance, allocate, dequantize_matrix, distill_scales, file_bpw,
                                gptq_batch, gptq_model, gptq_quantize, input_hessians, load_packed, pack_codes,
                                pack_trits, parse_scheme, quantize_matrix, read_metadata, save_packed,
                                sensitivity_table, unpack_codes, unpack_trits)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8, 9, 12])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 1001])
def test_pack_codes_round_trip_is_exact(bits: int, n: int) -> None:
    codes = torch.randint(0, 2**bits, (n,), generator=torch.Generator().manual_seed(bits * n))
    codes[0] = 2**bits - 1  # the extreme code survives
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (n * bits + 7) // 8
    assert torch.equal(unpack_codes(packed, bits, n), codes)


@pytest.mark.parametrize("n", [1, 4, 5, 6, 999])
def test_trits_round_trip_at_1_6_bits(n: int) -> None:
    codes = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(n))
    packed = pack_trits(codes)
    assert packed.numel() == -(-n // 5)
    assert torch.equal(unpack_trits(packed, n), codes)


def test_packing_rejects_codes_out_of_range_and_wrong_sizes() -> None:
    with pytest.raises(ValueError, match="codes must lie in"):
        pack_codes(torch.tensor([0, 4]), 2)
    with pytest.raises(ValueError, match="ternary codes"):
        pack_trits(torch.tensor([3]))
    with pytest.raises(ValueError, match="need 3 bytes"):
        unpack_codes(torch.zeros(2, dtype=torch.uint8), 3, 8)
    with pytest.raises(ValueError, match="corrupt ternary byte"):
        unpack_trits(torch.tensor([250], dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="unknown scheme"):
        parse_scheme("int2")


@pytest.mark.parametrize("name", ["int8-g64", "int4-g32", "int2-g64", "ternary-g96", "vq4-k16", "vq2-k8"])
def test_scheme_codes_survive_storage_and_lower_bits_cost_accuracy(name: str) -> None:
    torch.manual_seed(0)
    w = torch.randn(48, 96)
    scheme = parse_scheme(name)
    stored = quantize_matrix(w, scheme)
    payload = sum(t.numel() * t.element_size() for t in stored.values())
    assert payload * 8 / w.numel() == pytest.approx(scheme.nominal_bpw(48, 96))
    deq = dequantize_matrix(stored, scheme, 48, 96)
    # re-quantising the dequantised weight reproduces the same codes (the codes are what is stored, exactly)
    again = quantize_matrix(deq, scheme) if scheme.kind != "vq" else stored
    assert torch.equal(again["codes"], stored["codes"])
    rel = float(((deq - w) ** 2).mean() / (w**2).mean())
    assert rel < ({8: 1e-4, 4: 0.02}.get(scheme.bits, 0.5) if scheme.kind == "int" else 0.5)


def test_calibrated_fit_lowers_the_weighted_error() -> None:
    torch.manual_seed(1)
    w, h = torch.randn(64, 128), torch.rand(128) ** 4
    scheme = parse_scheme("int2-g64")
    errs = [float((((dequantize_matrix(quantize_matrix(w, scheme, imp, search=s), scheme, 64, 128) - w) ** 2) * h)
                  .sum()) for imp, s in [(None, False), (h, True)]]
    assert errs[1] < 0.9 * errs[0]


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def test_packed_file_bpw_loads_and_generates(tmp_path) -> None:
    model = tiny_llama()
    batches = [torch.randint(0, 128, (1, 16))]
    imp = activation_importance(model, batches)
    assert "model.embed_tokens.weight" in imp and imp["model.embed_tokens.weight"].numel() == 64
    pf = save_packed(model, tmp_path / "m.safetensors", {"model.embed_tokens.weight": "int4-g64"},
                     importance=imp, default="ternary-g64")
    # the reported figure is the file's own size over the parameter count (tied weights once)
    n = sum(p.numel() for p in model.parameters())
    assert pf.n_weights == n
    assert pf.bpw == pytest.approx(8 * os.path.getsize(pf.path) / n) == pytest.approx(file_bpw(pf.path))
    assert pf.schemes["model.layers.0.mlp.up_proj.weight"] == "ternary-g64"
    loaded = load_packed(pf.path)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    out = loaded.generate(batches[0], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 20)
    # the norms are kept (fp16), the matrices are the dequantised codes
    sd = model.state_dict()
    ld = loaded.state_dict()
    assert torch.allclose(ld["model.norm.weight"], sd["model.norm.weight"].half().float())
    assert not torch.equal(ld["model.layers.0.mlp.up_proj.weight"], sd["model.layers.0.mlp.up_proj.weight"])


def test_truncated_or_corrupt_packed_file_gives_a_clear_error(tmp_path) -> None:
    pf = save_packed(tiny_llama(), tmp_path / "m.safetensors", {}, default="int2-g64")
    data = pf.path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_packed(cut)
    flipped = bytearray(data)
    flipped[-50] ^= 0xFF  # one byte of a tensor payload
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="CRC-32"):
        load_packed(bad)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="format tag"):
        read_metadata(other)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_metadata(tmp_path / "missing.safetensors")


def test_tampered_metadata_shape_is_refused(tmp_path) -> None:
    pf = save_packed(tiny_llama(), tmp_path / "m.safetensors", {}, default="int4-g64")
    with safe_open(str(pf.path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    entries = json.loads(meta["entries"])
    entries["model.layers.0.mlp.up_proj.weight"]["rows"] = 64  # claims fewer rows than the codes hold
    meta["entries"] = json.dumps(entries)
    save_file(tensors, tmp_path / "t.safetensors", metadata=meta)
    with pytest.raises(ValueError, match="codes"):
        load_packed(tmp_path / "t.safetensors")


def test_allocation_respects_budget_and_favours_sensitive_layers() -> None:
    torch.manual_seed(2)
    weights = {"a": torch.randn(32, 64), "b": torch.randn(32, 64)}
    imp = {"a": torch.full((64,), 100.0), "b": torch.full((64,), 1.0)}  # "a" feeds much larger activations
    menu = ["ternary-g64", "int2-g64", "int4-g64"]
    table = sensitivity_table(weights, menu, imp)
    alloc = allocate(weights, menu, 3.3, table)  # room to lift one matrix to int4, not both
    assert alloc.bpw <= 3.3
    assert parse_scheme(alloc.schemes["a"]).bits > parse_scheme(alloc.schemes["b"]).bits
    with pytest.raises(ValueError, match="below the cheapest"):
        allocate(weights, menu, 1.0, table)


def test_nano_vlm_packs_loads_and_generates(tmp_path) -> None:
    import andes_lib
    from andes_lib.data import build_dataset

    model = andes_lib.build_model("nano").eval()
    proc = andes_lib.build_processor("nano")
    pf = save_packed(model, tmp_path / "nano.safetensors", {}, default="int4-g64")
    assert pf.bpw < 5.0
    loaded = load_packed(pf.path)
    assert type(loaded) is type(model)
    sample = build_dataset("test", "general_vqa", 1)[0]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    batch = proc(images=[sample["images"]], text=[proc.apply_chat_template(msgs, add_generation_prompt=True)])
    with torch.no_grad():
        ref, got = model(**batch).logits, loaded(**batch).logits
    assert got.shape == ref.shape and torch.isfinite(got).all()
    assert loaded.generate(**batch, max_new_tokens=3, do_sample=False).shape[1] == batch["input_ids"].shape[1] + 3


def _correlated_inputs(cols: int, n: int = 512) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    return (torch.randn(n, cols, generator=g) * torch.linspace(0.2, 3.0, cols)) @ mix


@pytest.mark.parametrize("name", ["int3-g32", "int2-g32", "ternary-g64"])
def test_gptq_lowers_the_output_error_and_stores_ordinary_codes(name: str) -> None:
    torch.manual_seed(4)
    w, x = torch.randn(48, 128), _correlated_inputs(128)
    h = x.T @ x / x.shape[0]
    scheme = parse_scheme(name)
    stored = gptq_quantize(w, h, scheme)
    assert {k: (tuple(t.shape), t.element_size()) for k, t in stored.items()} == scheme.stored_shapes(48, 128)
    out_err = {}
    for label, st in [("gptq", stored), ("rtn", quantize_matrix(w, scheme, torch.diag(h), search=True))]:
        deq = dequantize_matrix(st, scheme, 48, 128)
        out_err[label] = float(((x @ (deq - w).T) ** 2).mean())
    assert out_err["gptq"] < 0.8 * out_err["rtn"]
    # the batched path gives the same codes as one matrix at a time
    codes, scales = gptq_batch(torch.stack([w, w]), [h, h], scheme)
    assert torch.equal(codes[0], codes[1])
    with pytest.raises(ValueError, match="must divide"):
        gptq_quantize(torch.randn(4, 100), torch.eye(100), scheme)
    with pytest.raises(ValueError, match="int and ternary"):
        gptq_quantize(w, h, "vq4-k16")


def test_gptq_and_distilled_files_keep_their_bpw_load_and_generate(tmp_path) -> None:
    model = tiny_llama()
    calib = [torch.randint(0, 128, (1, 24), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    hess = input_hessians(model, calib)
    # q/k/v (and gate/up) read the same input: one shared Hessian object
    assert hess["model.layers.0.self_attn.q_proj.weight"] is hess["model.layers.0.self_attn.v_proj.weight"]
    schemes = {"model.embed_tokens.weight": "int4-g64"}
    q = gptq_model(model, schemes, hess, "int2-g64")
    assert set(q) == {n for n, p in model.named_parameters() if p.ndim == 2}
    plain = save_packed(model, tmp_path / "plain.safetensors", schemes, default="int2-g64")
    gptq = save_packed(model, tmp_path / "gptq.safetensors", schemes, default="int2-g64", quantized=q)
    assert gptq.bpw == pytest.approx(file_bpw(gptq.path)) == pytest.approx(plain.bpw, rel=1e-3)
    tuned, student, cost = distill_scales(model, q, schemes, "int2-g64", calib, steps=6, lr=0.05)
    assert cost["last_kl"] < cost["first_kl"] and cost["seconds"] > 0
    assert all(torch.equal(tuned[n]["codes"], q[n]["codes"]) for n in q)  # only scales (and norms) train
    dist = save_packed(student, tmp_path / "dist.safetensors", schemes, default="int2-g64", quantized=tuned)
    assert dist.bpw == pytest.approx(gptq.bpw, rel=1e-3)
    assert load_packed(dist.path).generate(calib[0], max_new_tokens=3, do_sample=False).shape == (1, 27)
    bad = {**q, "model.layers.0.mlp.up_proj.weight": {"codes": q["model.layers.0.mlp.up_proj.weight"]["codes"][:-1],
                                                        "scales": q["model.layers.0.mlp.up_proj.weight"]["scales"]}}
    with pytest.raises(ValueError, match="do not fit"):
        save_packed(model, tmp_path / "bad.safetensors", schemes, default="int2-g64", quantized=bad)


def test_distillation_student_holds_the_stored_weights_of_matrices_it_does_not_tune() -> None:
    model = tiny_llama()
    calib = [torch.randint(0, 128, (1, 16), generator=torch.Generator().manual_seed(5))]
    q = gptq_model(model, {}, input_hessians(model, calib), "int4-g64")
    name = "model.layers.1.mlp.down_proj.weight"
    q.pop(name)  # left to the file's own fit: the student must see that fit, not the fp32 weight
    _, student, _ = distill_scales(model, q, {}, "int4-g64", calib, steps=1)
    w = dict(model.named_parameters())[name]
    expected = dequantize_matrix(quantize_matrix(w, parse_scheme("int4-g64")), parse_scheme("int4-g64"), *w.shape)
    assert torch.equal(dict(student.named_parameters())[name], expected)


def test_chat_calibration_windows_carry_the_template() -> None:
    from andes_lib.compress import chat_chunks, text_chunks
    from andes_lib.model.smol import load_smol_tokenizer

    tok = load_smol_tokenizer()
    chat = chat_chunks(tok, 3, 64, seed=2)
    assert len(chat) == 3 and all(c.shape == (1, 64) for c in chat)
    start = tok.convert_tokens_to_ids("<|im_start|>")
    assert all(int((c == start).sum()) >= 1 for c in chat)  # every window holds turns of the template
    assert not any(int((c == start).sum()) for c in text_chunks(tok, 3, 64, seed=2))
    assert torch.equal(chat_chunks(tok, 3, 64, seed=2)[1], chat[1])  # reproducible
    with pytest.raises(ValueError, match="n_chunks"):
        chat_chunks(tok, 0, 64)
