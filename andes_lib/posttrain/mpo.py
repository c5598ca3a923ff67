"""MPO, mixed preference optimisation (ANDESVL.md §2, SPEC §3.3): the Instruct model's step after SFT.

One batch holds preference pairs (a prompt, a chosen answer, a rejected answer). The loss mixes three terms:

    L = w_p * L_preference + w_q * L_quality + w_g * L_generation      (w = 0.8, 0.2, 1.0; beta = 0.1)

- preference (DPO, sigmoid): the policy should prefer chosen over rejected *more than the reference does*;
- quality (BCO, pair form): chosen should be more likely than under the reference, rejected less likely, each
  on its own (an absolute judgement, unlike DPO's relative one);
- generation (SFT): the negative log-likelihood of the chosen answer, so the model keeps writing good answers.

The log-probabilities are SUMS over the completion tokens; the log-ratios are policy minus reference. This is
exactly what TRL 1.16's `DPOTrainer` computes with `loss_type=["sigmoid", "bco_pair", "sft"]` and
`loss_weights=[0.8, 0.2, 1.0]`: `tests/test_posttrain.py` checks `mpo_loss` against it on the same batch.
TRL's `bco_pair` has no running-mean shift delta (the BCO paper's); neither has ours. `run_mpo` trains with
TRL and returns the trainer's log history (reward margins, accuracies, ...) for the notebook's curves.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .common import (TRL_CPU_ARGS, compact_logging, freeze_groups, load_checkpoint, posttrain_optimizer,
                     save_checkpoint, seed_all, trained_with)

MPO_LOSS_TYPES: tuple[str, str, str] = ("sigmoid", "bco_pair", "sft")
MPO_WEIGHTS: tuple[float, float, float] = (0.8, 0.2, 1.0)  # preference, quality, generation (InternVL2.5-MPO)
MPO_BETA = 0.1


# ----------------------------------------------------------------------------- the loss, by hand
def preference_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor,
                    beta: float = MPO_BETA) -> torch.Tensor:
    """DPO: -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)), one value per pair."""
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))


def quality_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor,
                 beta: float = MPO_BETA) -> torch.Tensor:
    """BCO (pair form): chosen classified "good" and rejected "bad", each on its own reward beta * log-ratio."""
    return -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-beta * rejected_logratios)


def generation_loss(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor) -> torch.Tensor:
    """SFT: mean negative log-likelihood over every chosen completion token of the batch (a scalar)."""
    mask = chosen_mask.bool()
    return -chosen_token_logps[mask].mean()


def mpo_loss(chosen_token_logps: torch.Tensor, rejected_token_logps: torch.Tensor,
             ref_chosen_token_logps: torch.Tensor, ref_rejected_token_logps: torch.Tensor,
             chosen_mask: torch.Tensor, rejected_mask: torch.Tensor, beta: float = MPO_BETA,
             weights: tuple[float, float, float] = MPO_WEIGHTS) -> dict[str, torch.Tensor]:
    """The MPO loss of a batch of pairs from per-token log-probs (B, T) and completion masks (B, T).

    Returns the total `loss`, the three terms (batch means), and the implicit rewards
    (beta * log-ratio) of chosen and rejected, as TRL logs them.
    """
    chosen_logps = (chosen_token_logps * chosen_mask).sum(-1)  # sum over the completion tokens
    rejected_logps = (rejected_token_logps * rejected_mask).sum(-1)
    chosen_logratios = chosen_logps - (ref_chosen_token_logps * chosen_mask).sum(-1)
    rejected_logratios = rejected_logps - (ref_rejected_token_logps * rejected_mask).sum(-1)
    w_pref, w_qual, w_gen = weights
    pref = preference_loss(chosen_logratios, rejected_logratios, beta).mean()
    qual = quality_loss(chosen_logratios, rejected_logratios, beta).mean()
    gen = generation_loss(chosen_token_logps, chosen_mask)
    return {"loss": w_pref * pref + w_qual * qual + w_gen * gen, "preference": pref, "quality": qual,
            "generation": gen, "rewards_chosen": beta * chosen_logratios.detach(),
            "rewards_rejected": beta * rejected_logratios.detach()}


def token_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of a DPO batch's own tokens, and the completion mask, both shifted: (B, T-1).

    Position t scores token t+1 given tokens <= t; `completion_mask` (1 on completion tokens) selects the answer.
    Prompt tokens and padding get log-prob 0 (masked), as in TRL.
    """
    inputs = {k: v for k, v in batch.items() if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].to(logps.dtype)
    return logps * mask, mask


