"""Image loading, native-resolution sizing and 2x2-block patchification (SPEC §2.1, §2.3).

No tiling: each image keeps its aspect ratio, its sides are rounded UP to multiples of 2 x patch, the area is
capped, it has at least 4 visual tokens, and it is pasted centred on a canvas of the normalisation mean colour.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

MAX_INPUT_PIXELS = 40_000_000  # refuse to decode more than this (a 50-megapixel upload is rejected)

ImageLike = Image.Image | str | Path | bytes | np.ndarray


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16/32-bit greyscale rescaled, alpha composited over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.round().astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, image).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageLike, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """Open a PIL image / path / bytes / HxWxC uint8 array as RGB, with clear errors for bad inputs."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ValueError(f"array images must be uint8 HxW or HxWxC, got {source.dtype} with shape {source.shape}")
        source = Image.fromarray(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        source = path.read_bytes()
        if not source:
            raise ValueError(f"image file is empty: {path}")
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ValueError("image bytes are empty")
        try:
            with Image.open(io.BytesIO(source)) as probe:
                w, h = probe.size
                if w * h > max_pixels:
                    raise ValueError(
                        f"image is too large: {w}x{h} = {w * h / 1e6:.1f} megapixels (limit {max_pixels / 1e6:.0f} MP)"
                    )
                probe.load()
                source = probe.copy()
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
            raise ValueError(f"could not decode image (corrupt or not an image): {type(err).__name__}") from err
    if not isinstance(source, Image.Image):
        raise TypeError(f"expected a PIL image, path, bytes or uint8 array, got {type(source).__name__}")
    w, h = source.size
    if w == 0 or h == 0:
        raise ValueError(f"image has an empty side: {w}x{h}")
    if w * h > max_pixels:
        raise ValueError(f"image is too large: {w}x{h} = {w * h / 1e6:.1f} megapixels (limit {max_pixels / 1e6:.0f} MP)")
    return to_rgb(source)


def get_target_size(
    width: int, height: int, patch_size: int, max_size: int, min_size: int = 0,
    image_scale: float = 1.0, max_resolution: int = 4172,
) -> tuple[int, int]:
    """The released sizing rule (SPEC §2.1): returns the (width, height) canvas, multiples of 2 x patch."""
    base = 2 * patch_size
    w, h = width * image_scale, height * image_scale
    if max(w, h) > max_resolution:
        s = max_resolution / max(w, h)
        w, h = w * s, h * s
    for floor_area in (4 * base * base, min_size * min_size):  # at least 4 visual tokens, then min_size^2
        if w * h < floor_area:
            s = math.sqrt(floor_area / (w * h))
            w, h = w * s, h * s
    if w * h > max_size * max_size:
        s = math.sqrt(max_size * max_size / (w * h))
        w, h = w * s, h * s
    return max(base, math.ceil(w / base) * base), max(base, math.ceil(h / base) * base)


def resize_and_pad(image: Image.Image, size: tuple[int, int], fill: tuple[int, int, int] | int,
                   resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Resize with aspect kept to fit `size`, centred on a `fill`-coloured canvas of the image's mode.

    `resample=NEAREST` moves a label mask exactly as its image moves (`train.patch_labels`)."""
    tw, th = size
    w, h = image.size
    s = min(tw / w, th / h)
    nw, nh = max(1, min(tw, round(w * s))), max(1, min(th, round(h * s)))
    canvas = Image.new(image.mode, (tw, th), fill)
    canvas.paste(image.resize((nw, nh), resample), ((tw - nw) // 2, (th - nh) // 2))
    return canvas


def patchify(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(3, H, W) -> (H/p * W/p, 3*p*p) rows in 2x2-block order: block row, block col, dy, dx (SPEC §2.3)."""
    c, h, w = pixels.shape
    p = patch_size
    if h % (2 * p) or w % (2 * p):
        raise ValueError(f"image sides must be multiples of 2 x patch = {2 * p}, got {w}x{h}")
    x = pixels.reshape(c, h // (2 * p), 2, p, w // (2 * p), 2, p)
    return x.permute(1, 4, 2, 5, 0, 3, 6).reshape(-1, c * p * p)


def unpatchify(rows: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, channels: int = 3) -> torch.Tensor:
    """Inverse of `patchify`: (h*w, 3*p*p) rows of one image back to (3, h*p, w*p)."""
    gh, gw = grid_hw
    p = patch_size
    x = rows.reshape(gh // 2, gw // 2, 2, 2, channels, p, p)
    return x.permute(4, 0, 2, 5, 1, 3, 6).reshape(channels, gh * p, gw * p)
