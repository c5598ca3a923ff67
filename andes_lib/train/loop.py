"""`run_stage`: one training stage (a `StageRecipe`) as an explicit `accelerate` loop.

Why a hand-written loop rather than TRL's `SFTTrainer` (which also works with this model, see STACK.md §4):
the pipeline needs per-module-group learning rates and freezing that change per stage, a data mix that is a
pure function of (recipe, step) so that a killed run resumes bit-exactly, and checkpoints without pickle
(optimizer state as safetensors + JSON; `Trainer` and `Accelerator.save_state` pickle it). All of that is a
page of readable code here, while the trainers hide it behind callbacks. `accelerate` still does the
device placement, mixed precision, gradient sync and multi-GPU launch, so the same code scales:

    # one process (CPU or one GPU): what the notebooks do
    python -m andes_lib.train nano-sft --run-dir runs/cpu
    # several GPUs, data parallel: each process takes its slice of every global batch, DDP averages gradients
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 -m andes_lib.train nano-sft \
        --run-dir runs/gpu --override '{"sft": {"batch_size": 256}}'
    # sharded (FSDP, for the paper sizes): `accelerate config` (FSDP, FULL_SHARD, FULL_STATE_DICT), then
    accelerate launch --config_file fsdp.yaml -m andes_lib.train <preset>-sft --run-dir runs/gpu

Each preset has its own recipe table (`StageRecipe(preset=...)`; `smol`, whose LLM is already pre-trained, has no
`llm` stage). Checkpoint/resume is implemented for one process and for DDP (every
process holds the whole optimizer state; the main one writes it). Under FSDP the final model is gathered and
saved (`accelerator.get_state_dict`), but mid-stage checkpoints are refused (`save_every` must be 0): the
sharded optimizer state would need `FSDP.optim_state_dict`, which this loop does not implement.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .checkpoint import (CheckpointError, atomic_dir, latest_checkpoint, load_model_weights,
                         load_state, save_checkpoint, set_rng_state, write_json)
from .collate import collate
from .feature_cache import install as install_feature_cache
from .feature_cache import plan_slots
from .feature_cache import uninstall as uninstall_feature_cache
from .loss import label_weights, lm_loss_sum
from .optim import MuonAdamW
from .patch_labels import HEAD_FILE, HEAD_PREFIX, attach_head, collate_patch_labels, n_labels, patch_label_loss
from .recipes import MODULE_GROUPS, StageRecipe
from .stream import DataStream, build_pools, length_sorted_split

ARTIFACT_FILE = "andes_artifact.json"
HISTORY_FILE = "history.json"


# ----------------------------------------------------------------------------- model pieces
def module_groups(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The three trainable groups of an AndesVL model (works on a PEFT/DDP wrapper too)."""
    base = model.model if hasattr(model, "model") else model
    return {g: getattr(base, g) for g in MODULE_GROUPS}


def apply_freeze(model: torch.nn.Module, recipe: StageRecipe) -> dict[str, dict[str, int]]:
    """Set requires_grad per module group; returns {group: {"params", "trainable"}}."""
    counts = {}
    for name, module in module_groups(model).items():
        train = name in recipe.lr
        module.requires_grad_(train)
        counts[name] = {"params": sum(p.numel() for p in module.parameters()),
                        "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad)}
    for name, p in model.named_parameters():  # anything outside the three groups (an untied lm_head)
        if name.startswith(HEAD_PREFIX):  # the `vision` stage's patch-label head always trains
            p.requires_grad_(True)
        elif not any(name.startswith(f"model.{g}.") for g in MODULE_GROUPS):
            p.requires_grad_("language_model" in recipe.lr)
    return counts


def trainable_table(model: torch.nn.Module, recipe: StageRecipe) -> list[dict[str, Any]]:
    """Rows (group, parameters, trainable, lr) for notebooks, without changing the model."""
    return [{"module": g, "parameters": sum(p.numel() for p in m.parameters()),
             "trains": g in recipe.lr, "lr": recipe.lr.get(g, 0.0)} for g, m in module_groups(model).items()]


def param_groups(model: torch.nn.Module, recipe: StageRecipe) -> list[dict[str, Any]]:
    """One optimizer group per (module group, decay/no-decay); frozen groups are left out. With the Muon optimizer
    the matrices of the LLM's decoder layers form their own group (`language_model/muon`); its embeddings stay with
    AdamW, as in Muon's own recipe."""
    groups = []
    modules = {g: (m, recipe.lr[g]) for g, m in module_groups(model).items() if g in recipe.lr}
    if hasattr(model, "patch_label_head"):  # the `vision` stage's head learns at the vision tower's rate
        modules["patch_label_head"] = (model.patch_label_head, recipe.lr["vision_tower"])
    for name, (module, lr) in modules.items():
        params = [p for p in module.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        muon: list[torch.nn.Parameter] = []
        if recipe.optimizer == "muon" and name == "language_model":
            inner = {id(p) for layer in module.layers for p in layer.parameters() if p.dim() == 2}
            muon = [p for p in decay if id(p) in inner]
            decay = [p for p in decay if id(p) not in inner]
        for suffix, ps, wd in (("/muon", muon, recipe.weight_decay), ("", decay, recipe.weight_decay),
                               ("/no_decay", no_decay, 0.0)):
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": name + suffix,
                               **({"muon": suffix == "/muon"} if recipe.optimizer == "muon" else {})})
    return groups


