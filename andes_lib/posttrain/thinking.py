"""Long chain-of-thought SFT: the first step of the Thinking model (ANDESVL.md §2, SPEC §3.4).

The rationale-bearing domains (`reasoning`, `chart`: every sample carries a step-by-step rationale ending in
`\\boxed{answer}`) are written in the thinking format, the prompt pre-filled with `<think>\\n` exactly as
`apply_chat_template(..., enable_thinking=True)` writes it at inference:

    prompt:      <|im_start|>user\\n<image>How many stars are there?<|im_end|>\\n<|im_start|>assistant\\n<think>\\n
    completion:  I count the stars: 1, 2, 3. There are 3 stars. The answer is \\boxed{3}.\\n</think>\\n\\n3<|im_end|>

A replay share of ordinary instruction rows (all domains, no pre-fill, the answer directly) keeps the
non-thinking mode: the loss never trains the choice of `<think>` itself, so `enable_thinking` decides the mode
at inference (on: reason then answer; off: answer directly). The loss is on the completion only
(TRL `SFTTrainer`, prompt-completion format).

A rationale helps only if its steps are easier for the model than the answer. The generator's count rationale
("I count the stars: 1, 2, 3") asks at every number "is there one more?", the same judgement as the direct answer;
`scan_rationale` instead names every object in reading order, as the captions the model already writes do, and
numbers the targets as it meets them ("a red star (1), a blue circle, a green star (2)"): one look-up per step,
then a count over its own words. Measured in chapter 06's header: with enough long-CoT SFT it counts as well as the
generator's rationale, not better, so it is an option (`scan`).

Simplification vs the paper: "long" CoT here means the generators' short rationales (one to three sentences);
the paper's long-CoT data is distilled from stronger reasoning models.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from ..data.dataset import build_dataset
from ..data.general_vqa import article
from ..data.render import centre
from ..data.registry import DOMAINS
from .common import (TRL_CPU_ARGS, compact_logging, freeze_groups, load_checkpoint, log_frame, posttrain_optimizer,
                     prompt_text, save_checkpoint, seed_all, trained_with)

THINKING_DOMAINS: tuple[str, ...] = ("reasoning", "chart")
END = "<|im_end|>"
SCAN_ROWS = 4  # the count scenes' grid has 4 rows (`data.reasoning`)


THINKING_STAGES: tuple[str, ...] = ("grpo-stage2", "grpo-stage1", "think-sft")  # chapter 06's folders, latest first


def thinking_checkpoint(run_dir: str | os.PathLike[str]) -> Path:
    """The latest Thinking model chapter 06 saved in a run directory (`posttrain/thinking/<stage>`)."""
    folder = Path(run_dir) / "posttrain" / "thinking"
    for stage in THINKING_STAGES:
        if (folder / stage / "model.safetensors").is_file():
            return folder / stage
    raise FileNotFoundError(f"no Thinking model in {folder} (looked for {', '.join(THINKING_STAGES)}): run chapter "
                            f"06 into this run directory first (andes-cookbook run --only 06 --run-dir {run_dir})")


def thinking_completion(rationale: str, answer: str) -> str:
    """What follows the pre-filled `<think>\\n`: the rationale, `</think>`, the final answer, end of turn."""
    return f"{rationale}\n</think>\n\n{answer}{END}"


def scan_rationale(scene: dict[str, Any]) -> str:
    """A count rationale that scans: every object in reading order (row by row, left to right), each target numbered
    as it is met, then the last number boxed. `scene` is a reasoning `count` scene (its query names the shape)."""
    target = scene["query"]["shape"]
    row_height = scene["size"][1] / SCAN_ROWS
    ordered = sorted(scene["objects"], key=lambda o: (int(centre(o["box"])[1] // row_height), centre(o["box"])[0]))
    count, named = 0, []
    for o in ordered:
        name = f"{article(o['colour'])} {o['colour']} {o['shape']}"
        if o["shape"] == target:
            count += 1
            name += f" ({count})"
        named.append(name)
    return (f"Row by row I see {', '.join(named)}. There {'is' if count == 1 else 'are'} {count}. "
            f"The answer is \\boxed{{{count}}}.")


def thinking_sft_data(processor: Any, n_thinking: int = 400, n_replay: int = 40,
                      thinking_domains: Sequence[str] = THINKING_DOMAINS, replay_domains: Sequence[str] = DOMAINS,
                      seed: int = 3, split: str = "train", scan: bool = False,
                      progress: bool = False) -> datasets.Dataset:
    """Prompt-completion rows: `n_thinking` per thinking domain (rationale), `n_replay` per replay domain (plain).
    `scan`: reasoning `count` rows get `scan_rationale` instead of the generator's.

    Columns: images, prompt, completion (strings), domain, mode ("thinking" / "instruct"). Shuffled.
    """
    rows = []
    if n_thinking:
        for r in build_dataset(split, list(thinking_domains), n_thinking, seed, progress=progress):
            if not r["rationale"]:
                raise ValueError(f"{r['id']}: domain {r['domain']} has no rationale; it cannot be a thinking domain")
            scans = scan and r["domain"] == "reasoning" and r["task"] == "count"
            rationale = scan_rationale(json.loads(r["scene"])) if scans else r["rationale"]
            rows.append({"images": r["images"], "domain": r["domain"], "mode": "thinking",
                         "prompt": prompt_text(processor, r["question"], len(r["images"]), thinking=True),
                         "completion": thinking_completion(rationale, r["answer"])})
    if n_replay:
        for r in build_dataset(split, list(replay_domains), n_replay, seed + 1, progress=progress):
            rows.append({"images": r["images"], "domain": r["domain"], "mode": "instruct",
                         "prompt": prompt_text(processor, r["question"], len(r["images"]), thinking=False),
                         "completion": f"{r['answer']}{END}"})
    if not rows:
        raise ValueError("no rows: n_thinking and n_replay are both 0")
    features = datasets.Features({"images": datasets.List(datasets.Image()), "domain": datasets.Value("string"),
                                  "mode": datasets.Value("string"), "prompt": datasets.Value("string"),
                                  "completion": datasets.Value("string")})
    return datasets.Dataset.from_list(rows, features=features).shuffle(seed=seed)


@dataclass
class SFTResult:
    """Where the model was saved, the trainer's per-step log and timing."""

    path: Path
    log_history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def frame(self):
        return log_frame(self.log_history)


