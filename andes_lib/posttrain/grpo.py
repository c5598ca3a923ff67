"""GRPO for the Thinking model, in two difficulty-graded stages (ANDESVL.md §2, SPEC §3.4), with TRL.

Group Relative Policy Optimisation: for every prompt, sample a group of G completions (thinking on), score
each with the verifiable rewards (`rewards.thinking_rewards`: answer correctness + format), and push up the
log-probability of the completions that beat their group's mean, down those below it:

    advantage_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4)          (`group_advantages`)
    loss = - sum_tokens advantage_i * log pi(token) / number of tokens    (`grpo_loss`; on-policy, ratio = 1)

Both are written out here and tested against TRL (`tests/test_posttrain.py`: same loss value and gradient on
a batch TRL generated). TRL scores the completions at the sampling temperature (its fused head divides the
logits by it), so its log-probs are those of the tempered distribution.

Stage 1 trains on the prompts the Thinking-SFT model solves sometimes but not always (`easy`), stage 2, from
the stage-1 model, on those it rarely solves (`hard`) (`difficulty.grade`).

Simplifications vs the paper (whose exact recipe is not published, SPEC §3.4), on purpose for a CPU:
- no KL term: `beta=0` (TRL's default; no reference model is kept);
- strictly on-policy: one gradient step per generated batch (`num_iterations=1`, `steps_per_generation=1`), so
  the clipped importance ratio is always 1 and PPO clipping never acts;
- TRL's default `dapo` token-level loss normalisation and per-group reward scaling;
- small groups (G = 4) and short completions (<= 64 tokens); no vLLM.
`HeldOutMonitor` evaluates held-out prompts during training (greedy accuracy, share of well-formed outputs,
completion length), so a reward that rises while held-out accuracy does not (reward hacking) or a collapse of
length or format is visible.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import torch

from ..eval.metrics import score
from .common import (TRL_CPU_ARGS, compact_logging, freeze_groups, load_checkpoint, log_frame, posttrain_optimizer,
                     sample_answers, save_checkpoint, seed_all, trained_with)
from .rewards import format_score, thinking_rewards

REWARD_WEIGHTS: tuple[float, float] = (1.0, 0.5)  # accuracy, format


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the group's (unbiased) std when `scale`.

    `rewards` is flat, groups consecutive (G completions of prompt 0, then of prompt 1, ...), as in TRL.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be flat with a multiple of {group_size} entries, got {tuple(rewards.shape)}")
    groups = rewards.view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        std = groups.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(groups[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(-1)


def grpo_loss(token_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              old_token_logps: torch.Tensor | None = None, epsilon: float = 0.2) -> torch.Tensor:
    """The clipped policy-gradient loss of a batch of completions (B, T), token-level, normalised by the number
    of completion tokens (TRL's `dapo`), without a KL term.

    Strictly on-policy, `old_token_logps` are the current ones (detached): the ratio is exactly 1, clipping never
    acts, and the gradient is that of `-sum(advantage * log p(token)) / n_tokens`, an advantage-weighted
    log-likelihood.
    """
    old = token_logps.detach() if old_token_logps is None else old_token_logps
    ratio = torch.exp(token_logps - old)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def grpo_rows(data: datasets.Dataset) -> datasets.Dataset:
    """GRPO's columns from a verifiable (or SFT) dataset: images, prompt (conversational), answer, metric, domain."""
    from ..data.base import user_message

    if "prompt" not in data.column_names:
        data = data.map(lambda r: {"prompt": [user_message(r["question"], len(r["images"]))]})
    return data.select_columns(["images", "prompt", "answer", "metric", "domain"])


def grpo_config(output_dir: str | os.PathLike[str], steps: int = 30, prompts_per_step: int = 4,
                num_generations: int = 4, max_completion_length: int = 64, lr: float = 1e-4,
                temperature: float = 1.0, seed: int = 0, **overrides: Any):
    """TRL `GRPOConfig` for CPU: thinking on, strictly on-policy, no KL, `prompts_per_step * G` completions."""
    from trl import GRPOConfig

    kwargs = dict(TRL_CPU_ARGS) | {
        "output_dir": str(output_dir), "max_steps": steps,
        "per_device_train_batch_size": prompts_per_step * num_generations, "num_generations": num_generations,
        "gradient_accumulation_steps": 1, "steps_per_generation": 1, "num_iterations": 1, "beta": 0.0,
        "max_completion_length": max_completion_length, "temperature": temperature, "learning_rate": lr,
        "lr_scheduler_type": "constant", "warmup_steps": 0, "seed": seed, "data_seed": seed,
        "chat_template_kwargs": {"enable_thinking": True}, "reward_weights": list(REWARD_WEIGHTS),
        "weight_decay": 0.0, "max_grad_norm": 1.0,
    }
    return GRPOConfig(**(kwargs | overrides))


def thinking_eval(model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], max_new_tokens: int = 64,
                  thinking: bool = True, batch_size: int = 32) -> dict[str, float]:
    """Greedy answers on held-out rows: accuracy (the evaluation's lenient scoring), share of well-formed
    thinking outputs, mean completion length in tokens and share cut at the token limit."""
    outs = [o[0] for o in sample_answers(model, processor, rows, k=1, max_new_tokens=max_new_tokens,
                                         thinking=thinking, batch_size=batch_size, do_sample=False)]
    n = max(1, len(outs))
    return {
        "accuracy": sum(score(o["text"], r["answer"], r["metric"]) for o, r in zip(outs, rows, strict=True)) / n,
        "well_formed": sum(format_score(o["text"], o["finished"]) for o in outs) / n if thinking else float("nan"),
        "mean_tokens": sum(o["n_tokens"] for o in outs) / n,
        "truncated": sum(not o["finished"] for o in outs) / n,
    }


