"""Recovery with a little training: distil the fp32 model into the quantised one's scales and norms (ANDESVL.md §4).

The codes stay frozen (so the file's size, its bpw and the packed layout do not change); what trains is every
group's fp16 scale (as a learned log-factor on its fitted value) and the RMSNorm weights (the "norm tweaking" idea),
against the fp32 model's next-token distributions on calibration text (KL divergence). It is a cheap cousin of the
QAT/QALFT the paper runs (there the encodings are fixed by PTQ and the weights train; here the reverse, because a
CPU can afford a few dozen steps on a million scales, not on 135M weights).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from tqdm.auto import tqdm

from .packing import unpack_codes, unpack_trits
from .schemes import dequantize_matrix, parse_scheme, quantize_matrix


def _centered_codes(stored: dict[str, torch.Tensor], kind: str, bits: int, n: int) -> torch.Tensor:
    if kind == "int":
        return unpack_codes(stored["codes"], bits, n).float().sub_((2**bits - 1) / 2)
    return unpack_trits(stored["codes"], n).float().sub_(1)


def distill_scales(model: nn.Module, stored: dict[str, dict[str, torch.Tensor]], schemes: dict[str, str],
                   default: str, batches: list[torch.Tensor], steps: int = 30, lr: float = 0.01,
                   importance: dict[str, torch.Tensor] | None = None,
                   progress: bool = False) -> tuple[dict[str, dict[str, torch.Tensor]], nn.Module, dict[str, float]]:
    """Tune the scales of the int/ternary matrices in `stored` (and all 1-D weights) by KL distillation from `model`.

    Returns (stored tensors with the tuned fp16 scales, a copy of `model` carrying the tuned norms for
    `save_packed`, and a cost/loss summary). Matrices whose group does not divide their row keep their scales;
    matrices not in `stored` take, in the student, the weights `save_packed` will write for them (its own fit
    with `importance`), so the norms train against the model the file will hold.
    """
    if steps < 1 or not batches:
        raise ValueError(f"need steps >= 1 and calibration batches (got {steps}, {len(batches)})")
    t0 = time.perf_counter()
    student = copy.deepcopy(model).eval()
    params = dict(student.named_parameters())
    with torch.no_grad():
        teacher = [F.log_softmax(model(input_ids=b).logits.float(), -1) for b in batches]
    codes, logs, base = {}, {}, {}
    for name, st in stored.items():
        scheme = parse_scheme(schemes.get(name, default))
        rows, cols = params[name].shape
        if scheme.kind not in ("int", "ternary") or cols % scheme.group:
            continue
        codes[name] = _centered_codes(st, scheme.kind, scheme.bits, rows * cols).reshape(rows, cols // scheme.group,
                                                                                          scheme.group)
        base[name] = st["scales"].float().reshape(rows, cols // scheme.group, 1)
        logs[name] = torch.zeros_like(base[name], requires_grad=True)
    with torch.no_grad():
        for name, p in params.items():  # every other matrix as the file will store it
            if p.ndim >= 2 and name not in codes:
                scheme, m = parse_scheme(schemes.get(name, default)), p.reshape(p.shape[0], -1)
                st = stored.get(name) or quantize_matrix(m, scheme, (importance or {}).get(name),
                                                         search=bool(importance))
                p.copy_(dequantize_matrix(st, scheme, *m.shape).reshape(p.shape))
    norms = {n: p for n, p in params.items() if p.ndim == 1}
    for p in student.parameters():
        p.requires_grad_(False)
    for p in norms.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam([*logs.values(), *norms.values()], lr=lr)
    losses = []
    for step in tqdm(range(steps), desc="distil scales", disable=not progress, leave=False):
        i = step % len(batches)
        weights = {n: (codes[n] * base[n] * logs[n].exp()).reshape(params[n].shape) for n in codes}
        logits = functional_call(student, {**weights, **norms}, args=(), kwargs={"input_ids": batches[i]}).logits
        loss = F.kl_div(F.log_softmax(logits.float(), -1), teacher[i], log_target=True,
                        reduction="sum") / batches[i].numel()  # mean KL per token
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    out = dict(stored)
    with torch.no_grad():
        for n in codes:
            out[n] = {**stored[n], "scales": (base[n] * logs[n].exp()).reshape(-1).half()}
        for p in norms.values():
            p.requires_grad_(False)
    summary = {"steps": steps, "seconds": time.perf_counter() - t0, "first_kl": losses[0], "last_kl": losses[-1],
               "tuned_scales": sum(v.numel() for v in logs.values()), "tuned_norm_weights": sum(
                   p.numel() for p in norms.values())}
    return out, student, summary
