"""The PTQ path on a real LLM: SmolLM2-135M-Instruct at W8A8, W4A16, W4A8 (ANDESVL.md §4, deployment).

The same `calibrate` as for the nano VLM (per-channel / per-group weights, per-token activations, frozen
encodings), applied to the real text model; quality is held-out perplexity on project-generated text and
top-1 agreement with the fp32 model (`andes_lib.compress.quality`, the paper's "Top-1 overlap" style metric).
No training of SmolLM2 here: post-training quantization only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..compress.quality import evaluate_lm
from .layers import dequantize_model
from .ptq import calibrate, save_encodings
from .scheme import parse_scheme


def ptq_point(model: nn.Module, scheme: str, calib: Sequence[torch.Tensor], chunks: Sequence[torch.Tensor],
              reference_top1: Sequence[torch.Tensor], out_dir: str | Path | None = None) -> dict:
    """Calibrate `model` at `scheme` (in place), score it, save its encodings (if `out_dir`), then restore fp32."""
    s = parse_scheme(scheme)
    t = time.perf_counter()
    calibrate(model, list(calib), s)
    calib_s = time.perf_counter() - t
    try:
        path = save_encodings(model, Path(out_dir) / s.name) if out_dir else None
        t = time.perf_counter()
        scores = evaluate_lm(model, list(chunks), list(reference_top1))
        eval_s = time.perf_counter() - t
    finally:
        dequantize_model(model)
    return {"scheme": s.name, "setting": s.describe(), "perplexity": scores["perplexity"],
            "agreement": scores["agreement"], "calib_s": calib_s, "eval_s": eval_s,
            "encodings": str(path) if path else ""}
