"""Weight-quantisation schemes and their packed storage (a re-creation: ANDESVL.md §4 gives 1.8 bpw, not the recipe).

A scheme name says how one weight matrix is stored:

| name           | codes                                   | side data (fp16)                 | bits per weight       |
|----------------|-----------------------------------------|----------------------------------|-----------------------|
| `fp16`         | the weights themselves                  | -                                | 16                    |
| `int{b}-g{G}`  | b-bit uniform codes, `pack_codes`        | one scale per group of G weights | b + 16/G              |
| `ternary-g{G}` | {-1, 0, +1}, five per byte (`pack_trits`)| one scale per group              | 1.6 + 16/G            |
| `vq{d}-k{K}`   | one log2(K)-bit index per d weights      | a K x d codebook + a scale per row | log2(K)/d + small   |

Groups run over the row-major flattened matrix. `importance` (per input column, e.g. the mean squared activation
that multiplies it) turns every fit into an activation-weighted one: scales, thresholds and codebooks then minimise
the error the layer's *output* sees rather than the raw weight error ("calibrated"; without it: plain rounding).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .packing import pack_codes, pack_trits, packed_nbytes, trits_nbytes, unpack_codes, unpack_trits

CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)  # scale search for calibrated rounding
TERNARY_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # threshold / mean|w| (0.7: the TWN rule)
_PATTERN = re.compile(r"^(?:(fp16)|int(\d+)-g(\d+)|ternary-g(\d+)|vq(\d+)-k(\d+))$")


@dataclass(frozen=True)
class Scheme:
    """One storage scheme; build it with `parse_scheme(name)`."""

    name: str
    kind: str  # "fp16" | "int" | "ternary" | "vq"
    bits: int = 16  # code width (int), index width (vq)
    group: int = 0  # weights per scale (int, ternary)
    dim: int = 0  # weights per index (vq)

    def nominal_bpw(self, rows: int, cols: int) -> float:
        """Bits per weight this scheme writes for a rows x cols matrix (payload only, no file header)."""
        return 8 * sum(math.prod(s) * b for s, b in self.stored_shapes(rows, cols).values()) / (rows * cols)

    def stored_shapes(self, rows: int, cols: int) -> dict[str, tuple[tuple[int, ...], int]]:
        """Name -> (shape, bytes per element) of each tensor this scheme stores for a rows x cols matrix."""
        n = rows * cols
        if self.kind == "fp16":
            return {"weight": ((rows, cols), 2)}
        if self.kind == "int":
            return {"codes": ((packed_nbytes(n, self.bits),), 1), "scales": ((-(-n // self.group),), 2)}
        if self.kind == "ternary":
            return {"codes": ((trits_nbytes(n),), 1), "scales": ((-(-n // self.group),), 2)}
        n_vec = -(-n // self.dim)
        return {"codes": ((packed_nbytes(n_vec, self.bits),), 1), "codebook": ((2**self.bits, self.dim), 2),
                "scales": ((rows,), 2)}


def parse_scheme(name: str) -> Scheme:
    """`fp16`, `int{1-8}-g{G}`, `ternary-g{G}` or `vq{d}-k{K}` (K a power of two, 2..65536) -> Scheme."""
    m = _PATTERN.match(name.strip())
    if not m:
        raise ValueError(f"unknown scheme {name!r}: use fp16, int<bits>-g<group>, ternary-g<group> or vq<dim>-k<K>")
    fp, ib, ig, tg, vd, vk = m.groups()
    if fp:
        return Scheme(name, "fp16")
    if ib:
        if not (1 <= int(ib) <= 8 and int(ig) >= 1):
            raise ValueError(f"{name!r}: int bits must be 1..8 and the group at least 1")
        return Scheme(name, "int", bits=int(ib), group=int(ig))
    if tg:
        if int(tg) < 1:
            raise ValueError(f"{name!r}: the group must be at least 1")
        return Scheme(name, "ternary", bits=2, group=int(tg))
    k, d = int(vk), int(vd)
    if k < 2 or k & (k - 1) or k > 2**16 or d < 1:
        raise ValueError(f"{name!r}: K must be a power of two in 2..65536 and the dimension at least 1")
    return Scheme(name, "vq", bits=int(math.log2(k)), dim=d)


# ----------------------------------------------------------------------------- helpers
def _column_weights(importance: torch.Tensor | None, rows: int, cols: int) -> torch.Tensor:
    """Per-weight importance as a broadcastable (1, cols) row (all ones when not calibrated)."""
    if importance is None:
        return torch.ones(1, cols)
    if importance.numel() != cols:
        raise ValueError(f"importance has {importance.numel()} entries for a matrix with {cols} columns")
    h = importance.float().reshape(1, cols).clamp_min(1e-8)
    return h / h.mean()


def _grouped(x: torch.Tensor, group: int, fill: float = 0.0) -> torch.Tensor:
    pad = (-x.numel()) % group
    flat = x.reshape(-1)
    return (torch.cat([flat, flat.new_full((pad,), fill)]) if pad else flat).reshape(-1, group)


def _groups(w: torch.Tensor, h: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, importance) as (..., n_groups, group) views; groups run over the row-major flattened matrix."""
    rows, cols = w.shape
    if cols % group == 0:  # groups stay inside rows: broadcast the (1, cols) importance without copying it
        return w.reshape(rows, cols // group, group), h.reshape(1, cols // group, group)
    return _grouped(w, group)[None], _grouped(h.expand(rows, cols), group, 1.0)[None]


# ----------------------------------------------------------------------------- uniform
def _int_fit(w: torch.Tensor, h: torch.Tensor, bits: int, group: int, search: bool):
    g, hg = _groups(w, h, group)
    half = (2**bits - 1) / 2
    amax = g.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    best_err, best_s = None, None
    for ratio in CLIP_RATIOS if search else (1.0,):
        s = (amax * ratio / half).half().float().clamp_min(1e-12)  # the scale as it will be stored
        if not search:
            best_s = s
            break
        q = ((g / s + half).round().clamp(0, 2 * half) - half) * s
        err = (hg * (q - g) ** 2).sum(-1, keepdim=True)
        if best_err is None:
            best_err, best_s = err, s
        else:
            better = err < best_err
            best_err, best_s = torch.where(better, err, best_err), torch.where(better, s, best_s)
    codes = (g / best_s + half).round_().clamp_(0, 2 * half).to(torch.uint8)
    return codes.reshape(-1)[: w.numel()], best_s.reshape(-1)


# ----------------------------------------------------------------------------- ternary
def _ternary_fit(w: torch.Tensor, h: torch.Tensor, group: int, search: bool):
    g, hg = _groups(w, h, group)
    mean_abs = g.abs().mean(-1, keepdim=True)
    best_err = best_codes = best_s = None
    for ratio in TERNARY_RATIOS if search else (0.7,):
        t = g.sign() * (g.abs() > ratio * mean_abs)
        denom = (hg * t.abs()).sum(-1, keepdim=True).clamp_min(1e-12)
        s = ((hg * g.abs() * t.abs()).sum(-1, keepdim=True) / denom).half().float()  # weighted least squares
        err = (hg * (t * s - g) ** 2).sum(-1, keepdim=True)
        if best_err is None:
            best_err, best_codes, best_s = err, t, s
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_codes, best_s = torch.where(better, t, best_codes), torch.where(better, s, best_s)
    return (best_codes + 1).to(torch.uint8).reshape(-1)[: w.numel()], best_s.reshape(-1)


# ----------------------------------------------------------------------------- vector quantisation
def _assign(x: torch.Tensor, hx: torch.Tensor, centroids: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Index of the nearest centroid under the per-coordinate weights hx (chunked to bound memory)."""
    out = torch.empty(x.shape[0], dtype=torch.long)
    rhs = torch.cat([centroids.T**2, -2 * centroids.T])  # one matmul: [h, h*x] @ [c^2; -2c]
    for i in range(0, x.shape[0], chunk):
        xs, hs = x[i:i + chunk], hx[i:i + chunk]
        out[i:i + chunk] = (torch.cat([hs, hs * xs], 1) @ rhs).argmin(1)  # + sum(h x^2), constant per row
    return out


def _vq_fit(w: torch.Tensor, h: torch.Tensor, dim: int, bits: int, iters: int, fit_vectors: int, seed: int):
    rows = w.shape[0]
    scales = w.pow(2).mean(1).sqrt().clamp_min(1e-12).half().float()  # per-row RMS, as stored
    x, hx = _grouped(w / scales[:, None], dim), _grouped(h, dim)
    k = 2**bits
    gen = torch.Generator().manual_seed(seed)
    sub = torch.randperm(x.shape[0], generator=gen)[: max(fit_vectors, k)]
    xs, hs = x[sub], hx[sub]
    centroids = xs[torch.randperm(xs.shape[0], generator=gen)[:k]].clone()
    if centroids.shape[0] < k:  # fewer vectors than centroids: repeat (the spare entries stay unused)
        centroids = centroids.repeat(-(-k // centroids.shape[0]), 1)[:k]
    for _ in range(iters):  # weighted k-means (Lloyd) on a sample of the vectors
        idx = _assign(xs, hs, centroids)
        num = torch.zeros(k, dim).index_add_(0, idx, hs * xs)
        den = torch.zeros(k, dim).index_add_(0, idx, hs)
        centroids = torch.where(den > 0, num / den.clamp_min(1e-12), centroids)
    centroids = centroids.half().float()
    return _assign(x, hx, centroids), centroids, scales


# ----------------------------------------------------------------------------- public API
def quantize_matrix(w: torch.Tensor, scheme: Scheme, importance: torch.Tensor | None = None, search: bool = False,
                    vq_iters: int = 8, vq_fit_vectors: int = 32768, seed: int = 0) -> dict[str, torch.Tensor]:
    """Quantise a 2-D weight and return the packed tensors to store (uint8 codes, fp16 scales/codebook).

    `importance` (one value per column) and `search=True` give the calibrated fit; neither gives plain rounding.
    """
    if w.ndim != 2:
        raise ValueError(f"quantize_matrix expects a 2-D weight, got shape {tuple(w.shape)}")
    w = w.detach().float().cpu()
    rows, cols = w.shape
    if scheme.kind == "fp16":
        return {"weight": w.half()}
    h = _column_weights(importance, rows, cols)
    if scheme.kind == "int":
        codes, s = _int_fit(w, h, scheme.bits, scheme.group, search)
        return {"codes": pack_codes(codes, scheme.bits), "scales": s.half()}
    if scheme.kind == "ternary":
        codes, s = _ternary_fit(w, h, scheme.group, search)
        return {"codes": pack_trits(codes), "scales": s.half()}
    idx, book, s = _vq_fit(w, h.expand(rows, cols).reshape(-1), scheme.dim, scheme.bits, vq_iters, vq_fit_vectors, seed)
    return {"codes": pack_codes(idx, scheme.bits), "codebook": book.half(), "scales": s.half()}


def dequantize_matrix(stored: dict[str, torch.Tensor], scheme: Scheme, rows: int, cols: int) -> torch.Tensor:
    """Unpack stored tensors back to a fp32 rows x cols weight; a size mismatch raises ValueError."""
    expected = scheme.stored_shapes(rows, cols)
    for key, (shape, nbytes) in expected.items():
        t = stored.get(key)
        if t is None or tuple(t.shape) != shape or t.element_size() != nbytes:
            got = None if t is None else (tuple(t.shape), t.dtype)
            raise ValueError(f"{scheme.name} {rows}x{cols}: '{key}' should be {shape} x {nbytes} B, got {got}")
    n = rows * cols
    if scheme.kind == "fp16":
        return stored["weight"].float()
    if scheme.kind == "int":
        half = (2**scheme.bits - 1) / 2
        codes = _grouped(unpack_codes(stored["codes"], scheme.bits, n).float().sub_(half), scheme.group)
        return codes.mul_(stored["scales"].float()[:, None]).reshape(-1)[:n].reshape(rows, cols)
    if scheme.kind == "ternary":
        codes = _grouped(unpack_trits(stored["codes"], n).float().sub_(1), scheme.group)
        return codes.mul_(stored["scales"].float()[:, None]).reshape(-1)[:n].reshape(rows, cols)
    n_vec = -(-n // scheme.dim)
    idx = unpack_codes(stored["codes"], scheme.bits, n_vec)
    flat = stored["codebook"].float()[idx].reshape(-1)[:n].reshape(rows, cols)
    return flat * stored["scales"].float()[:, None]
