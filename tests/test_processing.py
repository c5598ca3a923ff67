"""Image sizing, image-mode conversion, bad inputs, chat template and span expansion."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import andes_lib
from andes_lib.processing.image import get_target_size, load_image, patchify, unpatchify


@pytest.mark.parametrize("size, tokens", [((640, 480), 414), ((224, 224), 64), ((100, 30), 8),
                                          ((1120, 840), 1200), ((1080, 2400), 3354), ((4032, 3024), 4144)])
def test_released_sizing_rule_examples(size, tokens):
    """Token counts of the released AIMv2 processor (patch 14, max_size 1792), SPEC §2.1."""
    w, h = get_target_size(*size, patch_size=14, max_size=1792)
    assert w % 28 == 0 and h % 28 == 0
    assert (w // 28) * (h // 28) == tokens


def test_tiny_images_still_get_four_tokens(proc):
    assert proc.image_processor.num_visual_tokens(1, 1) >= 4


def test_padding_uses_the_mean_colour_and_keeps_aspect(proc):
    ip = proc.image_processor
    rows, (gh, gw) = ip.preprocess_one(Image.new("RGB", (100, 20), (255, 255, 255)))
    img = unpatchify(rows, (gh, gw), ip.patch_size)
    assert img.shape[1] % 16 == 0 and img.shape[2] % 16 == 0
    # corners are padding: normalised mean colour ~ 0; the centre is the white image
    mean_fill = (torch.tensor([int(m * 255) for m in ip.image_mean]) / 255 - torch.tensor(ip.image_mean)) / torch.tensor(ip.image_std)
    torch.testing.assert_close(img[:, 0, 0], mean_fill, atol=1e-4, rtol=0)
    assert img[:, img.shape[1] // 2, img.shape[2] // 2].min() > 1.5


def test_patchify_roundtrip():
    x = torch.randn(3, 32, 48)
    assert torch.equal(unpatchify(patchify(x, 8), (4, 6), 8), x)
    with pytest.raises(ValueError, match="multiples of 2 x patch"):
        patchify(torch.zeros(3, 24, 32), 8)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK"])
def test_image_modes_are_converted_to_rgb(mode):
    arr = (np.arange(40 * 30) % 251).reshape(30, 40)
    if mode == "I;16":
        img = Image.fromarray((arr * 200).astype(np.uint16), mode="I;16")
    else:
        img = Image.fromarray(arr.astype(np.uint8), mode="L").convert(mode)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode == "I;16":  # 16-bit range rescaled, not clipped to white
        assert np.asarray(out).max() == 255 and np.asarray(out).min() == 0


def test_rgba_transparency_becomes_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_image(img).getpixel((0, 0)) == (255, 255, 255)


def test_bad_images_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="corrupt or not an image"):
        load_image(b"this is not a png")
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(png, format="PNG")
    with pytest.raises(ValueError, match="corrupt or not an image"):
        load_image(png.getvalue()[:40])  # truncated file
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(empty)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="too large"):
        load_image(Image.new("L", (8000, 7000)))  # 56 megapixels
    big = io.BytesIO()
    Image.new("L", (9000, 6000)).save(big, format="PNG")
    with pytest.raises(ValueError, match="too large"):
        load_image(big.getvalue())
    with pytest.raises(TypeError, match="expected a PIL image"):
        load_image(12345)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((4, 4), dtype=np.float32))


def test_chat_template_chatml_thinking_and_generation_mask(proc):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "3"}]}]
    text = proc.apply_chat_template(msgs)
    assert text == "<|im_start|>user\n<image>How many?<|im_end|>\n<|im_start|>assistant\n3<|im_end|>\n"
    prompt = proc.apply_chat_template(msgs[:1], add_generation_prompt=True, enable_thinking=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n") and prompt.count("<|im_start|>assistant") == 1
    assert proc.apply_chat_template(msgs[:1], add_generation_prompt=True).endswith("<|im_start|>assistant\n")
    enc = proc.tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert proc.tokenizer.decode(masked) == "3<|im_end|>"


def test_processor_expands_each_image_to_its_token_count(proc):
    imgs = [Image.new("RGB", (64, 64)), Image.new("RGB", (160, 32))]
    text = "<image> and <image>?"
    out = proc(images=[imgs], text=text)
    n = [proc.image_processor.num_visual_tokens(*im.size) for im in imgs]
    ids = out["input_ids"][0].tolist()
    pad = proc.image_token_id
    assert ids.count(pad) == sum(n)
    assert out["image_grid_hw"].tolist() == [[8, 8], [4, 20]] and n == [16, 20]
    decoded = proc.tokenizer.decode(ids)
    assert decoded.startswith("<img>" + "<|vision_pad|>" * n[0] + "</img> and <img>")


def test_processor_input_errors(proc):
    img = Image.new("RGB", (32, 32))
    with pytest.raises(ValueError, match="1 <image> markers but 2 images"):
        proc(images=[img, img], text="<image> hi")
    with pytest.raises(ValueError, match="0 <image> markers but 1 images"):
        proc(images=[img], text="hi")
    with pytest.raises(TypeError, match="text must be a string"):
        proc(text=[1, 2])
    with pytest.raises(ValueError, match="prompt is too long"):
        proc(text="hello " * 5000)
