"""The quality-versus-bits sweep of chapter 11: pack, reload from the file, score, one point at a time.

Every point goes through the real format (write the packed file, load it back, unpack), so the bpw shown is
the file's and the model scored is the one the file rebuilds. llama.cpp's IQ1_M (1.75 bpw) and IQ2_XXS (2.06
bpw) are the published yardsticks for "how low do practical formats go" (their bpw, not their quality here).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from .packed_file import file_bpw, load_packed, save_packed
from .quality import evaluate_lm

YARDSTICKS = {"llama.cpp IQ1_M": 1.75, "llama.cpp IQ2_XXS": 2.06}
PAPER_BPW = 1.8  # AndesVL-4B (ANDESVL.md §4)


def sweep_point(model: nn.Module, label: str, method: str, out_dir: str | Path, chunks: list[torch.Tensor],
                reference_top1: list[torch.Tensor], default: str, schemes: dict[str, str] | None = None,
                importance: dict[str, torch.Tensor] | None = None, keep_model: bool = False,
                quantized: dict[str, dict[str, torch.Tensor]] | None = None,
                recovery_s: float = 0.0) -> tuple[dict, nn.Module | None]:
    """Pack `model` to `out_dir/<label>.safetensors`, reload it, and return its row (and the model if asked).

    `quantized` passes codes and scales chosen by a recovery method (GPTQ, distillation) to `save_packed`;
    `recovery_s` (what that method cost, in seconds) is carried into the row.
    """
    t = time.perf_counter()
    pf = save_packed(model, Path(out_dir) / f"{label}.safetensors", schemes or {}, importance=importance,
                     default=default, quantized=quantized)
    pack_s = time.perf_counter() - t
    t = time.perf_counter()
    q = load_packed(pf.path)
    load_s = time.perf_counter() - t
    scores = evaluate_lm(q, chunks, reference_top1)
    row = {"label": label, "method": method, "bpw": file_bpw(pf.path), "file_mib": pf.file_bytes / 2**20,
           "perplexity": scores["perplexity"], "agreement": scores["agreement"], "recovery_s": recovery_s,
           "pack_s": pack_s, "load_s": load_s}
    return row, (q if keep_model else None)


@torch.inference_mode()
def answer(model: nn.Module, tokenizer, question: str, max_new_tokens: int = 24) -> str:
    """Greedy chat answer of a text-only LLM (ChatML template of the tokenizer)."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def load_language_model(name: str) -> tuple[nn.Module, object]:
    """(model, tokenizer) for the sweep: "smol" = the real SmolLM2-135M-Instruct LLM, "nano" = the nano VLM."""
    if name == "smol":
        from ..model.smol import load_smol_llm, load_smol_tokenizer

        return load_smol_llm().eval(), load_smol_tokenizer()
    if name == "nano":
        from ..presets import build_model, build_processor

        return build_model("nano").eval(), build_processor("nano").tokenizer
    raise ValueError(f"unknown model {name!r}: use 'smol' or 'nano'")
