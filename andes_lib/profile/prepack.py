"""oneDNN-prepacked linear layers: scoring a few tokens at once for the price of one (ANDESVL.md §4).

Speculative decoding pays off only if the target verifies k draft tokens for about the cost of one decoding step.
On this CPU, `nn.Linear` runs through MKL: one row is a fast GEMV, but 2-16 rows take a GEMM path that repacks the
weight on every call, so verifying 8 tokens of SmolLM2-135M costs about 1.7x a step (and its 49152-row LM head
3x). Packing each weight once into oneDNN's blocked layout (what `torch.compile`'s CPU freezing pass does) removes
the repacking. In `bfloat16` the packed weight runs on the CPU's AMX tiles (Sapphire Rapids and later): a block of
16 rows costs about what one row costs, one row is faster than MKL's float32 GEMV (the weights are half the bytes),
and a row's result does not depend on the rows that go through with it (measured up to 32 rows per call; larger
inputs go through in blocks of 32). Activations stay float32: only the inputs of each linear layer are rounded to
bfloat16 (element by element) and the products summed in float32, as a phone NPU does with 16-bit weights.
Pick the dtype with `pack_dtype()`; in float32 the packed path is slower than MKL for one row (measured).

`prepack_linears(model)` swaps every `nn.Linear` of a model, in place, for a `PackedLinear` that keeps the original
`weight` (tied embeddings and anything reading `.weight` still work) plus the packed copy used in `forward`; it is
for inference only (no gradients flow through the packed copy).
"""

from __future__ import annotations

import torch
from torch import nn

PACK_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
INVARIANT_ROWS = 32  # oneDNN's bf16 kernel gives a row the same bits for any M <= 32 rows (measured), not above


def prepack_available() -> bool:
    """Whether this torch build has oneDNN (mkldnn) with the linear prepack ops."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def amx_available() -> bool:
    """Whether this CPU has AMX tiles for bfloat16 (oneDNN then multiplies bf16 blocks in hardware)."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def pack_dtype(name: str = "auto") -> torch.dtype:
    """The packed-weight dtype: `"bf16"`, `"fp32"`, or `"auto"` (bf16 where the CPU has AMX, else fp32)."""
    if name == "auto":
        return torch.bfloat16 if amx_available() else torch.float32
    if name not in PACK_DTYPES:
        raise ValueError(f"unknown pack dtype {name!r}; expected 'auto' or one of {sorted(PACK_DTYPES)}")
    return PACK_DTYPES[name]


class PackedLinear(nn.Module):
    """An inference-only `nn.Linear` (float32 in and out) whose weight is prepacked for oneDNN in `dtype`."""

    def __init__(self, linear: nn.Linear, rows: int = 8, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if linear.weight.dtype != torch.float32 or linear.weight.device.type != "cpu":
            raise ValueError(f"prepacking needs float32 CPU weights, got {linear.weight.dtype} on "
                             f"{linear.weight.device}")
        if dtype not in PACK_DTYPES.values():
            raise ValueError(f"packed dtype must be one of {list(PACK_DTYPES.values())}, got {dtype}")
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, dtype
        self.weight = linear.weight  # the same Parameter: ties and readers of `.weight` keep working
        self.bias = linear.bias
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(dtype), rows)
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach().to(self.dtype)
        flat = x.reshape(-1, self.in_features).to(self.dtype)
        if self.dtype == torch.bfloat16 and len(flat) > INVARIANT_ROWS:  # keep each row's result independent of M
            y = torch.cat([torch.ops.mkldnn._linear_pointwise(part, self.packed, bias, "none", [], "")
                           for part in flat.split(INVARIANT_ROWS)])
        else:
            y = torch.ops.mkldnn._linear_pointwise(flat, self.packed, bias, "none", [], "")
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"dtype={self.dtype}")


def prepack_linears(model: nn.Module, rows: int = 8, dtype: torch.dtype = torch.float32) -> int:
    """Replace every float32 CPU `nn.Linear` in `model` by a `PackedLinear`, in place; returns how many.

    `rows` is the batch the packing is tuned for (a verify pass scores a handful of tokens); `dtype` the packed
    weights' (`pack_dtype()` picks bf16 where the CPU has AMX). Raises if this torch build lacks oneDNN. Call it on
    a model in eval mode, after loading weights and before decoding.
    """
    if not prepack_available():
        raise RuntimeError("this torch build has no oneDNN linear prepack (torch.ops.mkldnn); keep nn.Linear")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32 and child.weight.device.type == "cpu":
                setattr(module, name, PackedLinear(child, rows, dtype))
                count += 1
    return count
