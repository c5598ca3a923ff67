"""1+N LoRA and QAT/PTQ/QALFT (chapters 07-08) on the random nano model with tiny hand-made data, one thread.

Adapters off gives bit-identical base logits; a mixed batch equals per-adapter runs; frozen encodings stay
frozen through QALFT; a corrupt or missing adapter file is named and the others keep working; our fake
quantization matches torchao's on the same tensors (skipped only when torchao is absent).
"""

from __future__ import annotations

import random

from pathlib import Path

import pytest
import torch
from PIL import Image

import andes_lib
from andes_lib.adapters import (TASKS, AdapterError, AdapterRegistry, attach_adapters, get_tasks, lora_config,
                                memory_table, mixed_logits, train_adapter, using)
from andes_lib.quant import (EncodingsError, calibrate, encodings_digest, fake_quantize_per_token,
                             fake_quantize_weight, load_encodings, parse_scheme, qalft_train, quant_layers,
                             quantize_dequantize, save_encodings, weight_encoding)
from andes_lib.quant.fake import choose_qparams
from andes_lib.train.collate import collate

pytestmark = pytest.mark.usefixtures("one_torch_thread")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)}


def rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name = rng.choice(sorted(COLOURS))
        out.append({"images": [Image.new("RGB", (32, 32), COLOURS[name])],
                    "messages": [{"role": "user", "content": [{"type": "image", "text": None},
                                                              {"type": "text", "text": "What colour is it?"}]},
                                 {"role": "assistant", "content": [{"type": "text", "text": name}]}]})
    return out


@pytest.fixture(scope="module")
def batch(proc):
    b = collate(proc, rows(3), loss_on="assistant")
    b.pop("labels")
    return b


def nano():
    return andes_lib.build_model("nano", seed=0).eval()


def trained_pair(proc):
    """nano with adapters 'x1' and 'x2', each trained 2 steps (so their B matrices are non-zero)."""
    model = attach_adapters(nano(), ["x1", "x2"], lora_config(r=4, alpha=8))
    for i, name in enumerate(["x1", "x2"]):
        train_adapter(model, name, proc, rows(4, seed=i), steps=2, batch_size=2, lr=1e-2)
    return model


# ------------------------------------------------------------------------------------------------- fake quant
def test_schemes_parse_and_refuse() -> None:
    assert parse_scheme("w4a8").group_size == 32 and parse_scheme("w8a8").group_size == 0
    assert parse_scheme("w4a16").a_bits == 16 and parse_scheme("fp").is_fp
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        parse_scheme("int4")
    with pytest.raises(TypeError):
        parse_scheme(4)


def test_fake_quant_grid_and_straight_through() -> None:
    w = torch.randn(8, 64, requires_grad=True)
    enc = weight_encoding(w, 4, 32)
    q = fake_quantize_weight(w, enc)
    codes = (q.detach().reshape(8, 2, 32) / enc.scale).round()
    assert codes.min() >= -8 and codes.max() <= 7 and torch.allclose(codes * enc.scale, q.detach().reshape(8, 2, 32))
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # STE: rounding is the identity backwards
    x = torch.randn(5, 64) * 3
    assert torch.equal(fake_quantize_per_token(x, 8, clip=1.0).abs().max() <= 1.0 + 1e-6, torch.tensor(True))


def test_matches_torchao(monkeypatch) -> None:
    isolated = Path(__file__).resolve().parents[1] / ".venv" / "isolated"  # where scripts/setup.sh puts torchao
    if isolated.is_dir():
        monkeypatch.syspath_prepend(str(isolated))
    pytest.importorskip("torchao")
    from torchao.quantization.qat import IntxFakeQuantizeConfig
    from torchao.quantization.qat.fake_quantizer import IntxFakeQuantizer

    torch.manual_seed(0)
    w, x = torch.randn(16, 128), torch.randn(2, 7, 128) * 4
    enc4, enc8 = weight_encoding(w, 4, 32), weight_encoding(w, 8, 0)
    cases = [  # (name, torchao's result, ours, our largest scale, number of blocks)
        ("int4 per group 32", IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int4, group_size=32))(w),
         fake_quantize_weight(w, enc4), enc4.scale.max(), enc4.scale.numel()),
        ("int8 per channel", IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int8, "per_channel"))(w),
         fake_quantize_weight(w, enc8), enc8.scale.max(), enc8.scale.numel()),
        ("int8 per token", IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False))(x),
         fake_quantize_per_token(x, 8), choose_qparams(x, 8, False).scale.max(), 14),
    ]
    # int16 per token (the "A16" of W4A16): IntxFakeQuantizeConfig stops at 8 bits, torchao's primitives do not
    from torchao.quantization.quant_primitives import MappingType, _fake_quantize_affine, choose_qparams_affine

    block = (1, 1, x.shape[-1])
    scale, zero = choose_qparams_affine(x, MappingType.ASYMMETRIC, block, torch.int16, -(2**15), 2**15 - 1,
                                        eps=torch.finfo(torch.float32).smallest_normal)
    cases.append(("int16 per token", _fake_quantize_affine(x, block, scale, zero, torch.int16, -(2**15), 2**15 - 1),
                  fake_quantize_per_token(x, 16), choose_qparams(x, 16, False).scale.max(), 14))
    for name, theirs, ours, step, blocks in cases:
        # identical, except where a block's extreme lands exactly on a rounding tie (int4: max|w| / scale = 7.5,
        # a float ulp decides): at most one element per block, one grid step apart
        assert (ours - theirs).abs().max() <= step * 1.001, name
        assert int((ours != theirs).sum()) <= blocks, name


