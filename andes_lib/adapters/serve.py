"""Serving 1+N: pick an adapter per request, mix adapters in one batch, score tasks, count memory (ANDESVL.md §4).

- `using(model, name)`: a context in which `model` runs adapter `name` (None or `BASE_NAME`: the bare base);
- `generate_mixed`: one batched `generate` where each row uses its own adapter (PEFT's `adapter_names=`);
- `evaluate_task`: a task's strict score (`tasks.AdapterTask.score`) and contract-valid share for one adapter;
- `memory_table`: bytes of 1 base + N adapters against N full fine-tuned models, in memory and on disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from peft import PeftModel
from torch import nn

from ..data.base import user_message
from ..eval import evaluate
from ..eval.harness import clean_output
from .registry import BASE_NAME
from .tasks import AdapterTask, eval_view


@contextlib.contextmanager
def using(model: nn.Module, name: str | None) -> Iterator[nn.Module]:
    """Run `model` with adapter `name` active, or with every adapter off (None / `BASE_NAME`)."""
    if name in (None, BASE_NAME):
        if isinstance(model, PeftModel):
            with model.disable_adapter():
                yield model
        else:
            yield model
        return
    if not isinstance(model, PeftModel):
        raise TypeError(f"adapter {name!r} requested, but the model carries no adapters")
    if name not in model.peft_config:
        raise KeyError(f"unknown adapter {name!r}; loaded: {sorted(model.peft_config)}")
    previous = model.active_adapter
    model.base_model.set_adapter(name)
    try:
        yield model
    finally:
        model.base_model.set_adapter(previous)


def _check_names(model: nn.Module, adapters: Sequence[str | None]) -> list[str]:
    known = set(getattr(model, "peft_config", {}))
    names = [BASE_NAME if a is None else a for a in adapters]
    unknown = sorted({n for n in names if n != BASE_NAME and n not in known})
    if unknown:
        raise KeyError(f"unknown adapter(s) {unknown}; loaded: {sorted(known)}")
    return names


@torch.no_grad()
def generate_mixed(model: nn.Module, processor: Any, requests: Sequence[Mapping[str, Any]],
                   max_new_tokens: int = 24) -> list[str]:
    """Greedy answers to `requests` ({"images": [...], "question": str, "adapter": name or None}) in ONE batch,
    each row through its own adapter."""
    names = _check_names(model, [r.get("adapter") for r in requests])
    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        images = [list(r.get("images") or []) for r in requests]
        prompts = [processor.apply_chat_template([user_message(r["question"], len(im))], add_generation_prompt=True)
                   for r, im in zip(requests, images, strict=True)]
        inputs = processor(images=images if any(images) else None, text=prompts, return_tensors="pt", padding=True)
        kwargs = {"adapter_names": names} if isinstance(model, PeftModel) else {}
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kwargs)
    finally:
        tok.padding_side = side
    texts = tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=False)
    return [clean_output(t, tok) for t in texts]


@torch.no_grad()
def mixed_logits(model: nn.Module, batch: Mapping[str, torch.Tensor], adapters: Sequence[str | None]) -> torch.Tensor:
    """Logits of one forward pass in which row i runs adapter `adapters[i]` (None: the base)."""
    names = _check_names(model, adapters)
    kwargs = {"adapter_names": names} if isinstance(model, PeftModel) else {}
    return model(**batch, **kwargs).logits


def evaluate_task(model: nn.Module, processor: Any, data: datasets.Dataset, task: AdapterTask,
                  adapter: str | None = None, batch_size: int = 32, max_new_tokens: int = 24) -> dict[str, Any]:
    """Greedy answers on a task dataset (`tasks.task_data`) through `adapter`: strict score, contract-valid share,
    the lenient score (the domain's own metric on the raw output, no contract) and the per-sample records."""
    with using(model, adapter):
        result = evaluate(model, processor, eval_view(data), batch_size=batch_size, max_new_tokens=max_new_tokens,
                          progress=False)
    records = [{**r, "lenient": r["score"], "score": task.score(r["output"], r["answer"], r["metric"]),
                "valid": task.valid(r["output"])} for r in result.records]
    n = max(len(records), 1)
    return {"score": sum(r["score"] for r in records) / n, "valid": sum(r["valid"] for r in records) / n,
            "lenient": sum(r["lenient"] for r in records) / n, "records": records}


def _unique_bytes(tensors: Iterator[torch.Tensor]) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.shape, t.stride())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def memory_table(model: PeftModel, adapter_dirs: Mapping[str, Path], base_file: Path | None = None
                 ) -> list[dict[str, Any]]:
    """Measured bytes of 1 base + N adapters versus N full models (each a fine-tuned copy of the base).

    In memory: the unique storage of the base's tensors and of each adapter's LoRA tensors; on disk: the base
    checkpoint file (if given) and each adapter's safetensors file.
    """
    names = list(adapter_dirs)
    if not names:
        raise ValueError("memory_table needs at least one adapter")
    base_params = [p for n, p in model.named_parameters() if "lora_" not in n]
    base_mem = _unique_bytes(iter(base_params + list(model.buffers())))
    lora_mem = {a: _unique_bytes(p for n, p in model.named_parameters() if "lora_" in n and f".{a}." in n)
                for a in names}
    n = len(names)
    base_disk = base_file.stat().st_size if base_file is not None else None
    adapter_disk = {a: (Path(d) / "adapter_model.safetensors").stat().st_size for a, d in adapter_dirs.items()}
    rows = [{"setup": f"1 base + {n} adapters", "memory_bytes": base_mem + sum(lora_mem.values()),
             "disk_bytes": None if base_disk is None else base_disk + sum(adapter_disk.values())},
            {"setup": f"{n} full models", "memory_bytes": n * base_mem,
             "disk_bytes": None if base_disk is None else n * base_disk}]
    rows += [{"setup": f"adapter {a}", "memory_bytes": lora_mem[a], "disk_bytes": adapter_disk[a]} for a in names]
    return rows
