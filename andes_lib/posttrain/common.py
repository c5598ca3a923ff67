"""Pieces shared by the MPO and GRPO chapters: loading checkpoints, sampling answers, TRL arguments, histories.

Nothing here is specific to one algorithm. `sample_answers` draws `k` sampled completions per prompt (the
images are repeated per completion rather than with `num_return_sequences`, because the packed `pixel_values`
of AndesVL cannot be expanded along the batch dimension).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Arguments every TRL config gets on this CPU-only project (STACK.md §4): fp32, no gradient checkpointing,
# no checkpoints written by the Trainer (we save the final model ourselves), no external loggers.
TRL_CPU_ARGS: dict[str, Any] = {
    "use_cpu": True, "bf16": False, "fp16": False, "gradient_checkpointing": False, "report_to": "none",
    "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "dataloader_num_workers": 0,
}


POSTTRAIN_OPTIMIZERS: tuple[str, ...] = ("muon", "adamw")
POSTTRAIN_FILE = "andes_posttrain.json"  # what a post-training run records next to the model it saves


def trained_with(path: str | os.PathLike[str]) -> str:
    """The optimizer a checkpoint was trained with: its training recipe's (`andes_artifact.json`), else the one a
    post-training run recorded (`andes_posttrain.json`), else "adamw" (a model from elsewhere)."""
    import json

    path = Path(path)
    for name, keys in (("andes_artifact.json", ("recipe", "optimizer")), (POSTTRAIN_FILE, ("optimizer",))):
        if (path / name).is_file():
            value: Any = json.loads((path / name).read_text())
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            if value in POSTTRAIN_OPTIMIZERS:
                return value
    return "adamw"


def posttrain_optimizer(model: Any, lr: float, kind: str = "muon", weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer of a post-training run, built for TRL's `optimizers=(optimizer, None)`.

    Post-train with the optimizer the model was trained with (`trained_with`). "muon": `MuonAdamW` as in the SFT
    stage of nano (Muon on the matrices of the LLM's decoder layers, AdamW on the rest), at one learning rate;
    "adamw": `torch.optim.AdamW` on every trainable parameter. AdamW steps undo what a Muon-trained model learned:
    80 of them at lr 3e-5 on nano-sft's own instruction data took reasoning 50 -> 40, multi-image 60 -> 46 and POPE
    89 -> 81, where Muon kept POPE at 89 (`benchmarks/optimizer_mismatch.py`; Liu et al. 2025 report the mismatch).
    """
    from ..train.optim import MuonAdamW

    if kind not in POSTTRAIN_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; known: {POSTTRAIN_OPTIMIZERS}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    base = model.model if hasattr(model, "model") else model
    inner = {id(p) for layer in base.language_model.layers for p in layer.parameters() if p.dim() == 2}
    muon = [p for p in params if id(p) in inner]
    rest = [p for p in params if id(p) not in inner]
    groups = [{"params": ps, "lr": lr, "weight_decay": weight_decay, "muon": flag, "name": name}
              for name, ps, flag in (("language_model/muon", muon, True), ("other", rest, False)) if ps]
    return MuonAdamW(groups, lr=lr, weight_decay=weight_decay)


