"""Calibration: how strongly each weight column is used, from activations on a few calibration texts.

For a linear layer y = W x the output error of a quantised W is sum_j E[x_j^2] * |column j error|^2 (to first
order, with independent inputs), so E[x_j^2] is the importance of column j: the diagonal of the layer Hessian
that GPTQ/AWQ-style methods use. The paper does not publish its compression recipe (ANDESVL.md §4); this is ours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def run_with_linear_hooks(model: nn.Module, batches: list[torch.Tensor],
                          make_hook: Callable[[str], Callable[[nn.Module, tuple, torch.Tensor], None]]) -> None:
    """Run `batches` through `model` (eval mode) with `make_hook(weight name)` hooked on every `nn.Linear`."""
    if not batches:
        raise ValueError("calibration needs at least one batch")
    by_param: dict[int, str] = {id(p): n for n, p in model.named_parameters()}
    hooks = [m.register_forward_hook(make_hook(by_param[id(m.weight)])) for m in model.modules()
             if isinstance(m, nn.Linear) and id(m.weight) in by_param]
    was_training = model.training
    model.eval()
    try:
        for ids in batches:
            model(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def activation_importance(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameter name -> mean squared input per column, for every `nn.Linear`/`nn.Embedding`-tied weight.

    A weight shared by several modules (tied embedding and LM head) gets the statistics of the Linear that
    multiplies it (the LM head); embedding lookups have no input columns to weigh.
    """
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def make_hook(name: str):
        def hook(_module: nn.Module, args: tuple, _out: torch.Tensor) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + x.pow(2).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    run_with_linear_hooks(model, batches, make_hook)
    return {name: s / counts[name] for name, s in sums.items()}
