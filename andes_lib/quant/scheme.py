"""Quantization settings by name: `w8a8`, `w4a16`, `w4a8`, `w4g64a8`, `fp` (ANDESVL.md §4, deployment).

`w{b}` is the weight width (int2..int8); `g{G}` the group size along the input columns (absent: 32 for weights
below 8 bits, per output channel for 8 bits; `g0` forces per channel); `a{b}` the per-token activation width
(8 or 16; int16 is what phone NPUs use for "A16"). `fp` quantizes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERN = re.compile(r"^w(\d+)(?:g(\d+))?a(\d+)$")


@dataclass(frozen=True)
class QuantScheme:
    """One quantization setting; build it with `parse_scheme`."""

    name: str
    w_bits: int = 0  # 0: floating point (the `fp` scheme)
    group_size: int = 0  # 0: one encoding per output channel
    a_bits: int = 0  # 0: activations stay floating point
    w_symmetric: bool = True
    a_symmetric: bool = False

    @property
    def is_fp(self) -> bool:
        return self.w_bits == 0

    def describe(self) -> str:
        """Human-readable summary, e.g. 'int4 weights per group of 32, int8 activations per token'."""
        if self.is_fp:
            return "floating point (no quantization)"
        where = f"per group of {self.group_size}" if self.group_size else "per output channel"
        acts = f"int{self.a_bits} activations per token" if self.a_bits else "floating-point activations"
        return f"int{self.w_bits} weights {where}, {acts}"


def parse_scheme(name: str | QuantScheme) -> QuantScheme:
    """`fp`, `w{bits}[g{group}]a{bits}` -> QuantScheme; a clear ValueError on anything else."""
    if isinstance(name, QuantScheme):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a quantization scheme is a name such as 'w4a8', got {type(name).__name__}")
    key = name.strip().lower()
    if key == "fp":
        return QuantScheme("fp")
    m = _PATTERN.match(key)
    if not m:
        raise ValueError(f"unknown quantization scheme {name!r}: use 'fp' or w<bits>[g<group>]a<bits>, e.g. "
                         "'w8a8', 'w4a16', 'w4g64a8'")
    w_bits, a_bits = int(m.group(1)), int(m.group(3))
    if not 2 <= w_bits <= 8:
        raise ValueError(f"{name!r}: weight bits must be 2..8")
    if a_bits not in (8, 16):
        raise ValueError(f"{name!r}: activation bits must be 8 or 16")
    group = int(m.group(2)) if m.group(2) is not None else (0 if w_bits == 8 else 32)
    return QuantScheme(key, w_bits=w_bits, group_size=group, a_bits=a_bits)
