"""The AndesVL model: pixel shuffle, packing, splicing, save/load, generate, TRL, presets."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

import andes_lib
from andes_lib.model.vision import block_order_coords
from andes_lib.processing.image import patchify


@pytest.fixture(scope="module")
def nano():
    return andes_lib.build_model("nano"), andes_lib.build_processor("nano")


def chat(proc, n_images: int, question: str = "What colour is the shape?", answer: str | None = None) -> list:
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
    msgs = [{"role": "user", "content": content}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return msgs


def test_pixel_shuffle_is_a_view_of_2x2_blocks():
    # A 4x4 patch grid whose patch (r, c) has feature vector [10r + c, -(10r + c)].
    rows, cols = block_order_coords(4, 4)
    feats = torch.stack([10 * rows + cols, -(10 * rows + cols)], dim=1).float()  # (16, 2) in 2x2-block order
    merged = andes_lib.pixel_shuffle(feats)
    assert merged.shape == (4, 8)
    # token 0 = top-left 2x2 block: patches (0,0), (0,1), (1,0), (1,1)
    assert merged[0].tolist() == [0, 0, 1, -1, 10, -10, 11, -11]
    # token 1 = block right of it: patches (0,2), (0,3), (1,2), (1,3)
    assert merged[1].tolist() == [2, -2, 3, -3, 12, -12, 13, -13]
    # token 3 = bottom-right block
    assert merged[3].tolist() == [22, -22, 23, -23, 32, -32, 33, -33]


def test_patchify_order_matches_block_order_coords():
    p = 2
    img = torch.arange(3 * 8 * 12, dtype=torch.float).reshape(3, 8, 12)
    rows = patchify(img, p)  # (4*6, 12)
    r, c = block_order_coords(4, 6)
    for i in range(rows.shape[0]):
        expected = img[:, r[i] * p:(r[i] + 1) * p, c[i] * p:(c[i] + 1) * p].reshape(-1)
        assert torch.equal(rows[i], expected)


@pytest.mark.parametrize("bad", [torch.zeros(6, 4), torch.zeros(2, 3, 4)])
def test_pixel_shuffle_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="pixel_shuffle"):
        andes_lib.pixel_shuffle(bad)


def test_packed_images_attend_only_within_themselves(nano):
    model, proc = nano
    a, b = Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (96, 64), (20, 200, 90))
    both = proc.image_processor([a, b])
    alone = [proc.image_processor([x]) for x in (a, b)]
    with torch.no_grad():
        packed = model.model.vision_tower(**both).last_hidden_state
        single = torch.cat([model.model.vision_tower(**x).last_hidden_state for x in alone])
    torch.testing.assert_close(packed, single, atol=1e-5, rtol=1e-5)


def test_vision_tower_runs_under_bf16_autocast(nano):
    """`accelerate launch --mixed_precision bf16` trains under autocast: the packed attention must accept bf16."""
    model, proc = nano
    inputs = proc.image_processor([Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (96, 64), (9, 9, 9))])
    with torch.no_grad():
        full = model.model.vision_tower(**inputs).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model.model.vision_tower(**inputs).last_hidden_state
    assert half.shape == full.shape and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, atol=0.1, rtol=0.1)


def test_splice_writes_each_image_exactly_at_its_placeholders(nano):
    model, proc = nano
    images = [Image.new("RGB", (64, 32), "red"), Image.new("RGB", (32, 64), "blue"), Image.new("RGB", (48, 48), "white")]
    texts = [proc.apply_chat_template(chat(proc, 2), add_generation_prompt=True),
             proc.apply_chat_template(chat(proc, 1), add_generation_prompt=True)]
    proc.tokenizer.padding_side = "right"
    batch = proc(images=[images[:2], images[2:]], text=texts, padding=True)
    base = model.model
    with torch.no_grad():
        feats = base.get_image_features(batch["pixel_values"], batch["image_grid_hw"])
        text_emb = base.get_input_embeddings()(batch["input_ids"])
        spliced = base.splice_image_features(batch["input_ids"], text_emb, feats)
    ids = batch["input_ids"]
    pad = model.config.image_token_id
    counts = [int(h * w) // 4 for h, w in batch["image_grid_hw"].tolist()]
    assert sum(counts) == int((ids == pad).sum()) == feats.shape[0]
    # image 0 and 1 fill sample 0's two spans in order, image 2 fills sample 1
    pos0 = (ids[0] == pad).nonzero().squeeze(1)
    pos1 = (ids[1] == pad).nonzero().squeeze(1)
    torch.testing.assert_close(spliced[0, pos0], feats[: counts[0] + counts[1]])
    torch.testing.assert_close(spliced[1, pos1], feats[counts[0] + counts[1]:])
    # every span is wrapped in <img> ... </img> and the other positions keep their text embeddings
    assert int((ids == model.config.image_start_token_id).sum()) == 3
    assert int((ids == model.config.image_end_token_id).sum()) == 3
    torch.testing.assert_close(spliced[ids != pad], text_emb[ids != pad])


def test_placeholder_image_mismatch_is_a_clear_error(nano):
    model, proc = nano
    img = Image.new("RGB", (64, 64), "red")
    batch = proc(images=[[img]], text=[proc.apply_chat_template(chat(proc, 1), add_generation_prompt=True)])
    ids = batch["input_ids"].clone()
    ids[0, (ids[0] == model.config.image_token_id).nonzero()[0]] = 0  # drop one placeholder
    with pytest.raises(ValueError, match="placeholder tokens but the images give"):
        model(input_ids=ids, pixel_values=batch["pixel_values"], image_grid_hw=batch["image_grid_hw"])
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="image_grid_hw"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"])
    with pytest.raises(ValueError, match="packed patches"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"][:-4],
              image_grid_hw=batch["image_grid_hw"])


def test_save_and_reload_give_identical_logits(nano, tmp_path):
    model, proc = nano
    img = Image.new("RGB", (80, 48), (10, 120, 240))
    batch = proc(images=[[img]], text=[proc.apply_chat_template(chat(proc, 1), add_generation_prompt=True)])
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    again = AutoModelForImageTextToText.from_pretrained(tmp_path)
    proc2 = andes_lib.AndesVLProcessor.from_pretrained(tmp_path)
    assert isinstance(again, andes_lib.AndesVLForConditionalGeneration)
    batch2 = proc2(images=[[img]], text=[proc2.apply_chat_template(chat(proc2, 1), add_generation_prompt=True)])
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    assert torch.equal(batch["pixel_values"], batch2["pixel_values"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch2).logits)
    assert again.lm_head.weight.data_ptr() == again.get_input_embeddings().weight.data_ptr()  # still tied


def test_generate_with_and_without_images(nano):
    model, proc = nano
    img = Image.new("RGB", (64, 64), "green")
    with_img = proc(images=[[img]], text=[proc.apply_chat_template(chat(proc, 1), add_generation_prompt=True)])
    text_only = proc(text=[proc.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True)])
    for batch in (with_img, text_only):
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
        assert out.shape == (1, batch["input_ids"].shape[1] + 6) or out[0, -1] == proc.tokenizer.eos_token_id
    # the image changes what the model computes: different pixels, different next-token logits
    other = proc(images=[[Image.new("RGB", (64, 64), "black")]],
                 text=[proc.apply_chat_template(chat(proc, 1), add_generation_prompt=True)])
    with torch.no_grad():
        assert not torch.allclose(model(**with_img).logits[0, -1], model(**other).logits[0, -1])


def test_batched_left_padded_generation_matches_single(nano):
    model, proc = nano
    proc.tokenizer.padding_side = "left"
    imgs = [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (128, 64), "blue")]
    texts = [proc.apply_chat_template(chat(proc, 1, q), add_generation_prompt=True) for q in ("Colour?", "What is it?")]
    batch = proc(images=[[imgs[0]], [imgs[1]]], text=texts, padding=True)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)[:, batch["input_ids"].shape[1]:]
    for i in range(2):
        single = proc(images=[[imgs[i]]], text=[texts[i]])
        ref = model.generate(**single, max_new_tokens=5, do_sample=False)[:, single["input_ids"].shape[1]:]
        assert torch.equal(out[i, : ref.shape[1]], ref[0])
    proc.tokenizer.padding_side = "right"


def test_trl_sft_step_trains_the_vision_tower(nano, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, proc = andes_lib.build_model("nano", seed=1), nano[1]
    rows = [{"images": [Image.new("RGB", (64 + 16 * i, 48), (255 * (i % 2), 0, 0))],
             "messages": chat(proc, 1, "What colour?", "red" if i % 2 else "black")} for i in range(4)]
    args = SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
                     use_cpu=True, bf16=False, report_to="none", save_strategy="no", gradient_checkpointing=False,
                     max_length=None)
    before = model.model.vision_tower.patch_embed.weight.detach().clone()
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=proc)
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, model.model.vision_tower.patch_embed.weight.detach())


@pytest.mark.parametrize("name", ["andesvl-0.6b", "andesvl-1b", "andesvl-2b", "andesvl-4b"])
def test_paper_presets_match_released_sizes_on_meta(name):
    model = andes_lib.build_model(name)
    assert next(model.parameters()).device.type == "meta"
    total = andes_lib.count_parameters(model)["total"]
    assert abs(total / andes_lib.PAPER_PARAMS[name] - 1) < 0.03


def test_nano_is_small_and_presets_validate_names():
    assert andes_lib.count_parameters(andes_lib.build_model("nano"))["total"] <= 10_000_000
    with pytest.raises(ValueError, match="unknown preset"):
        andes_lib.build_model("andesvl-8b")
    with pytest.raises(TypeError, match="preset name must be a string"):
        andes_lib.build_model(3)
    with pytest.raises(ValueError, match="accounting preset"):
        andes_lib.build_processor("andesvl-2b")


def test_siglip2_style_runs_and_differs_from_aimv2():
    from andes_lib.config import AndesVisionConfig
    from andes_lib.model.vision import AndesVisionModel

    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, patch_size=4,
                 position_grid=8)
    sig = AndesVisionModel(AndesVisionConfig(style="siglip2", **small))
    aim = AndesVisionModel(AndesVisionConfig(style="aimv2", **small))
    assert sig.patch_embed.bias is not None and aim.patch_embed.bias is None
    assert isinstance(sig.post_norm, torch.nn.LayerNorm) and isinstance(aim.post_norm, torch.nn.RMSNorm)
    x, grid = torch.randn(4 * 6, 48), torch.tensor([[4, 6]])
    assert sig(x, grid).last_hidden_state.shape == aim(x, grid).last_hidden_state.shape == (24, 64)


@pytest.mark.slow
def test_real_llm_preset_answers_a_factual_question():
    model, proc = andes_lib.build_model("smol"), andes_lib.build_processor("smol")
    assert 130e6 < andes_lib.count_parameters(model)["language_model"] < 140e6
    prompt = proc.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                      add_generation_prompt=True)
    batch = proc(text=[prompt])
    out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    answer = proc.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    assert "Paris" in answer
    # the fresh vision tower plugs into the real LLM: an image prompt runs end to end
    img_batch = proc(images=[[Image.new("RGB", (64, 64), "red")]],
                     text=[proc.apply_chat_template(chat(proc, 1), add_generation_prompt=True)])
    assert model.generate(**img_batch, max_new_tokens=3, do_sample=False).shape[1] > img_batch["input_ids"].shape[1]
