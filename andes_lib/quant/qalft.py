"""QAT of the base, PTQ encodings frozen beside the checkpoint, then QALFT adapters (ANDESVL.md §4).

The deployment chain of the paper, as we re-create it (its recipe is not published):
1. `qat`: the base keeps training on its SFT mixture with fake quantization in the loop (weights and activations
   quantized in every forward, straight-through gradients), so its weights settle where rounding hurts less;
2. `ptq`: calibration computes the encodings (scales, zero points, activation clips) on held-out conversations
   and freezes them; `save_quantized_base` writes the checkpoint and `quant_encodings.safetensors` beside it;
3. `qalft_train`: each LoRA adapter is trained on that frozen, quantized base (the base's weights and encodings
   never change; `encodings_digest` proves it), so the adapter learns around the deployed base's rounding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn

from ..adapters.lora import FitResult, activate, fit
from ..train.collate import collate
from .layers import quant_layers, quantize_model, set_mode
from .ptq import calibrate, encodings_digest, save_encodings
from .scheme import QuantScheme, parse_scheme

SFT_DOMAINS = ("text_rich", "chart", "reasoning", "multi_image", "general_vqa", "hallucination", "multilingual", "gui")


def sft_rows(n_per_domain: int, split: str = "train", seed: int = 0,
             domains: Sequence[str] = SFT_DOMAINS) -> list[dict[str, Any]]:
    """Conversations of every SFT domain (the base's own training mixture), shuffled together."""
    import random

    from ..data import build_dataset

    data = build_dataset(split, list(domains), n_per_domain, seed, progress=False)
    out = [data[i] for i in range(len(data))]
    random.Random(seed).shuffle(out)
    return out


def calibration_batches(processor: Any, rows: Sequence[dict[str, Any]], batch_size: int = 8) -> list[dict]:
    """Collated model inputs (images included) for PTQ calibration."""
    if not rows:
        raise ValueError("calibration needs at least one row")
    out = []
    for i in range(0, len(rows), batch_size):
        batch = collate(processor, rows[i:i + batch_size], loss_on="assistant")
        batch.pop("labels")
        out.append(batch)
    return out


def qat(model: nn.Module, processor: Any, rows: Sequence[dict[str, Any]], scheme: str | QuantScheme, steps: int,
        batch_size: int = 8, lr: float = 1e-4, seed: int = 0, log_every: int = 0) -> FitResult:
    """Quantization-aware training of the whole base (in place): fake quantization in every forward, STE."""
    if parse_scheme(scheme).is_fp:
        raise ValueError("QAT needs a quantized scheme such as 'w4a8', not 'fp'")
    if not quant_layers(model):
        quantize_model(model, scheme, mode="qat")
    set_mode(model, "qat")
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    return fit(model, processor, rows, params, steps, batch_size, lr, seed, log_every)


def ptq(model: nn.Module, processor: Any, calib_rows: Sequence[dict[str, Any]], scheme: str | QuantScheme,
        batch_size: int = 8) -> nn.Module:
    """Post-training quantization: calibrate on `calib_rows`, freeze the encodings (mode "frozen")."""
    return calibrate(model, calibration_batches(processor, calib_rows, batch_size), scheme)


def save_quantized_base(model: nn.Module, processor: Any, folder: str | os.PathLike[str]) -> Path:
    """Write the base checkpoint (safetensors; the state dict of a plain model) and its frozen encodings beside it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    save_encodings(model, folder)
    return folder


def freeze_base(model: nn.Module) -> None:
    """Every base parameter frozen (no gradient) and every quantized layer in `"frozen"` mode."""
    for name, p in model.named_parameters():
        if "lora_" not in name:
            p.requires_grad_(False)
    set_mode(model, "frozen")


def qalft_train(model: PeftModel, name: str, processor: Any, rows: Sequence[dict[str, Any]], steps: int,
                batch_size: int = 8, lr: float = 2e-3, seed: int = 0, log_every: int = 0) -> FitResult:
    """Train adapter `name` on the frozen quantized base; raises if an encoding or a base weight moved."""
    if not quant_layers(model):
        raise ValueError("QALFT needs a quantized base with frozen encodings (load_encodings or ptq first)")
    freeze_base(model)
    before = encodings_digest(model)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    params = activate(model, name)
    result = fit(model, processor, rows, params, steps, batch_size, lr, seed, log_every)
    if encodings_digest(model) != before:
        raise RuntimeError("QALFT changed the frozen quantization encodings")
    moved = [n for n, p in model.named_parameters() if n in base_before and not torch.equal(p, base_before[n])]
    if moved:
        raise RuntimeError(f"QALFT changed base weights: {moved[:3]}")
    return result
