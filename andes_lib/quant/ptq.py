"""PTQ calibration: compute the encodings on calibration data, freeze them, save them beside the checkpoint.

ANDESVL.md §4: after QAT, post-training quantization fixes the base model's encodings (scales and zero points),
which then stay frozen while adapters are trained (QALFT). Our calibration (a re-creation, the recipe is not
published): one floating-point pass over the calibration batches records, per layer, each token's absolute
maximum and E[x_j^2] per input column; the activation clip is a high quantile of the per-token maxima, and each
weight block's scale is the min-max scale shrunk by the ratio (from `CLIP_RATIOS`) that minimises the
activation-weighted output error sum_j E[x_j^2] (w - q(w))_j^2.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .fake import Encoding, quantize_dequantize, weight_encoding
from .layers import QuantLinear, quant_layers, quantize_model, set_mode
from .scheme import QuantScheme, parse_scheme

ENCODINGS_FILE = "quant_encodings.safetensors"
FORMAT = "andes-quant-encodings/1"
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


class EncodingsError(ValueError):
    """An encodings file that is missing, unreadable or does not belong to the model."""


def _search_weight_encoding(w: torch.Tensor, s: QuantScheme, col_weight: torch.Tensor | None,
                            search: bool) -> Encoding:
    """Min-max encodings, each block's scale shrunk by the best of `CLIP_RATIOS` when `search`."""
    base = weight_encoding(w, s.w_bits, s.group_size, s.w_symmetric)
    if not search:
        return base
    g = base.scale.shape[1]
    blocks = w.detach().reshape(w.shape[0], g, -1)
    h = (col_weight if col_weight is not None else torch.ones(w.shape[1])).reshape(1, g, -1)
    best_err = torch.full(base.scale.shape, float("inf"))
    best = base.scale.clone()
    for r in CLIP_RATIOS:
        enc = Encoding(base.scale * r, base.zero_point, s.w_bits)
        err = ((blocks - quantize_dequantize(blocks, enc)).pow(2) * h).sum(-1, keepdim=True)
        better = err < best_err
        best = torch.where(better, enc.scale, best)
        best_err = torch.where(better, err, best_err)
    return Encoding(best, base.zero_point, s.w_bits)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Any], scheme: str | QuantScheme | None = None,
              forward: Callable[[nn.Module, Any], Any] | None = None, act_quantile: float = 0.999,
              search: bool = True) -> nn.Module:
    """Compute and freeze the PTQ encodings of `model` (quantized first with `scheme` if it is not yet).

    batches: model inputs (dicts of tensors, or input-id tensors); forward(model, batch) runs one (default:
    `model(**batch)` or `model(input_ids=batch)`). Afterwards every `QuantLinear` is in `"frozen"` mode.
    """
    if not 0 < act_quantile <= 1:
        raise ValueError(f"act_quantile must be in (0, 1], got {act_quantile}")
    if not quant_layers(model):
        if scheme is None:
            raise ValueError("the model is not quantized: pass a scheme such as 'w4a8'")
        quantize_model(model, scheme)
    layers = quant_layers(model)
    set_mode(model, "observe")
    for layer in layers.values():
        layer.obs_absmax, layer.obs_sq, layer.obs_n = [], None, 0
    run = forward or (lambda m, b: m(**b) if isinstance(b, dict) else m(input_ids=b))
    was_training = model.training
    model.eval()
    n_batches = 0
    for batch in batches:
        run(model, batch)
        n_batches += 1
    model.train(was_training)
    if n_batches == 0:
        raise ValueError("calibrate needs at least one calibration batch")
    for layer in layers.values():
        s = layer.qscheme
        importance = layer.obs_sq / max(layer.obs_n, 1) if layer.obs_sq is not None else None
        enc = _search_weight_encoding(layer.weight, s, importance, search)
        absmax = torch.cat(layer.obs_absmax) if layer.obs_absmax else torch.ones(1)
        layer.w_scale, layer.w_zero = enc.scale.contiguous(), enc.zero_point.contiguous()
        layer.a_clip = torch.quantile(absmax, act_quantile).reshape(1) if absmax.numel() < 2**24 else absmax.max()
        layer.obs_absmax, layer.obs_sq, layer.obs_n = [], None, 0
    set_mode(model, "frozen")
    return model


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex) over the names and bytes of named tensors, in name order."""
    h = hashlib.sha256()
    for name, value in sorted(tensors.items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def weights_digest(model: nn.Module) -> str:
    """Digest of the quantized layers' weights: which base the encodings were calibrated on."""
    return tensors_digest({name: layer.weight for name, layer in quant_layers(model).items()})