# ------------------------------------------------------------------------------------------------- 1+N LoRA
def test_adapters_off_is_bit_identical_and_mixed_equals_sequential(proc, batch) -> None:
    with torch.no_grad():
        reference = nano()(**batch).logits
    model = trained_pair(proc)
    with torch.no_grad(), using(model, None):
        off = model(**batch).logits
    assert torch.equal(off, reference)
    assert torch.equal(mixed_logits(model, batch, [None, None, None]), reference)
    mixed = mixed_logits(model, batch, ["x1", "x2", None])
    for i, name in enumerate(["x1", "x2", None]):
        with torch.no_grad(), using(model, name):
            alone = model(**batch).logits
        assert torch.allclose(mixed[i], alone[i], atol=1e-5), name
    assert not torch.allclose(mixed[0], reference[0], atol=1e-4)  # the adapters do change the output
    with pytest.raises(KeyError, match="unknown adapter"):
        mixed_logits(model, batch, ["x1", "nope", None])


def test_registry_names_missing_and_corrupt_files(proc, batch, tmp_path) -> None:
    model = trained_pair(proc)
    model.add_adapter("x3", lora_config(r=4, alpha=8))
    reg = AdapterRegistry(tmp_path / "adapters")
    for name in ["x1", "x2", "x3"]:
        reg.save(model, name, base="nano-test", task="colour")
    with torch.no_grad(), using(model, "x1"):
        expected = model(**batch).logits
    (tmp_path / "adapters" / "x2" / "adapter_model.safetensors").write_bytes(b"garbage")
    (tmp_path / "adapters" / "x3" / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match=r"adapter 'x2': file .*adapter_model.safetensors is corrupt"):
        reg.load(nano(), ["x1", "x2"])
    with pytest.raises(AdapterError, match="unknown adapter 'zz'"):
        reg.load(nano(), ["zz"])
    with pytest.raises(TypeError):
        reg.load(nano(), "x1")
    loaded, failures = reg.load(nano(), strict=False)
    assert sorted(failures) == ["x2", "x3"] and "is missing" in failures["x3"] and "corrupt" in failures["x2"]
    with torch.no_grad(), using(loaded, "x1"):
        assert torch.allclose(loaded(**batch).logits, expected, atol=1e-6)  # the good one keeps working
    table = memory_table(loaded, {"x1": tmp_path / "adapters" / "x1"})
    assert table[0]["memory_bytes"] == table[1]["memory_bytes"] + table[2]["memory_bytes"] > table[1]["memory_bytes"]


def test_task_contracts_score_strictly() -> None:
    assert TASKS["ocr"].score('{"text": "SHOP"}', "SHOP", "exact") == 1.0
    assert TASKS["ocr"].score("SHOP", "SHOP", "exact") == 0.0  # right reading, broken contract
    box = "<|box_start|>(100,100),(300,200)<|box_end|>"
    assert TASKS["gui"].score("tap (200,150)", box, "iou") == 1.0
    assert TASKS["gui"].score("tap (20, 150)", box, "iou") == 0.0 and not TASKS["gui"].valid(box)
    assert TASKS["chart"].score("\\boxed{12}", "12.3", "relaxed") == 1.0
    assert TASKS["multilingual"].score("红色", "red", "exact") == 1.0
    assert TASKS["multilingual"].score("red", "red", "exact") == 0.0
    listed = TASKS["object_list"]
    caption = "a red circle, an orange star and a red circle"
    assert listed.format(caption) == "- red circle\n- orange star\n- red circle"
    assert listed.score("- orange star\n- red circle\n- Red circle\n", caption, "rouge1") == 1.0  # any order
    assert listed.score("- orange star\n- red circle", caption, "rouge1") == 0.0  # one missing
    assert listed.score(caption, caption, "rouge1") == 0.0 and not listed.valid("- red circle\nand a star")


def test_default_tasks_are_the_four_that_teach() -> None:
    assert [t.name for t in get_tasks()] == ["object_list", "gui", "chart", "multilingual"]
    assert get_tasks(["ocr"])[0].domain == "text_rich"  # still available on request


# ------------------------------------------------------------------------------------------------- PTQ / QALFT
def test_encodings_freeze_save_load_and_stay_frozen_in_qalft(proc, batch, tmp_path) -> None:
    base = nano()
    calibrate(base, [batch], "w4a8")
    layers = quant_layers(base)
    assert layers and all(m.mode == "frozen" for m in layers.values())
    assert "lm_head" not in " ".join(layers)
    path = save_encodings(base, tmp_path)
    digest = encodings_digest(base)
    with torch.no_grad():
        quantized = base(**batch).logits
    fresh = load_encodings(nano(), path)
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, quantized)
    other = andes_lib.build_model("nano", seed=1)
    with pytest.raises(EncodingsError, match="different weights"):
        load_encodings(other, path)
    with pytest.raises(EncodingsError, match="no quantization encodings"):
        load_encodings(nano(), tmp_path / "nowhere")
    model = attach_adapters(fresh, ["t"], lora_config(r=4, alpha=8))
    result = qalft_train(model, "t", proc, rows(4), steps=2, batch_size=2, lr=1e-2)
    assert len(result.losses) == 2 and encodings_digest(model) == digest
    assert all(not b.requires_grad for m in quant_layers(model).values() for b in (m.w_scale, m.w_zero, m.a_clip))


def test_quantize_dequantize_round_trip_is_exact_on_grid() -> None:
    enc = choose_qparams(torch.tensor([[-1.0, 0.5, 1.0]]), 8, True)
    once = quantize_dequantize(torch.tensor([[-1.0, 0.5, 1.0]]), enc)
    assert torch.equal(quantize_dequantize(once, enc), once)
