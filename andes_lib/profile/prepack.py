"""oneDNN-prepacked linear layers: scoring a few tokens at once for the price of one (ANDESVL.md §4).

Speculative decoding pays off only if the target verifies k draft tokens for about the cost of one decoding step.
On this CPU, `nn.Linear` runs through MKL: one row is a fast GEMV, but 2-16 rows take a GEMM path that repacks the
weight on every call, so verifying 5 tokens of SmolLM2-135M costs about 1.6x a step (and its 49152-row LM head
2.3x). Packing each weight once into oneDNN's blocked layout (what `torch.compile`'s CPU freezing pass does) brings
5 rows to about 1.1x one row and speeds up the single row too. Same math, a different order of floating-point sums.

`prepack_linears(model)` swaps every `nn.Linear` of a model, in place, for a `PackedLinear` that keeps the original
`weight` (tied embeddings and anything reading `.weight` still work) plus the packed copy used in `forward`; it is
for inference only (no gradients flow through the packed copy).
"""

from __future__ import annotations

import torch
from torch import nn


def prepack_available() -> bool:
    """Whether this torch build has oneDNN (mkldnn) with the linear prepack ops."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """An inference-only `nn.Linear` whose weight is prepacked for oneDNN (float32, CPU)."""

    def __init__(self, linear: nn.Linear, rows: int = 8) -> None:
        super().__init__()
        if linear.weight.dtype != torch.float32 or linear.weight.device.type != "cpu":
            raise ValueError(f"prepacking needs float32 CPU weights, got {linear.weight.dtype} on "
                             f"{linear.weight.device}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter: ties and readers of `.weight` keep working
        self.bias = linear.bias
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows)
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach()
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features), self.packed, bias, "none", [], "")
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def prepack_linears(model: nn.Module, rows: int = 8) -> int:
    """Replace every float32 CPU `nn.Linear` in `model` by a `PackedLinear`, in place; returns how many.

    `rows` is the batch the packing is tuned for (a verify pass scores a handful of tokens). Raises if this torch
    build lacks oneDNN. Call it on a model in eval mode, after loading weights and before decoding.
    """
    if not prepack_available():
        raise RuntimeError("this torch build has no oneDNN linear prepack (torch.ops.mkldnn); keep nn.Linear")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32 and child.weight.device.type == "cpu":
                setattr(module, name, PackedLinear(child, rows))
                count += 1
    return count
