"""Muon for the language model's matrices, AdamW for everything else, as one optimizer (one state to checkpoint).

Muon (Jordan et al. 2024; Liu et al. 2025, "Muon is scalable") replaces each 2-D weight's momentum update by its
nearest semi-orthogonal matrix (five Newton-Schulz iterations), which moves every direction of the matrix at the
same rate: rare associations (which word goes with which visual code) are learned as fast as frequent ones.
In `shared/experiments/binding_sim.py` (nano's LLM, random visual features, batch 16) AdamW stays at chance on the
look-up after 500 steps; Muon answers every held-out colour and presence question by step 125 (`03` section 7).

The update is scaled by 0.2 * sqrt(max(rows, cols)) so that its RMS matches AdamW's (torch's
`adjust_lr_fn="match_rms_adamw"`): the same learning rates and weight decay serve both. `torch.optim.Muon`
computes the iterations in bfloat16, which CPUs without bf16 units emulate slowly (a nano step several times
slower); here `ns_dtype` picks: float32 by default, bfloat16 in the stages whose recipe trains in bf16 (half the
time of nano's 28 matrices on a CPU with AVX512-BF16: 0.06 s a step against 0.12 s). `tests/test_optim.py` checks
the update against torch's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)


def orthogonalize(update: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Newton-Schulz iterations towards U V^T of `update` = U S V^T, computed in `dtype`."""
    a, b, c = NS_COEFFICIENTS
    x = update.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class MuonAdamW(torch.optim.Optimizer):
    """Groups with `muon=True` (2-D weights) take Muon steps with Nesterov momentum; the others take AdamW steps."""

    def __init__(self, params: Iterable[dict[str, Any]], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-8, weight_decay: float = 0.01, momentum: float = 0.95, ns_steps: int = 5,
                 ns_dtype: str = "float32"):
        if ns_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"ns_dtype must be 'float32' or 'bfloat16', got {ns_dtype!r}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        ns_steps=ns_steps, ns_dtype=ns_dtype, muon=False)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError(f"Muon group {group.get('name', '?')!r} holds parameters that are not 2-D matrices")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                p.mul_(1 - lr * wd)
                if group["muon"]:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(p.grad)
                    update = p.grad.add(buf, alpha=group["momentum"])  # Nesterov
                    scale = 0.2 * math.sqrt(max(p.shape))
                    dtype = getattr(torch, group.get("ns_dtype", "float32"))
                    p.add_(orthogonalize(update, group["ns_steps"], dtype=dtype).to(p.dtype), alpha=-lr * scale)
                    continue
                beta1, beta2 = group["betas"]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** t))
        return loss