def mpo_loss_from_batch(model: Any, ref_model: Any, batch: dict[str, torch.Tensor], beta: float = MPO_BETA,
                        weights: tuple[float, float, float] = MPO_WEIGHTS) -> dict[str, torch.Tensor]:
    """`mpo_loss` of a TRL DPO collator batch (rows 0..B-1 chosen, B..2B-1 rejected, same prompts)."""
    logps, mask = token_logps(model, batch)
    with torch.no_grad():
        ref_logps, _ = token_logps(ref_model, batch)
    (c, r), (rc, rr), (cm, rm) = logps.chunk(2), ref_logps.chunk(2), mask.chunk(2)
    return mpo_loss(c, r, rc, rr, cm, rm, beta=beta, weights=weights)


# ----------------------------------------------------------------------------- training with TRL
def mpo_config(output_dir: str | os.PathLike[str], steps: int = 60, batch_size: int = 8, lr: float = 2e-4,
               beta: float = MPO_BETA, weights: tuple[float, float, float] = MPO_WEIGHTS, seed: int = 0,
               **overrides: Any):
    """TRL `DPOConfig` for MPO on CPU: the three losses with their weights, a short warm-up, constant LR."""
    from trl import DPOConfig

    kwargs = dict(TRL_CPU_ARGS) | {
        "output_dir": str(output_dir), "max_steps": steps, "per_device_train_batch_size": batch_size,
        "learning_rate": lr, "lr_scheduler_type": "constant_with_warmup", "warmup_steps": min(5, steps // 5),
        "loss_type": list(MPO_LOSS_TYPES), "loss_weights": list(weights), "beta": beta, "max_length": None,
        "seed": seed, "data_seed": seed, "weight_decay": 0.0, "max_grad_norm": 1.0,
    }
    return DPOConfig(**(kwargs | overrides))


@dataclass
class MPOResult:
    """Where the MPO model was saved, the trainer's per-step log and timing."""

    path: Path
    log_history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    n_pairs: int = 0

    def frame(self):
        """Per-step log rows: loss, rewards/chosen|rejected|margins|accuracies, logps/*, ..."""
        from .common import log_frame

        return log_frame(self.log_history)


def run_mpo(init_dir: str | os.PathLike[str], pairs: Any, out_dir: str | os.PathLike[str], steps: int = 60,
            batch_size: int = 8, lr: float = 2e-4, beta: float = MPO_BETA,
            weights: tuple[float, float, float] = MPO_WEIGHTS, seed: int = 0, log_every: int = 10,
            freeze: tuple[str, ...] = (), optimizer: str | None = None, **overrides: Any) -> MPOResult:
    """MPO from the checkpoint in `init_dir` on `pairs` (a `datasets.Dataset` with images, prompt, chosen,
    rejected in TRL's conversational format) with TRL's `DPOTrainer`; saves model + processor to `out_dir`.
    `freeze` names module groups that stay fixed (`vision_tower`, `projector`, `language_model`); `optimizer` is
    "muon" or "adamw"; None: the one `init_dir` was trained with (`common.trained_with`).

    The reference model is a frozen copy of the starting checkpoint (a copy, not a reload by name: a model built
    from a config has no name TRL could reload it from, STACK.md §4b).
    """
    from trl import DPOTrainer

    seed_all(seed)
    optimizer = optimizer or trained_with(init_dir)
    model, processor = load_checkpoint(init_dir)
    freeze_groups(model, freeze)
    model.train()
    ref_model = copy.deepcopy(model).eval()
    columns = [c for c in ("images", "prompt", "chosen", "rejected") if c in pairs.column_names]
    args = mpo_config(Path(out_dir) / "trainer", steps, batch_size, lr, beta, weights, seed, **overrides)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=pairs.select_columns(columns),
                         processing_class=processor, optimizers=(posttrain_optimizer(model, lr, optimizer), None))
    compact_logging(trainer, log_every, ("loss", "rewards/margins", "rewards/accuracies"))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    path = save_checkpoint(trainer.model, processor, out_dir, optimizer)
    return MPOResult(path, list(trainer.state.log_history), seconds, len(pairs))
