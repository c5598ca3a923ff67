"""Recovery without training: GPTQ-style error-compensating rounding (ANDESVL.md §4; our re-creation).

Plain rounding quantises every weight on its own. GPTQ (Frantar et al., 2023) quantises a layer's input columns one
at a time and, after each, moves the rounding error onto the columns not yet quantised, weighted by the inverse of
the layer's input Hessian H = E[x x^T] (measured on calibration text): the layer output y = W x, not the weights,
is what it keeps close. The codes and scales it produces are those of the ordinary `int{b}-g{G}` / `ternary-g{G}`
schemes, so the packed file, its bpw and its loader are unchanged; only the choice of codes is better. Each group's
scale is fitted (activation-weighted clipping search, as in the calibrated fit) on the error-updated weights when
GPTQ reaches the group's first column. The paper does not publish its recipe; this is the standard post-training one.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .calibrate import run_with_linear_hooks
from .packing import pack_codes, pack_trits
from .schemes import Scheme, _int_fit, _ternary_fit, parse_scheme


def input_hessians(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameter name -> E[x x^T] of the inputs of every `nn.Linear` (tied weights: the Linear that uses them).

    Linears that read the same input tensor (q/k/v, gate/up) share one Hessian object, computed once.
    """
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    alias: dict[str, str] = {}
    last: list = [None, ""]

    def make_hook(name: str):
        def hook(_module: nn.Module, args: tuple, _out: torch.Tensor) -> None:
            if args[0] is last[0]:
                alias[name] = alias.get(last[1], last[1])
                return
            last[:] = [args[0], name]
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    run_with_linear_hooks(model, batches, make_hook)
    out = {n: s / counts[n] for n, s in sums.items()}
    return out | {n: out[a] for n, a in alias.items()}


def _inverse_hessian_factor(h: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of H^-1 after damping, mask of dead columns). Dead columns: H_jj = 0."""
    h = h.float().clone()
    dead = torch.diag(h) <= 0
    h[dead, dead] = 1.0
    eye = torch.eye(h.shape[0])
    for _ in range(6):  # add damping until the factorisation succeeds (nearly singular calibration statistics)
        h += damp * torch.diag(h).mean() * eye
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            break
    else:
        raise ValueError("the input Hessian is not positive definite even after damping")
    return torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True), dead


def _fit_scale(w: torch.Tensor, h: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """One group's scale per row (activation-weighted clipping/threshold search, as stored in fp16)."""
    g = w.shape[1]
    fit = _int_fit(w, h, scheme.bits, g, True) if scheme.kind == "int" else _ternary_fit(w, h, g, True)
    return fit[1].reshape(-1, 1)