def encodings_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """`<layer>.w_scale|w_zero|a_clip` -> tensor, for every frozen layer."""
    out = {}
    for name, layer in quant_layers(model).items():
        if layer.w_scale is None:
            raise EncodingsError(f"layer {name} has no encodings: calibrate the model first")
        out.update({f"{name}.w_scale": layer.w_scale, f"{name}.w_zero": layer.w_zero,
                    f"{name}.a_clip": layer.a_clip})
    return out


def save_encodings(model: nn.Module, folder: str | os.PathLike[str]) -> Path:
    """Write the frozen encodings to `<folder>/quant_encodings.safetensors` (scheme + weight digest in metadata)."""
    layers = quant_layers(model)
    if not layers:
        raise EncodingsError("the model has no quantized layers to save encodings for")
    scheme = next(iter(layers.values())).qscheme
    path = Path(folder) / ENCODINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in encodings_state(model).items()}, str(tmp),
              metadata={"format": FORMAT, "scheme": scheme.name, "weights": weights_digest(model),
                        "layers": json.dumps(sorted(layers))})
    tmp.replace(path)
    return path


def read_encodings(folder_or_file: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of an encodings file; EncodingsError names the problem."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / ENCODINGS_FILE
    if not path.is_file():
        raise EncodingsError(f"no quantization encodings at {path} (run PTQ calibration and save_encodings first)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise EncodingsError(f"{path}: not a readable encodings file ({e})") from e
    if meta.get("format") != FORMAT:
        raise EncodingsError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return tensors, meta


def load_encodings(model: nn.Module, folder_or_file: str | os.PathLike[str], check_weights: bool = True) -> nn.Module:
    """Quantize `model` with the file's scheme and install its frozen encodings (mode `"frozen"`).

    check_weights: refuse encodings calibrated on other weights (the digest in the file must match).
    """
    tensors, meta = read_encodings(folder_or_file)
    scheme = parse_scheme(meta["scheme"])
    if not quant_layers(model):
        quantize_model(model, scheme, mode="qat")
    layers = quant_layers(model)
    expected = set(json.loads(meta.get("layers", "[]")))
    if expected != set(layers):
        missing, extra = sorted(expected - set(layers)), sorted(set(layers) - expected)
        raise EncodingsError(f"encodings do not match the model's layers (missing in model: {missing[:3]}, "
                             f"not in file: {extra[:3]})")
    for name, layer in layers.items():
        if layer.qscheme != scheme:
            raise EncodingsError(f"layer {name} is quantized as {layer.qscheme.name}, the file holds {scheme.name}")
        layer.w_scale, layer.w_zero = tensors[f"{name}.w_scale"], tensors[f"{name}.w_zero"]
        layer.a_clip = tensors[f"{name}.a_clip"]
    if check_weights and weights_digest(model) != meta.get("weights"):
        raise EncodingsError("these encodings were calibrated on different weights than the model's "
                             "(pass check_weights=False to apply them anyway)")
    set_mode(model, "frozen")
    return model


def encodings_digest(model: nn.Module) -> str:
    """Digest of all frozen encodings: equal before and after QALFT when they truly stayed frozen."""
    return tensors_digest(encodings_state(model))