def run_thinking_sft(init_dir: str | os.PathLike[str], data: datasets.Dataset, out_dir: str | os.PathLike[str],
                     steps: int = 150, batch_size: int = 16, lr: float = 5e-4, seed: int = 0,
                     log_every: int = 10, optimizer: str | None = None, freeze: Sequence[str] = (),
                     **overrides: Any) -> SFTResult:
    """Completion-only SFT (TRL `SFTTrainer`) from `init_dir` on `thinking_sft_data` rows; saves to `out_dir`.
    `optimizer`: "muon" or "adamw"; None: the one `init_dir` was trained with (`common.trained_with`). `freeze`
    names module groups that stay fixed (`common.freeze_groups`)."""
    from trl import SFTConfig, SFTTrainer

    seed_all(seed)
    optimizer = optimizer or trained_with(init_dir)
    model, processor = load_checkpoint(init_dir)
    freeze_groups(model, freeze)
    model.train()
    kwargs = dict(TRL_CPU_ARGS) | {
        "output_dir": str(Path(out_dir) / "trainer"), "max_steps": steps, "per_device_train_batch_size": batch_size,
        "learning_rate": lr, "lr_scheduler_type": "cosine", "warmup_steps": min(10, steps // 10), "seed": seed,
        "data_seed": seed, "max_length": None, "completion_only_loss": True, "weight_decay": 0.0,
    }
    args = SFTConfig(**(kwargs | overrides))
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.select_columns(["images", "prompt", "completion"]),
                         processing_class=processor, optimizers=(posttrain_optimizer(model, lr, optimizer), None))
    compact_logging(trainer, log_every, ("loss", "mean_token_accuracy"))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return SFTResult(save_checkpoint(trainer.model, processor, out_dir, optimizer), list(trainer.state.log_history),
                     seconds)
