"""`AndesVLProcessor`: images -> packed patches, text -> ChatML ids with expanded image spans (SPEC §2).

A transformers `ProcessorMixin`, so TRL's trainers take it as `processing_class` and `save_pretrained` /
`from_pretrained` round-trip it. Each "<image>" marker in the text becomes
`<img>` + N x `<|vision_pad|>` + `</img>`, N = (W / 2p) * (H / 2p) for that image's canvas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor

from .image import MAX_INPUT_PIXELS, get_target_size, load_image, patchify, resize_and_pad
from .tokenizer import IMAGE_END, IMAGE_PAD, IMAGE_START


class AndesVLImageProcessor(BaseImageProcessor):
    """Native-resolution sizing with a pixel budget, mean-colour padding, normalisation and 2x2-block patches."""

    model_input_names = ["pixel_values", "image_grid_hw"]

    def __init__(
        self,
        patch_size: int = 14,
        max_size: int = 1792,
        min_size: int = 0,
        image_scale: float = 1.0,
        max_resolution: int = 4172,
        image_mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073),
        image_std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711),
        max_input_pixels: int = MAX_INPUT_PIXELS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(patch_size, int) or patch_size <= 0:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
        self.patch_size, self.max_size, self.min_size = patch_size, max_size, min_size
        self.image_scale, self.max_resolution = image_scale, max_resolution
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        self.max_input_pixels = max_input_pixels

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        return get_target_size(width, height, self.patch_size, self.max_size, self.min_size,
                               self.image_scale, self.max_resolution)

    def num_visual_tokens(self, width: int, height: int) -> int:
        """LLM tokens for an image of this size: one per 2x2 patch block of its canvas."""
        tw, th = self.target_size(width, height)
        return (tw // (2 * self.patch_size)) * (th // (2 * self.patch_size))

    def preprocess_one(self, image) -> tuple[torch.Tensor, tuple[int, int]]:
        """One image -> (h*w, 3*p*p) normalised patch rows and its (h, w) patch grid."""
        image = load_image(image, self.max_input_pixels)
        size = self.target_size(*image.size)
        fill = tuple(int(m * 255) for m in self.image_mean)
        canvas = resize_and_pad(image, size, fill)
        x = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        x = (x - mean) / std
        p = self.patch_size
        return patchify(x, p), (size[1] // p, size[0] // p)

    def __call__(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        flat = flatten_images(images)
        if not flat:
            raise ValueError("no images were given")
        rows, grids = zip(*(self.preprocess_one(im) for im in flat))
        return BatchFeature({"pixel_values": torch.cat(rows), "image_grid_hw": torch.tensor(grids, dtype=torch.long)})

    preprocess = __call__


def flatten_images(images) -> list:
    """Accept one image, a list of images, or a list (per sample) of lists of images; keep reading order."""
    if images is None:
        return []
    if isinstance(images, (Image.Image, np.ndarray, str, bytes)) or not isinstance(images, Sequence):
        return [images]
    flat = []
    for item in images:
        flat.extend(flatten_images(item) if isinstance(item, (list, tuple)) else [item])
    return flat


class AndesVLProcessor(ProcessorMixin):
    """Image processor + tokenizer + ChatML template, with the AndesVL image-span expansion."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None, **kwargs):
        self.image_token = "<image>"
        super().__init__(image_processor, tokenizer, chat_template=chat_template or tokenizer.chat_template)
        vocab = tokenizer.get_vocab()
        missing = [t for t in (IMAGE_START, IMAGE_END, IMAGE_PAD) if t not in vocab]
        if missing:
            raise ValueError(f"the tokenizer lacks the AndesVL image tokens {missing}; see add_andes_tokens()")
        self.image_token_id = vocab[IMAGE_PAD]

    def image_span(self, n_tokens: int) -> str:
        return IMAGE_START + IMAGE_PAD * n_tokens + IMAGE_END

    def __call__(self, images=None, text=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Tokenise `text` (str or list), expanding its "<image>" markers with the given `images` in order."""
        if text is None:
            raise ValueError("AndesVLProcessor needs text (use processor.image_processor for images alone)")
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
        flat = flatten_images(images)
        n_markers = sum(t.count(self.image_token) for t in texts)
        if n_markers != len(flat):
            raise ValueError(
                f"the text has {n_markers} {self.image_token} markers but {len(flat)} images were given; "
                "each image needs exactly one marker (a {'type': 'image'} item in the chat messages)"
            )
        data = {}
        if flat:
            vision = self.image_processor(flat)
            spans = iter(self.image_span(int(h * w) // 4) for h, w in vision["image_grid_hw"].tolist())
            texts = ["".join(part if i == 0 else next(spans) + part
                             for i, part in enumerate(t.split(self.image_token))) for t in texts]
            data.update(vision)
        kwargs.pop("images_kwargs", None)
        text_kwargs = {k: v for k, v in kwargs.items() if k in (
            "padding", "truncation", "max_length", "padding_side", "return_attention_mask", "add_special_tokens")}
        max_len = getattr(self.tokenizer, "model_max_length", None)
        encoded = self.tokenizer(texts, return_tensors=None, **text_kwargs)
        longest = max(len(ids) for ids in encoded["input_ids"])
        if max_len and longest > max_len and not text_kwargs.get("truncation"):
            raise ValueError(f"prompt is too long: {longest} tokens, the model accepts at most {max_len}")
        data.update(encoded)
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_grid_hw"]
