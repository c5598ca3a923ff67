"""1+N LoRA with PEFT on the AndesVL model (ANDESVL.md §4): attach, train one named adapter at a time, switch.

One frozen base; each task gets its own named LoRA adapter (`add_adapter`), trained with the others inactive.
`fit` is the small supervised loop shared by adapter training, QAT of the base and QALFT: loss on the
assistant tokens only (as in SFT), AdamW with warm-up and cosine decay (`andes_lib.specdec.train.optimizer`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from ..posttrain.common import seed_all
from ..specdec.train import batches, optimizer, update
from ..train.collate import collate

# PEFT target-module regexes (full match on the module name). `llm`: attention + MLP of the language model (the
# default: a mixed batch needs a batch dimension, and the vision tower and projector run on packed patches of all
# images at once, so per-row adapters there are impossible); `all`: also the projector and the vision tower.
TARGETS: dict[str, str] = {
    "llm": r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
    "all": r".*(language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
           r"|projector\.linear_[12]|vision_tower\.blocks\.\d+\.(attn\.(q|k|v|out)_proj|mlp\.fc[123]))",
}


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.0, target: str = "llm") -> LoraConfig:
    """A LoRA config over one of `TARGETS` (or a custom regex)."""
    if not isinstance(r, int) or r < 1:
        raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=TARGETS.get(target, target),
                      bias="none", task_type="CAUSAL_LM")


def attach_adapters(base: nn.Module, names: Sequence[str], config: LoraConfig) -> PeftModel:
    """Wrap `base` with one freshly initialised LoRA adapter per name (B = 0: each starts as the identity)."""
    if not names:
        raise ValueError("attach_adapters needs at least one adapter name")
    names = list(names)
    model = get_peft_model(base, config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, config)
    return model


def activate(model: PeftModel, name: str) -> list[nn.Parameter]:
    """Make `name` the only active adapter and the only trainable parameters; returns them."""
    if name not in model.peft_config:
        raise KeyError(f"unknown adapter {name!r}; loaded: {sorted(model.peft_config)}")
    model.base_model.set_adapter(name)
    params = []
    for pname, p in model.named_parameters():
        p.requires_grad_(f".{name}." in pname and "lora_" in pname)
        if p.requires_grad:
            params.append(p)
    return params


@dataclass
class FitResult:
    """Loss per step and wall time of one `fit`."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def fit(model: nn.Module, processor: Any, rows: Sequence[dict[str, Any]], params: Sequence[nn.Parameter],
        steps: int, batch_size: int = 8, lr: float = 1e-3, seed: int = 0, log_every: int = 0) -> FitResult:
    """Supervised steps on conversation rows (loss on the answers), updating only `params`."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    if not rows:
        raise ValueError("fit needs training rows")
    params = list(params)
    if not params:
        raise ValueError("fit got no trainable parameters")
    seed_all(seed)
    opt, sched = optimizer(params, lr, steps)
    model.train()
    out, t0 = FitResult(), time.perf_counter()
    for step, idx in enumerate(batches(len(rows), batch_size, steps, seed), 1):
        batch = collate(processor, [rows[i] for i in idx], loss_on="assistant")
        loss = model(**batch).loss
        update(opt, sched, params, loss)
        out.losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps):
            print(f"step {step:>4}/{steps}  loss {loss.item():.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    out.seconds = time.perf_counter() - t0
    return out


def train_adapter(model: PeftModel, name: str, processor: Any, rows: Sequence[dict[str, Any]], steps: int,
                  batch_size: int = 8, lr: float = 1e-3, seed: int = 0, log_every: int = 0) -> FitResult:
    """Train adapter `name` alone on `rows` (the base and the other adapters stay frozen)."""
    params = activate(model, name)
    return fit(model, processor, rows, params, steps, batch_size, lr, seed, log_every)
