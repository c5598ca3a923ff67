"""Training the draft head by self-distillation (EAGLE's loss, with a HASS-style second unrolled step).

Loss per position: SmoothL1 between the predicted and the target's next feature, plus `ce_weight` times the
cross-entropy of the draft logits against the target's greedy token (restricted to the draft vocabulary; tokens
outside it are ignored). With `unroll=2` the head is run a second time on its *own* predicted features, the way it
drafts its second token at inference; HASS aligns training with that drafting context (ours is a simplification).
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import DistillData
from .head import DraftHead
from .target import Target


@dataclass
class TrainHistory:
    rows: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def vocab_index(vocab: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """token id -> index in the draft vocabulary (-100 outside it); the identity for the full vocabulary."""
    if len(vocab) == 0:
        return torch.arange(vocab_size)
    index = torch.full((vocab_size,), -100, dtype=torch.long)
    index[vocab] = torch.arange(len(vocab))
    return index


def distill_loss(pred: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                 lm_weight: torch.Tensor, ce_weight: float) -> dict[str, torch.Tensor]:
    """SmoothL1 on features + weighted CE on (draft-vocabulary) labels, over positions where `mask` is True."""
    feat_loss = F.smooth_l1_loss(pred[mask], feats[mask])
    logits = pred[mask] @ lm_weight.T
    target = labels[mask]
    ce = F.cross_entropy(logits, target, ignore_index=-100)
    with torch.no_grad():
        valid = target != -100
        acc = (logits.argmax(-1)[valid] == target[valid]).float().mean()
    return {"loss": feat_loss + ce_weight * ce, "feature_loss": feat_loss, "ce": ce, "top1": acc}


def batches(n: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """`steps` lists of `batch_size` row indices out of `n`, reshuffled at every epoch."""
    rng, order = random.Random(seed), []
    for _ in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(n), n)
        rows, order = order[:batch_size], order[batch_size:]
        yield rows


def batch_stream(data: DistillData, index: torch.Tensor, steps: int, batch_size: int, max_len: int, seed: int,
                 desc: str, progress: bool) -> Iterator[tuple]:
    """(rows, ids, features, labels, mask) for `steps` shuffled batches, with a progress bar."""
    for rows in tqdm(batches(len(data), batch_size, steps, seed), total=steps, desc=desc, disable=not progress):
        yield (rows, *_batch(data, rows, index, max_len))


def optimizer(params: list[torch.nn.Parameter], lr: float, steps: int):
    """AdamW with a 5% linear warm-up and a cosine decay to zero over `steps`."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    return opt, sched


def update(opt, sched, params: list[torch.nn.Parameter], loss: torch.Tensor) -> None:
    """One clipped optimizer step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def _batch(data: DistillData, rows: list[int], index: torch.Tensor, max_len: int):
    """Right-padded (B, T) ids, features, draft-vocabulary labels and a validity mask for `rows`."""
    n = min(max_len, max(len(data.ids[r]) for r in rows))
    b, h = len(rows), data.features[0].shape[-1]
    ids = torch.zeros((b, n), dtype=torch.long)
    feats = torch.zeros((b, n, h))
    labels = torch.full((b, n), -100, dtype=torch.long)
    valid = torch.zeros((b, n), dtype=torch.bool)
    for i, r in enumerate(rows):
        m = min(n, len(data.ids[r]))
        ids[i, :m], feats[i, :m], labels[i, :m] = data.ids[r][:m], data.features[r][:m], index[data.labels[r][:m]]
        valid[i, :m] = True
    return ids, feats, labels, valid


def train_head(head: DraftHead, target: Target, data: DistillData, steps: int = 200, batch_size: int = 8,
               lr: float = 1e-3, ce_weight: float = 0.1, unroll: int = 2, max_len: int = 256, seed: int = 0,
               bf16: bool = False, progress: bool = True) -> TrainHistory:
    """Train `head` in place on `data`; returns per-step losses, top-1 agreement and the wall time.

    `bf16` runs the forward and backward matrix products under CPU autocast in bfloat16 (AMX), with float32
    weights and optimizer state.
    """
    if steps < 1 or batch_size < 1 or unroll not in (1, 2):
        raise ValueError(f"need steps >= 1, batch_size >= 1 and unroll in (1, 2); got {steps}, {batch_size}, {unroll}")
    if len(data) == 0:
        raise ValueError("no distillation data")
    torch.manual_seed(seed)
    index = vocab_index(head.vocab, target.lm_head.weight.shape[0])
    params = [p for p in head.parameters() if p.requires_grad]
    opt, sched = optimizer(params, lr, steps)
    history, t0 = TrainHistory(), time.perf_counter()
    head.train()
    stream = batch_stream(data, index, steps, batch_size, max_len, seed, "draft head", progress)
    for step, (_, ids, feats, labels, valid) in enumerate(stream):
        with torch.no_grad():
            embeds = target.embed(ids[:, 1:])
        positions = torch.arange(ids.shape[1] - 1).unsqueeze(0)
        mask = valid[:, 1:] & valid[:, :-1]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")  # RMSNorm, bf16 in
            pred = head(feats[:, :-1], embeds, positions)
            out = distill_loss(pred, feats[:, 1:], labels[:, 1:], mask, head.lm_weight, ce_weight)
            loss = out["loss"]
            if unroll == 2:  # second drafting step: the head's own prediction replaces the true feature
                own = torch.cat([feats[:, :1], pred[:, :-1]], dim=1)
                pred2 = head(own, embeds, positions)
                out2 = distill_loss(pred2, feats[:, 1:], labels[:, 1:], mask, head.lm_weight, ce_weight)
                loss = loss + out2["loss"]
        update(opt, sched, params, loss)
        row = {"step": step + 1, "loss": loss.item(), "feature_loss": out["feature_loss"].item(),
               "ce": out["ce"].item(), "top1": out["top1"].item(), "lr": sched.get_last_lr()[0]}
        if unroll == 2:
            row["top1_step2"] = out2["top1"].item()
        history.rows.append(row)
    head.eval()
    history.seconds = time.perf_counter() - t0
    return history


@torch.no_grad()
def evaluate_head(head: DraftHead, target: Target, data: DistillData, max_len: int = 256,
                  answers_only: bool = False) -> dict[str, float]:
    """Top-1 agreement of the head's next token with the target's, with true features (step 1).

    `answers_only` scores only the positions the head drafts from at inference: the head at position j drafts token
    j + 2, from the prompt's last position on (the first answer token comes from the target's prefill).
    """
    index = vocab_index(head.vocab, target.lm_head.weight.shape[0])
    ids, feats, labels, valid = _batch(data, list(range(len(data))), index, max_len)
    pred = head(feats[:, :-1], target.embed(ids[:, 1:]), torch.arange(ids.shape[1] - 1).unsqueeze(0))
    mask = valid[:, 1:] & valid[:, :-1]
    if answers_only:
        starts = torch.tensor(data.prompt_lengths)[:, None] - 1
        mask &= torch.arange(mask.shape[1])[None] >= starts
    out = distill_loss(pred, feats[:, 1:], labels[:, 1:], mask, head.lm_weight, 0.1)
    full = torch.cat(data.labels)
    coverage = float(torch.isin(full, head.vocab).float().mean()) if len(head.vocab) else 1.0
    return {"top1": out["top1"].item(), "feature_loss": out["feature_loss"].item(), "vocab_coverage": coverage}
