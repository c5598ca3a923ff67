"""A lean batch-1 greedy decoder for Llama/Qwen3-style LLMs: the decode roofline's fair contender (ANDESVL.md §4).

`generate()` and even a plain loop over the transformers forward spend much of a SmolLM2-135M decode step outside
the weight reads: `nn.Linear` runs `x @ W.T` as a GEMM whose strided weight reads reach about half this CPU's
bandwidth, and each layer adds dozens of small Python-dispatched ops (cache concatenation, rotary tables, masks).
This decoder reads the model's own weights once into a decode-friendly layout and runs the same math:

- weights transposed to (in, out) and fused (q|k|v, gate|up), so each GEMV streams one contiguous matrix;
- the tied LM head stored transposed as well (its 49152 x 576 read is a fifth of the model's bytes);
- RMSNorm weights folded into the matrix that follows each norm, residual adds fused into `addmm`;
- a static KV cache (preallocated, written in place: no concatenation), rotary tables computed once and applied
  to queries and keys in one pass; attention of the new token as two batched GEMVs per KV group (GQA, no mask);
- `kernel="split"`: MKL runs a one-row GEMV on one thread, so a second core adds nothing to it. Each matrix is
  stored as `splits` blocks of its input rows, (splits, in / splits, out), and the GEMV becomes one batched GEMM
  (each block times its slice of x, on its own thread) plus a sum of the partial products: two cores stream about
  1.5x the bytes per second of one (`benchmarks/bench_decode.py` measures the kernels side by side).

Same math as transformers' eager/SDPA forward, in a different order of floating-point sums: greedy tokens match
`generate()` (tested) unless two logits tie to within rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


KERNELS = ("matmul", "split")


@dataclass
class _Layer:  # matrices as (in, out) for kernel "matmul", (splits, in / splits, out) for "split"
    qkv: torch.Tensor  # (hidden, (heads + 2 kv_heads) * head_dim), the input norm's weight folded into its rows
    qkv_bias: torch.Tensor | None
    q_norm: torch.Tensor | None  # Qwen3: RMSNorm over the head dimension before rotary
    k_norm: torch.Tensor | None
    o: torch.Tensor  # (heads * head_dim, hidden)
    gate_up: torch.Tensor  # (hidden, 2 * intermediate), the post-attention norm's weight folded in
    down: torch.Tensor  # (intermediate, hidden)


def _language_model(model: nn.Module) -> nn.Module:
    """The decoder stack (`.layers`, `.norm`, `.rotary_emb`) of a causal LM or of a VLM's language model."""
    inner = getattr(model, "model", model)
    inner = getattr(inner, "language_model", inner)
    for attr in ("layers", "norm", "rotary_emb", "embed_tokens"):
        if not hasattr(inner, attr):
            raise ValueError(f"LeanDecoder supports Llama/Qwen-style decoders; {type(model).__name__} has no {attr}")
    return inner


def _matrix(w: torch.Tensor, dtype: torch.dtype, splits: int) -> torch.Tensor:
    """An (out, in) weight as (in, out), contiguous; with splits > 1 as (splits, in / splits, out) row blocks."""
    wt = w.detach().to(dtype).t()
    if splits == 1:
        return wt.contiguous()
    if wt.shape[0] % splits:
        raise ValueError(f"a matrix with {wt.shape[0]} inputs does not split into {splits} equal row blocks")
    return wt.reshape(splits, -1, wt.shape[1]).contiguous()


