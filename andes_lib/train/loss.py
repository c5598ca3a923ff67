"""How a batch's token losses are averaged: per token, per sample, or InternVL2.5's square averaging.

A batch mixes a POPE answer (one word and `<|im_end|>`: 2 labelled tokens) with a caption or a chart table (15-40).
Averaged per token, the long answers own the gradient and a yes/no question is a rounding error; that is one of the
differences between the pipeline and the simulation that learns the visual lookup (`benchmarks/oracle_binding.py`).
InternVL2.5 (arXiv 2412.05271, §4.4) weights each token by 1/sqrt(n) (n = labelled tokens of its sample), between
token averaging (1) and sample averaging (1/n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .collate import IGNORE_INDEX

WEIGHTINGS: tuple[str, ...] = ("token", "sample", "square")


def token_weights(labels: torch.Tensor, weighting: str = "token",
                  position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Unnormalised per-token loss weights of a (batch, seq) label tensor; 0 where the label is ignored.

    The loss of a step is `sum(weights * nll) / sum(weights)` over the whole step (all micro-batches and processes),
    so `token` gives the usual mean over tokens and `sample` the mean over samples of each sample's mean. A sample
    is a row, or, given the `position_ids` of packed rows (`collate.pack_rows`), a run that starts at position 0.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {WEIGHTINGS}")
    mask = (labels != IGNORE_INDEX).float()
    if weighting == "token":
        return mask
    if position_ids is None:
        n = mask.sum(dim=-1, keepdim=True)
    else:  # labelled tokens per sample, spread back over the sample's tokens
        sample = (position_ids == 0).long().cumsum(dim=-1)
        n = mask.new_zeros(mask.shape[0], mask.shape[1] + 1).scatter_add_(-1, sample, mask).gather(-1, sample)
    n = n.clamp(min=1)
    return mask / (n if weighting == "sample" else n.sqrt())


def label_weights(batch: dict[str, torch.Tensor], weighting: str = "token") -> torch.Tensor:
    """`token_weights` of a collated batch's next-token labels (`labels[:, 1:]`), padded or packed."""
    positions = batch.get("position_ids")
    return token_weights(batch["labels"][:, 1:], weighting, None if positions is None else positions[:, 1:])


def lm_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor], weighting: str = "token") -> torch.Tensor:
    """Weighted sum of the next-token losses of a collated batch (its `labels` are popped); the LM head runs only at
    positions followed by a label. Divide by the step's `label_weights(...).sum()` for the step's loss."""
    weights = label_weights(batch, weighting)
    labels = batch.pop("labels")[:, 1:]
    labelled = labels != IGNORE_INDEX
    logits = model(**batch, use_cache=False, logits_to_keep=F.pad(labelled, (0, 1))).logits
    nll = F.cross_entropy(logits.float(), labels[labelled], reduction="none")
    return (nll * weights[labelled]).sum()