@torch.no_grad()
def gptq_batch(ws: torch.Tensor, hessians: list[torch.Tensor], scheme: Scheme | str, block: int = 32,
               damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ of B same-shape matrices at once (B, rows, cols): (uint8 codes (B, rows, cols), scales (B, rows, groups)).

    The column loop runs once for the whole batch (the 30 layers of SmolLM2 share their shapes), so its Python
    cost is paid per column, not per column and matrix. Codes are int codes in [0, 2^b) or ternary codes {0,1,2}.
    """
    scheme = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    B, rows, cols = ws.shape
    if scheme.kind not in ("int", "ternary"):
        raise ValueError(f"GPTQ handles int and ternary schemes, not {scheme.name}")
    if cols % scheme.group:
        raise ValueError(f"{scheme.name}: the group {scheme.group} must divide the {cols} columns for GPTQ")
    if len(hessians) != B or any(h.shape != (cols, cols) for h in hessians):
        raise ValueError(f"need {B} Hessians of shape ({cols}, {cols})")
    g = scheme.group
    if block % g and g % block:
        block = g  # groups must start at block starts: a group's scale is then fitted on fully updated weights
    offset = (2**scheme.bits - 1) / 2 if scheme.kind == "int" else 1.0  # code of the value 0 (int: midrise)
    top = 2 * offset
    factors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for h in hessians:  # shared Hessians (q, k and v see the same input) are factorised once
        if id(h) not in factors:
            factors[id(h)] = _inverse_hessian_factor(h, damp)
    u = torch.stack([factors[id(h)][0] for h in hessians])
    dead = torch.stack([factors[id(h)][1] for h in hessians])
    diag = torch.stack([torch.diag(h).float().clamp_min(1e-8) for h in hessians])
    W = ws.detach().float().clone()
    W.masked_fill_(dead[:, None, :], 0.0)
    codes = torch.empty(B, rows, cols, dtype=torch.uint8)
    scales = torch.empty(B, rows, cols // g)
    s = torch.empty(B, rows, 1)
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        Wb, err = W[:, :, b0:b1].clone(), torch.empty(B, rows, b1 - b0)
        for j in range(b1 - b0):
            c = b0 + j
            if c % g == 0:  # a new group: fit its scale on the weights as GPTQ has updated them so far
                cur = Wb[:, :, j:j + g] if j + g <= b1 - b0 else W[:, :, c:c + g]  # (j == 0 if it spans blocks)
                h = diag[:, c:c + g] / diag[:, c:c + g].mean(1, keepdim=True)
                s = torch.stack([_fit_scale(cur[i], h[i:i + 1], scheme) for i in range(B)])
                scales[:, :, c // g] = s[:, :, 0]
            col = Wb[:, :, j:j + 1]
            code = (col / s).add_(offset).round_().clamp_(0, top)
            if scheme.kind == "ternary":
                code = torch.where(s > 0, code, torch.ones_like(code))  # an all-zero group: scale 0
            codes[:, :, c] = code[:, :, 0].to(torch.uint8)
            e = (col - (code - offset) * s) / u[:, c, c].reshape(B, 1, 1)
            Wb[:, :, j + 1:].baddbmm_(e, u[:, c:c + 1, c + 1:b1], alpha=-1)
            err[:, :, j] = e[:, :, 0]
        W[:, :, b1:].baddbmm_(err, u[:, b0:b1, b1:], alpha=-1)  # the block's errors, to all later columns at once
    return codes, scales


def _stored(codes: torch.Tensor, scales: torch.Tensor, scheme: Scheme) -> dict[str, torch.Tensor]:
    """One matrix's codes and scales as `save_packed` stores them (row-major groups, packed codes, fp16 scales)."""
    flat = codes.reshape(-1)
    return {"codes": pack_codes(flat, scheme.bits) if scheme.kind == "int" else pack_trits(flat),
            "scales": scales.reshape(-1).half()}


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, scheme: Scheme | str, block: int = 32,
                  damp: float = 0.01) -> dict[str, torch.Tensor]:
    """GPTQ codes and scales of one 2-D weight for an `int{b}-g{G}` or `ternary-g{G}` scheme (G dividing the
    column count), as the tensors `save_packed` stores (packed uint8 codes, fp16 scales)."""
    scheme = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    if w.ndim != 2:
        raise ValueError(f"gptq_quantize expects a 2-D weight, got shape {tuple(w.shape)}")
    codes, scales = gptq_batch(w[None], [hessian], scheme, block, damp)
    return _stored(codes[0], scales[0], scheme)


def gptq_model(model: nn.Module, schemes: dict[str, str], hessians: dict[str, torch.Tensor], default: str,
               progress: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """GPTQ every matrix that has a Hessian and an int/ternary scheme: name -> stored tensors for `save_packed`.

    Matrices of one shape and scheme (the same projection in every layer) run as one batch. Matrices without a
    Hessian or with another scheme (fp16, codebooks) are left to `save_packed`'s own fit.
    """
    batches: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
    for name, p in model.named_parameters():
        scheme = parse_scheme(schemes.get(name, default))
        if p.ndim == 2 and name in hessians and scheme.kind in ("int", "ternary") and p.shape[1] % scheme.group == 0:
            batches.setdefault((tuple(p.shape), scheme.name), []).append((name, p))
    out: dict[str, dict[str, torch.Tensor]] = {}
    for (_shape, scheme_name), items in tqdm(batches.items(), desc="GPTQ", disable=not progress, leave=False):
        scheme = parse_scheme(scheme_name)
        codes, scales = gptq_batch(torch.stack([p.detach() for _, p in items]), [hessians[n] for n, _ in items],
                                   scheme)
        for i, (name, _) in enumerate(items):
            out[name] = _stored(codes[i], scales[i], scheme)
    return out