class LeanDecoder:
    """Greedy batch-1 decoding over a snapshot of `model`'s weights (transposed, fused) and a static KV cache.

    `prefill(ids)` returns the first greedy token, `step(token)` the next one; `generate(ids, n)` does both.
    The snapshot is taken at construction: rebuild the decoder after changing the model's weights. `kernel` picks
    the GEMV: "matmul" (contiguous `x @ W`) or "split" (`splits` row blocks as one batched GEMM, one per thread).
    """

    def __init__(self, model: nn.Module, max_len: int = 2048, dtype: torch.dtype | None = None,
                 kernel: str = "matmul", splits: int = 2) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if not isinstance(splits, int) or splits < 1:
            raise ValueError(f"splits must be a positive int, got {splits!r}")
        lm = _language_model(model)
        cfg = lm.config
        if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", False):
            raise ValueError("LeanDecoder does not implement sliding-window attention")
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise ValueError(f"LeanDecoder implements SiLU MLPs, not {cfg.hidden_act!r}")
        dtype = dtype or next(model.parameters()).dtype
        self.dtype, self.max_len = dtype, max_len
        self.splits = splits if kernel == "split" else 1
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.embed = lm.embed_tokens.weight.detach().to(dtype)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None or getattr(head, "bias", None) is not None:
            raise ValueError("LeanDecoder needs a bias-free linear LM head")
        root = cfg.hidden_size**0.5  # `_norm` leaves RMSNorm's sqrt(dim) factor to the weights
        norm = lm.norm.weight.detach().float() * root
        self.lm_head = _matrix(head.weight.float() * norm, dtype, self.splits)  # final norm folded in: one GEMV
        self.scale = self.head_dim**-0.5
        self.layers: list[_Layer] = []
        for layer in lm.layers:
            a, m = layer.self_attn, layer.mlp
            biases = [getattr(a, p).bias for p in ("q_proj", "k_proj", "v_proj")]
            qn, kn = getattr(a, "q_norm", None), getattr(a, "k_norm", None)
            ln1, ln2 = (n.weight.detach().float() * root
                        for n in (layer.input_layernorm, layer.post_attention_layernorm))
            if getattr(a.o_proj, "bias", None) is not None or any(
                    getattr(getattr(m, p), "bias", None) is not None for p in ("gate_proj", "up_proj", "down_proj")):
                raise ValueError("LeanDecoder supports biases on q/k/v only")
            self.layers.append(_Layer(
                qkv=_matrix(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).float() * ln1, dtype, self.splits),
                qkv_bias=None if biases[0] is None else torch.cat(biases).detach().to(dtype),
                q_norm=None if qn is None else (qn.weight.detach().float() * self.head_dim**0.5).to(dtype),
                k_norm=None if kn is None else (kn.weight.detach().float() * self.head_dim**0.5).to(dtype),
                o=_matrix(a.o_proj.weight, dtype, self.splits),
                gate_up=_matrix(torch.cat([m.gate_proj.weight, m.up_proj.weight]).float() * ln2, dtype, self.splits),
                down=_matrix(m.down_proj.weight, dtype, self.splits)))
        positions = torch.arange(max_len)[None]
        cos, sin = lm.rotary_emb(self.embed[:1][None], positions)
        half = self.head_dim // 2
        self.cos = cos[0].to(dtype)
        self.sin = torch.cat([-sin[0, :, :half], sin[0, :, half:]], -1).to(dtype)  # rotate_half = roll * sign
        shape = (len(self.layers), self.kv_heads, max_len, self.head_dim)
        self.k_cache, self.v_cache = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
        self.pos = 0

    def weight_bytes(self) -> int:
        """Bytes one decode step streams: every matrix and norm, the LM head once, one embedding row."""
        parts = [t for L in self.layers for t in (L.qkv, L.qkv_bias, L.q_norm, L.k_norm, L.o, L.gate_up, L.down)
                 if t is not None]
        return sum(t.nbytes for t in [*parts, self.lm_head]) + self.embed[0].nbytes

    def _norm(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """RMSNorm / sqrt(dim) in three ops: x / sqrt(sum x^2 + dim * eps); sqrt(dim) and the norm weights are
        folded into the matrices that follow (or into `weight`, for Qwen3's per-head norms)."""
        x = x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True).add_(x.shape[-1] * self.eps))
        return x if weight is None else x * weight

    def _mm(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (T, in) @ W (+ bias) in this decoder's kernel."""
        if self.splits > 1:  # x's column blocks (splits, T, in / splits) times W's row blocks, partial sums added
            y = torch.bmm(x.view(x.shape[0], self.splits, -1).transpose(0, 1), w).sum(0)
            return y if bias is None else y.add_(bias)
        return x @ w if bias is None else torch.addmm(bias, x, w)

    def _mm_add(self, residual: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """residual + x @ W (the add fused into `addmm` on the unsplit kernel)."""
        if self.splits > 1:
            return self._mm(x, w).add_(residual)
        return torch.addmm(residual, x, w)

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits of the last position after feeding ids (1, T) at the current position; fills the cache."""
        T = ids.shape[1]
        start, end = self.pos, self.pos + T
        if end > self.max_len:
            raise ValueError(f"sequence of {end} tokens exceeds the decoder's max_len {self.max_len}")
        hd, kv, nh = self.head_dim, self.kv_heads, self.heads
        cos, sin = self.cos[start:end, None], self.sin[start:end, None]  # (T, 1, head_dim)
        h = self.embed[ids[0]]
        for i, L in enumerate(self.layers):
            x = self._norm(h)
            qkv = self._mm(x, L.qkv, L.qkv_bias).view(T, nh + 2 * kv, hd)
            qk, v = qkv[:, : nh + kv], qkv[:, nh + kv:]
            if L.q_norm is not None:
                qk = torch.cat([self._norm(qk[:, :nh], L.q_norm), self._norm(qk[:, nh:], L.k_norm)], 1)
            qk = qk * cos + qk.roll(hd // 2, -1) * sin  # rotary on queries and keys at once
            self.k_cache[i, :, start:end] = qk[:, nh:].transpose(0, 1)
            self.v_cache[i, :, start:end] = v.transpose(0, 1)
            keys, values = self.k_cache[i, :, :end], self.v_cache[i, :, :end]  # (kv, end, head_dim)
            if T == 1:  # a KV group's query heads act as its query rows: GQA as two batched GEMVs, no mask
                scores = torch.bmm(qk[0, :nh].view(kv, nh // kv, hd), keys.transpose(1, 2)).mul_(self.scale)
                att = torch.bmm(torch.softmax(scores, -1), values).view(1, nh * hd)
            else:
                rep = nh // kv
                mask = torch.ones(T, end, dtype=torch.bool).tril(start)
                att = F.scaled_dot_product_attention(qk[:, :nh].transpose(0, 1), keys.repeat_interleave(rep, 0),
                                                     values.repeat_interleave(rep, 0), attn_mask=mask)
                att = att.transpose(0, 1).reshape(T, nh * hd)
            h = self._mm_add(h, att, L.o)
            g, u = self._mm(self._norm(h), L.gate_up).chunk(2, -1)
            h = self._mm_add(h, F.silu(g) * u, L.down)
        self.pos = end
        return self._mm(self._norm(h[-1:]), self.lm_head)

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Reset the cache, feed the prompt (1, T) and return the greedy next token as a (1, 1) tensor."""
        if input_ids.ndim != 2 or input_ids.shape[0] != 1:
            raise ValueError(f"LeanDecoder decodes batch 1: input_ids must be (1, T), got {tuple(input_ids.shape)}")
        self.pos = 0
        return self._forward(input_ids).argmax(-1, keepdim=True)

    @torch.inference_mode()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one token (1, 1) and return the next greedy token (1, 1)."""
        return self._forward(token.reshape(1, 1)).argmax(-1, keepdim=True)

    def generate(self, input_ids: torch.Tensor, new_tokens: int) -> list[int]:
        """Greedy continuation of `input_ids`: `new_tokens` ids (no early stop at EOS, like min_new_tokens)."""
        token = self.prefill(input_ids)
        ids = [int(token)]
        for _ in range(new_tokens - 1):
            token = self.step(token)
            ids.append(int(token))
        return ids