class LRSchedule:
    """Linear warm-up to 1, then cosine decay to `min_ratio` (or constant): the factor on each group's peak LR."""

    def __init__(self, steps: int, warmup: int, kind: str = "cosine", min_ratio: float = 0.1):
        self.steps, self.warmup, self.kind, self.min_ratio = steps, warmup, kind, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix products run in hardware (CPUs with AVX512-BF16 or AMX, GPUs), not emulated."""
    if device.type != "cpu":
        return True
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- results
@dataclass
class StageResult:
    """What a finished (or stopped) stage leaves: where, how it went, and its per-step history."""

    recipe: StageRecipe
    path: Path | None  # the final artifact folder (None when stopped early)
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


def read_artifact_info(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / ARTIFACT_FILE).read_text(encoding="utf-8"))


def read_history(path: Path) -> list[dict[str, Any]]:
    file = Path(path) / HISTORY_FILE
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else []


# ----------------------------------------------------------------------------- the loop
def default_fingerprint(recipe: StageRecipe, init_from: str | os.PathLike[str] | None) -> str:
    """Identity of a stage run outside the artifact cache: parameters, inputs, and what it starts from."""
    from .recipes import _digest, inputs_hash

    parent = None
    if init_from is not None:
        info = Path(init_from) / ARTIFACT_FILE
        parent = read_artifact_info(Path(init_from)).get("fingerprint") if info.is_file() else str(init_from)
    return _digest({"params": recipe.params_hash(), "inputs": inputs_hash(recipe.preset), "parent": parent})


def load_start(recipe: StageRecipe, init_from: str | os.PathLike[str] | None):
    """(model, processor) to start from: the parent artifact folder, or a fresh preset model."""
    import andes_lib  # registers the Auto classes
    from transformers import AutoModelForImageTextToText

    if init_from is None:
        return andes_lib.build_model(recipe.preset, seed=recipe.seed), andes_lib.build_processor(recipe.preset)
    model = AutoModelForImageTextToText.from_pretrained(str(init_from), dtype=torch.float32)
    return model, andes_lib.AndesVLProcessor.from_pretrained(str(init_from))


def run_stage(recipe: StageRecipe, final_dir: str | os.PathLike[str],
              init_from: str | os.PathLike[str] | None = None, *, checkpoint_dir: str | os.PathLike[str] | None = None,
              resume: bool = True, stop_after: int | None = None, progress: bool = True,
              accelerator: Any = None, fingerprint: str | None = None, keep_checkpoints: bool = False,
              datasets_fn: Any = None, on_corrupt: str = "error", on_stale: str = "error") -> StageResult:
    """Train one stage: the final model (save_pretrained + processor + history) goes to `final_dir`.

    checkpoint_dir: where `step-NNNNNN/` checkpoints go (default: `<final_dir>.checkpoints` beside it); they are
    deleted once `final_dir` is written unless `keep_checkpoints`.
    init_from: the parent stage's artifact folder (None: a fresh `recipe.preset` model seeded by `recipe.seed`).
    resume: continue from the newest checkpoint in `checkpoint_dir` (bit-exact on CPU).
    stop_after: stop (after checkpointing) once this many steps are done, as if the run were killed there.
    on_corrupt: "error" (raise `CorruptCheckpointError`) or "previous" (fall back to the previous checkpoint).
    fingerprint: identity of the result (see `recipes.fingerprint`); by default the recipe's parameters, its inputs
    (data generators, tokenizer, code) and the parent artifact's fingerprint. Checkpoints made under another
    fingerprint are never resumed: `on_stale="error"` raises, `"restart"` deletes them and starts over.
    datasets_fn: replaces `andes_lib.data.build_dataset` (tests use small hand-made datasets).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    final = Path(final_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else final.parent / f"{final.name}.checkpoints"
    fingerprint = fingerprint or default_fingerprint(recipe, init_from)
    if accelerator is None:
        accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    seed_everything(recipe.seed)
    started = time.perf_counter()
    model, processor = load_start(recipe, init_from)
    if not recipe.place_code:  # for this stage only; the saved config keeps the preset's scale
        module_groups(model)["projector"].place_scale = 0.0
    labeler = (attach_head(model, warm_projector="projector" in recipe.lr) if recipe.objective == "patch_labels"
               else None)
    model.train()
    counts = apply_freeze(model, recipe)
    groups = param_groups(model, recipe)
    bf16 = recipe.precision == "bf16" and native_bf16(accelerator.device)
    if recipe.precision == "bf16" and not bf16:
        accelerator.print(f"{recipe.artifact}: no native bf16 on this CPU (it would emulate it slowly): training in fp32")
    optimizer = (MuonAdamW(groups, betas=recipe.betas, weight_decay=recipe.weight_decay,
                           ns_dtype="bfloat16" if bf16 else "float32") if recipe.optimizer == "muon"
                 else torch.optim.AdamW(groups, betas=recipe.betas, weight_decay=recipe.weight_decay, foreach=False))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LRSchedule(recipe.steps, recipe.warmup_steps, recipe.schedule, recipe.min_lr_ratio))
    pools = build_pools(recipe, processor, datasets_fn=datasets_fn, progress=progress and accelerator.is_main_process)
    stream = DataStream(recipe, pools)

    start_step, history, loaded = 0, [], None
    if resume and (found := latest_checkpoint(ckpt_dir)):
        last, previous = found
        try:
            loaded = load_state(last, previous)
        except CheckpointError:
            if on_corrupt != "previous" or previous is None:
                raise
            accelerator.print(f"checkpoint {last} is corrupt; resuming from {previous}")
            loaded = load_state(previous, None)
        state = loaded["state"]
        if state.get("fingerprint") != fingerprint:
            message = (f"{ckpt_dir} holds checkpoints of another recipe or other inputs (fingerprint "
                       f"{state.get('fingerprint')} != {fingerprint}: parameters, parent, data, tokenizer or code "
                       "changed)")
            if on_stale != "restart":
                raise CheckpointError(message + "; delete the folder to start over")
            accelerator.print(message + "; starting over")
            # under DDP every rank reads the folder: the main one deletes it only once all have (else a slower
            # rank finds no checkpoint, skips this branch and its barrier, and the ranks' collectives mismatch)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
            accelerator.wait_for_everyone()
            loaded = None
    if loaded is not None:
        state = loaded["state"]
        load_model_weights(model, loaded["model"], last)
        optimizer.load_state_dict(loaded["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], loaded["rng_tensors"])
        start_step, history = state["step"], state["history"]
        if state["data_position"] != start_step * recipe.batch_size:
            raise CheckpointError(f"{last}: data position {state['data_position']} does not match step {start_step}")

    if recipe.save_every and str(accelerator.distributed_type) in ("FSDP", "DistributedType.FSDP"):
        raise NotImplementedError("mid-stage checkpoints under FSDP are not implemented: set save_every=0")
    # what runs forward: the whole VLM, or (vision stage) the vision tower and its head only
    if labeler is not None:
        model.to(accelerator.device)  # the frozen LLM rides along, so checkpoints see one device
    net, optimizer = accelerator.prepare(labeler if labeler is not None else model, optimizer)
    model = net if labeler is None else model
    trainable = [p for p in net.parameters() if p.requires_grad]
    if labeler is None:
        def make_batch(rows: list) -> dict[str, torch.Tensor]:
            return collate(processor, rows, recipe.loss_on, pack=recipe.max_seq_len if recipe.pack else 0)

        def n_targets(batch: dict[str, torch.Tensor]) -> float:  # the step's loss normaliser (train.loss)
            return float(label_weights(batch, recipe.loss_weighting).sum())

        def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return lm_loss_sum(net, batch, recipe.loss_weighting)
    else:
        def make_batch(rows: list) -> dict[str, torch.Tensor]:
            return collate_patch_labels(processor, rows)

        def n_targets(batch: dict[str, torch.Tensor]) -> int:
            return n_labels(batch)

        def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return patch_label_loss(net(batch["pixel_values"], batch["image_grid_hw"]), batch, labeler.head,
                                    recipe.code_weight)
    world, rank = accelerator.num_processes, accelerator.process_index
    if recipe.batch_size % (world * recipe.grad_accum):
        raise ValueError(f"batch_size {recipe.batch_size} must divide into {world} processes x {recipe.grad_accum} "
                         "micro-batches")
    tower = module_groups(accelerator.unwrap_model(model))["vision_tower"]
    if labeler is None and "vision_tower" not in recipe.lr and recipe.data:  # a frozen tower: its features once
        slots = plan_slots(stream.order, recipe.batch_size, rank, world)
        rows = (stream.pools[p].get(i) for p, i in tqdm(slots, desc=f"{recipe.artifact}: frozen tower features",
                                                         disable=not (progress and accelerator.is_main_process)))
        with torch.autocast(accelerator.device.type, torch.bfloat16, enabled=bf16):  # as the step would run it
            install_feature_cache(tower, rows, processor)

    def checkpoint(step: int) -> None:
        accelerator.wait_for_everyone()
        weights = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            state = {"recipe": recipe.to_dict(), "params_hash": recipe.params_hash(), "fingerprint": fingerprint,
                     "data_position": step * recipe.batch_size, "scheduler": scheduler.state_dict(),
                     "history": history}
            save_checkpoint(ckpt_dir, step, accelerator.unwrap_model(model), processor, optimizer, state,
                            keep_last=recipe.keep_last, model_state=weights)
        accelerator.wait_for_everyone()

    end = recipe.steps if stop_after is None else min(recipe.steps, stop_after)
    bar = tqdm(total=recipe.steps, initial=start_step, desc=recipe.artifact,
               disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    for step in range(start_step, end):
        t0 = time.perf_counter()
        rows, lengths = stream.batch(step)[rank::world], stream.lengths(step)[rank::world]
        micro = [make_batch(part) for part in length_sorted_split(rows, lengths, recipe.grad_accum)]
        n_tokens = sum(n_targets(b) for b in micro)
        loss_sum = torch.zeros((), device=accelerator.device)
        for i, batch in enumerate(micro):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            sync = accelerator.no_sync(net) if i < len(micro) - 1 else contextlib.nullcontext()
            with sync, accelerator.autocast(), torch.autocast(accelerator.device.type, torch.bfloat16, enabled=bf16):
                loss = loss_of(batch)
                accelerator.backward(loss / max(1, n_tokens))
            loss_sum += loss.detach()
        grad_norm = accelerator.clip_grad_norm_(trainable, recipe.max_grad_norm)
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups if not g["name"].endswith("/no_decay")}
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        totals = accelerator.reduce(torch.stack([loss_sum, torch.tensor(float(n_tokens), device=loss_sum.device)]),
                                    reduction="sum")
        loss_value = float(totals[0] / totals[1].clamp(min=1))
        history.append({"step": step + 1, "loss": loss_value, "grad_norm": float(grad_norm),
                        "tokens": round(float(totals[1]), 2),  # the normaliser: labelled tokens (or samples)
                        **{f"lr/{k}": v for k, v in lrs.items()},
                        "seconds": round(time.perf_counter() - t0, 4)})
        bar.update()
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{max(lrs.values()):.1e}")
        done = step + 1
        if done < recipe.steps and (done == end or (recipe.save_every and done % recipe.save_every == 0)):
            checkpoint(done)
    bar.close()
    uninstall_feature_cache(tower)

    info = {"recipe": recipe.to_dict(), "params_hash": recipe.params_hash(), "fingerprint": fingerprint,
            "parent": str(init_from) if init_from else None, "trainable": counts,
            "data": stream.summary(), "steps_done": len(history), "resumed_from_step": start_step,
            "train_seconds": round(time.perf_counter() - started, 2),  # this call, set-up included
            "step_seconds": round(sum(h["seconds"] for h in history), 2)}  # all steps, resumed ones included
    if len(history) < recipe.steps:
        return StageResult(recipe, None, history, info)

    weights = accelerator.get_state_dict(model)
    head = {k[len(HEAD_PREFIX):]: weights.pop(k) for k in list(weights) if k.startswith(HEAD_PREFIX)}
    if labeler is not None:
        del model.patch_label_head  # the final model is a plain AndesVL; the head is kept beside it
    if accelerator.is_main_process:
        def fill(tmp: Path) -> None:
            if head:
                save_file({k: v.contiguous() for k, v in head.items()}, str(tmp / HEAD_FILE))
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=weights)
            processor.save_pretrained(tmp)
            write_json(tmp / HISTORY_FILE, history)
            write_json(tmp / ARTIFACT_FILE, info)

        atomic_dir(final, fill)
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    return StageResult(recipe, final, history, info)