def held_out_monitor(rows: Sequence[Mapping[str, Any]], processor: Any, every: int = 10,
                     max_new_tokens: int = 64, label: str = ""):
    """A TrainerCallback that runs `thinking_eval` on `rows` at step 0, every `every` steps and at the end."""
    from transformers import TrainerCallback

    class HeldOutMonitor(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []

        def _run(self, state: Any, model: Any) -> None:
            if self.history and self.history[-1]["step"] == state.global_step:
                return
            was_training = model.training
            metrics = thinking_eval(model, processor, rows, max_new_tokens=max_new_tokens)
            model.train(was_training)
            self.history.append({"step": state.global_step, "stage": label, **metrics})

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self._run(state, model)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            if every and state.global_step % every == 0:
                self._run(state, model)

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self._run(state, model)

    return HeldOutMonitor()


def trl_vlm_processor(processor: Any) -> Any:
    """A copy of the processor shaped the way TRL's GRPOTrainer expects a (Qwen-style) VLM processor.

    Two differences with `AndesVLProcessor`: TRL tokenises a batch of prompts with
    `apply_chat_template(..., tokenize=True)` without `return_tensors` and expects one list of ids per prompt
    (the transformers processors' default; ours defaults to tensors), and TRL splits and slices packed
    `pixel_values` by an `image_grid_thw` (n_images, 3) grid, while ours is called `image_grid_hw` (n_images, 2).
    The copy returns lists by default and names the grid `image_grid_thw` = (1, h, w); `grpo_model_hook` maps it
    back on the model side (`trl_vlm_model`). Only the copy handed to the trainer changes; the saved processor
    is the original.
    """
    base = type(processor)
    if getattr(base, "_trl_vlm", False):
        return processor

    def __call__(self, images=None, text=None, return_tensors=None, **kwargs):  # noqa: N807
        out = base.__call__(self, images=images, text=text, return_tensors=return_tensors, **kwargs)
        if "image_grid_hw" in out:
            hw = torch.as_tensor(out.pop("image_grid_hw"))
            out["image_grid_thw"] = torch.cat([torch.ones_like(hw[:, :1]), hw], dim=1)
        return out

    clone = copy.copy(processor)
    clone.__class__ = type(base.__name__, (base,), {"__call__": __call__, "_trl_vlm": True})
    return clone


@contextlib.contextmanager
def trl_vlm_model(model: Any):
    """The model-side half of `trl_vlm_processor`, for the duration of a GRPO run.

    - the model's class is swapped for a subclass whose `forward` names `image_grid_thw` in its signature
      (`generate` rejects keyword arguments the forward signature does not name);
    - a pre-hook on the inner AndesVL model (which both generation and TRL's fused log-prob head call) turns
      `image_grid_thw` back into `image_grid_hw` and drops TRL's Qwen/Gemma `token_type_ids`.
    Both are undone on exit, so the saved model is a plain `AndesVLForConditionalGeneration`.
    """
    base = type(model)

    def forward(self, input_ids=None, pixel_values=None, image_grid_hw=None, attention_mask=None,  # noqa: PLR0913
                position_ids=None, past_key_values=None, inputs_embeds=None, labels=None, use_cache=None,
                logits_to_keep=0, image_grid_thw=None, **kwargs):
        if image_grid_hw is None and image_grid_thw is not None:
            image_grid_hw = image_grid_thw[:, -2:]
        return base.forward(self, input_ids=input_ids, pixel_values=pixel_values, image_grid_hw=image_grid_hw,
                            attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                            use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)

    def pre_hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        thw = kwargs.pop("image_grid_thw", None)
        if thw is not None and kwargs.get("image_grid_hw") is None:
            kwargs["image_grid_hw"] = thw[:, -2:]
        kwargs.pop("token_type_ids", None)
        kwargs.pop("mm_token_type_ids", None)
        return args, kwargs

    model.__class__ = type(base.__name__, (base,), {"forward": forward})
    handle = model.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield model
    finally:
        handle.remove()
        model.__class__ = base


@dataclass
class GRPOResult:
    """Where the model was saved, TRL's per-step log, the held-out monitor's rows and timing."""

    path: Path
    log_history: list[dict[str, Any]] = field(default_factory=list)
    held_out: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    n_prompts: int = 0

    def frame(self) -> pd.DataFrame:
        """Per step: reward, rewards/accuracy_reward/mean, rewards/format_reward/mean, completions/mean_length, ..."""
        return log_frame(self.log_history)


def run_grpo(init_dir: str | os.PathLike[str], prompts: datasets.Dataset, out_dir: str | os.PathLike[str],
             steps: int = 30, prompts_per_step: int = 4, num_generations: int = 4, max_completion_length: int = 64,
             lr: float = 1e-4, temperature: float = 1.0, seed: int = 0,
             held_out: Sequence[Mapping[str, Any]] | None = None, eval_every: int = 10, label: str = "",
             reward_funcs: Sequence[Any] | None = None, log_every: int = 10, optimizer: str | None = None,
             freeze: Sequence[str] = (), **overrides: Any) -> GRPOResult:
    """GRPO (TRL `GRPOTrainer`) from the checkpoint in `init_dir` on `prompts` (see `grpo_rows`); saves the
    model + processor in `out_dir`. `held_out` rows (question, images, answer, metric) are evaluated every
    `eval_every` steps. `reward_funcs` replaces `thinking_rewards` (then set `reward_weights` to match).
    `optimizer`: "muon" or "adamw"; None: the one `init_dir` was trained with (`common.trained_with`). `freeze`
    names module groups that stay fixed (`common.freeze_groups`)."""
    from trl import GRPOTrainer

    seed_all(seed)
    optimizer = optimizer or trained_with(init_dir)
    model, processor = load_checkpoint(init_dir)
    freeze_groups(model, freeze)
    model.train()
    args = grpo_config(Path(out_dir) / "trainer", steps, prompts_per_step, num_generations, max_completion_length,
                       lr, temperature, seed, **overrides)
    callbacks = []
    monitor = None
    if held_out:
        monitor = held_out_monitor(held_out, processor, eval_every, max_completion_length, label)
        callbacks.append(monitor)
    with trl_vlm_model(model):
        funcs = list(reward_funcs) if reward_funcs is not None else thinking_rewards(processor.tokenizer)
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args,
                              train_dataset=grpo_rows(prompts), processing_class=trl_vlm_processor(processor),
                              callbacks=callbacks, optimizers=(posttrain_optimizer(model, lr, optimizer), None))
        compact_logging(trainer, log_every, ("reward", "rewards/accuracy_reward/mean", "rewards/format_reward/mean",
                                             "completions/mean_length"))
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    path = save_checkpoint(trainer.model, processor, out_dir, optimizer)
    return GRPOResult(path, list(trainer.state.log_history), monitor.history if monitor else [], seconds,
                      len(prompts))
