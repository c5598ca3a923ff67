"""Train (or reuse) the N task adapters of one base and register them (ANDESVL.md §4, 1+N LoRA).

`build_adapters` trains each task's adapter on the given base model and saves it to a registry; when the
registry already holds adapters of this base trained with the same settings (and their files check out),
they are loaded instead, so chapter 08 reuses what chapter 07 trained in the same run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from peft import PeftModel
from torch import nn

from ..posttrain.common import seed_all
from .lora import FitResult, attach_adapters, lora_config, train_adapter
from .registry import AdapterError, AdapterRegistry
from .tasks import AdapterTask, rows, task_data


def build_adapters(base: nn.Module, processor: Any, base_id: str, folder: str | os.PathLike[str],
                   tasks: Sequence[AdapterTask], n_train: int, steps: int, batch_size: int = 8, lr: float = 2e-3,
                   r: int = 16, seed: int = 0, train_fn: Callable[..., FitResult] = train_adapter,
                   kind: str = "fp") -> tuple[PeftModel, dict[str, dict[str, Any]]]:
    """(model with one adapter per task, {task: {"seconds", "losses", "reused"}}).

    base_id names the base checkpoint (its folder): adapters of another base are never reused.
    kind: a label stored with each adapter ("fp": trained on the floating-point base, "qalft-w4a8": ...).
    """
    if not tasks:
        raise ValueError("build_adapters needs at least one task")
    registry = AdapterRegistry(folder)
    settings = {"n_train": n_train, "steps": steps, "batch_size": batch_size, "lr": lr, "r": r, "seed": seed,
                "kind": kind}
    doc = registry.read()
    reusable = doc["base"] == str(base_id) and all(
        doc["adapters"].get(t.name, {}).get("settings") == settings for t in tasks)
    if reusable:
        try:
            model, _ = registry.load(base, [t.name for t in tasks], strict=True)
            return model, {t.name: {"seconds": 0.0, "losses": [], "reused": True} for t in tasks}
        except AdapterError as e:
            print(f"retraining the adapters: {e}")
    seed_all(seed)  # LoRA's A matrices are drawn at attach time
    model = attach_adapters(base, [t.name for t in tasks], lora_config(r=r, alpha=2 * r))
    info = {}
    for t in tasks:
        train = rows(task_data(t, "train", n_train, seed))
        result = train_fn(model, t.name, processor, train, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
        registry.save(model, t.name, base=str(base_id), task=t.domain, settings=settings,
                      train_seconds=result.seconds, final_loss=sum(result.losses[-5:]) / len(result.losses[-5:]))
        info[t.name] = {"seconds": result.seconds, "losses": result.losses, "reused": False}
        print(f"adapter {t.name}: {steps} steps in {result.seconds:.0f} s, loss {result.losses[0]:.2f} -> "
              f"{info[t.name]['losses'][-1]:.2f}", flush=True)
    model.eval()
    return model, info


def adapter_dirs(folder: str | os.PathLike[str], names: Sequence[str]) -> dict[str, Path]:
    """Name -> adapter folder of registered adapters (checked)."""
    registry = AdapterRegistry(folder)
    return {n: registry.check(n) for n in names}