def freeze_groups(model: Any, freeze: Sequence[str]) -> None:
    """Keep the named module groups (`vision_tower`, `projector`, `language_model`) fixed during post-training."""
    from ..train.loop import module_groups

    groups = module_groups(model)
    unknown = set(freeze) - set(groups)
    if unknown:
        raise ValueError(f"unknown module group(s) to freeze: {sorted(unknown)}; known: {list(groups)}")
    for name in freeze:
        groups[name].requires_grad_(False)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(model, processor) from a `save_pretrained` folder (model + processor), fp32, eval mode."""
    import andes_lib  # registers the Auto classes
    from transformers import AutoModelForImageTextToText

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model checkpoint in {path} (config.json missing)")
    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
    return model.eval(), andes_lib.AndesVLProcessor.from_pretrained(str(path))


def save_checkpoint(model: Any, processor: Any, path: str | os.PathLike[str], optimizer: str | None = None) -> Path:
    """`save_pretrained` the model (unwrapped of TRL's fused-head patch) and the processor into `path`; a
    post-training run also records the `optimizer` it trained with (`trained_with` reads it back)."""
    import json

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    processor.save_pretrained(str(path))
    if optimizer is not None:
        (path / POSTTRAIN_FILE).write_text(json.dumps({"optimizer": optimizer}) + "\n")
    return path


def get_artifact(name: str, run_dir: str | os.PathLike[str] = "", scale: float = 1.0, **kwargs: Any) -> Path:
    """A training artifact (`nano-sft`, `nano-pt3`, ...) through the training chapter's cache (built if missing).

    `scale` < 1 shrinks the whole recipe chain (smoke tests); see `andes_lib.train.artifacts.get_artifact`.
    """
    from ..train.artifacts import get_artifact as _get

    return Path(_get(name, run_dir=run_dir or "", scale=scale, **kwargs))


def stop_strings(tokenizer: Any) -> list[str]:
    """Tokens that end an assistant turn."""
    return sorted({tokenizer.eos_token, "<|im_end|>", "<|endoftext|>"} - {None})


def clean_completion(text: str, tokenizer: Any) -> str:
    """A decoded completion cut at the end of the turn (special tokens such as `</think>` are kept)."""
    for stop in stop_strings(tokenizer):
        text = text.split(stop)[0]
    return text


def prompt_text(processor: Any, question: str, n_images: int, thinking: bool = False) -> str:
    """The ChatML generation prompt for one question (with `<think>\\n` pre-filled when `thinking`)."""
    from ..data.base import user_message

    return processor.apply_chat_template([user_message(question, n_images)], add_generation_prompt=True,
                                         enable_thinking=thinking)


@torch.no_grad()
def sample_answers(model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], k: int = 4,
                   temperature: float = 1.0, max_new_tokens: int = 32, thinking: bool = False,
                   batch_size: int = 32, seed: int = 0, do_sample: bool = True) -> list[list[dict[str, Any]]]:
    """`k` completions per row (`question` + `images`): for each, the raw text (cut at the end of turn, special
    tokens kept), whether the generation stopped by itself (`finished`) rather than at `max_new_tokens`, and
    its length in tokens (`n_tokens`, the end-of-turn token included).

    Sequences are generated `batch_size` at a time (a row's `k` copies stay together).
    """
    if k < 1 or batch_size < 1:
        raise ValueError("k and batch_size must be positive")
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    eos_ids = {tokenizer.convert_tokens_to_ids(t) for t in stop_strings(tokenizer)}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    flat = [(i, r) for i, r in enumerate(rows) for _ in range(k)]
    out: list[list[dict[str, Any]]] = [[] for _ in rows]
    try:
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            images = [list(r["images"]) for _, r in chunk]
            prompts = [prompt_text(processor, r["question"], len(imgs), thinking)
                       for (_, r), imgs in zip(chunk, images, strict=True)]
            inputs = processor(images=images if any(images) else None, text=prompts, return_tensors="pt",
                               padding=True).to(device)
            gen = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                 temperature=temperature if do_sample else None, top_k=0 if do_sample else None,
                                 top_p=1.0 if do_sample else None, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=sorted(eos_ids))
            new = gen[:, inputs["input_ids"].shape[1]:]
            texts = tokenizer.batch_decode(new, skip_special_tokens=False)
            for (i, _), ids, text in zip(chunk, new.tolist(), texts, strict=True):
                ends = [j for j, t in enumerate(ids) if t in eos_ids]
                n_tokens = ends[0] + 1 if ends else len(ids)
                out[i].append({"text": clean_completion(text, tokenizer), "finished": bool(ends),
                               "n_tokens": n_tokens})
    finally:
        tokenizer.padding_side = side
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return out


def log_frame(log_history: Sequence[Mapping[str, Any]]):
    """A Trainer's `state.log_history` as a DataFrame of the per-step rows (the final summary row dropped)."""
    import pandas as pd

    rows = [dict(r) for r in log_history if "loss" in r or any(k.startswith("rewards/") for k in r)]
    return pd.DataFrame(rows)


def compact_logging(trainer: Any, every: int = 10, keys: Sequence[str] = ("loss",)) -> Any:
    """Replace the Trainer's one-dict-per-step printout by one short line every `every` steps (and the last)."""
    import time as _time

    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class CompactPrinter(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.started = _time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
                   **kw: Any) -> None:
            step, last = state.global_step, state.max_steps
            if not logs or "train_runtime" in logs or not (step % max(1, every) == 0 or step == last):
                return
            shown = "  ".join(f"{k.removeprefix('rewards/').removesuffix('/mean')} {logs[k]:.3g}"
                              for k in keys if isinstance(logs.get(k), (int, float)))
            print(f"step {step:>4}/{last}  {shown}  ({_time.perf_counter() - self.started:.0f} s)", flush=True)

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(CompactPrinter())
    return trainer
