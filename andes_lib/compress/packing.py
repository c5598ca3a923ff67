"""Bit packing of quantisation codes: the bytes a sub-2-bit model really occupies (ANDESVL.md §4, compression).

Two packings, both exact and lossless for the codes they accept:

- `pack_codes(codes, bits)`: any width 1-8, codes in [0, 2**bits), packed little-endian bit by bit
  (2-bit codes: 4 per byte; 3-bit codes: 8 per 3 bytes; 12-bit codebook indices go through `pack_wide`).
- `pack_trits(codes)`: ternary codes {0, 1, 2} five to a byte (3**5 = 243 <= 256), i.e. 1.6 bits per weight,
  the densest byte-aligned ternary packing (the one BitNet-style 1.58-bit formats use).
"""

from __future__ import annotations

import numpy as np
import torch

TRITS_PER_BYTE = 5
CHUNK = 1 << 20  # codes per packing chunk (a multiple of 8, so every chunk starts on a byte)
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def _as_numpy_codes(codes: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    return arr.reshape(-1)


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes `pack_codes` writes for `n` codes of `bits` bits."""
    return (n * bits + 7) // 8


def pack_codes(codes: torch.Tensor | np.ndarray, bits: int) -> torch.Tensor:
    """Pack integer codes in [0, 2**bits) into a flat uint8 tensor of `packed_nbytes(n, bits)` bytes."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    arr = _as_numpy_codes(codes)
    if arr.size and (arr.min() < 0 or arr.max() >= 2**bits):
        raise ValueError(f"codes must lie in [0, {2**bits}) for {bits}-bit packing; got [{arr.min()}, {arr.max()}]")
    if 8 % bits == 0:  # byte-aligned widths: 8 // bits codes per byte
        per = 8 // bits
        a8 = arr.astype(np.uint8)
        pad = (-a8.size) % per
        a8 = np.concatenate([a8, np.zeros(pad, np.uint8)]) if pad else a8
        out = np.zeros(a8.size // per, np.uint8)
        for j in range(per):
            out |= a8[j::per] << np.uint8(j * bits)
        return torch.from_numpy(out)
    arr = arr.astype(np.int64)
    if bits <= 8:  # fast path: 8 codes -> one uint64 -> its low `bits` bytes
        pad = (-arr.size) % 8
        words = (np.concatenate([arr, np.zeros(pad, np.int64)]).reshape(-1, 8).astype(np.uint64)
                 << (np.arange(8, dtype=np.uint64) * np.uint64(bits))).sum(1, dtype=np.uint64)
        raw = words.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :bits].reshape(-1)
        return torch.from_numpy(raw[: packed_nbytes(arr.size, bits)].copy())
    shifts = np.arange(bits, dtype=np.int64)
    out = [np.packbits(((arr[i:i + CHUNK, None] >> shifts) & 1).astype(np.uint8).reshape(-1), bitorder="little")
           for i in range(0, arr.size, CHUNK)]  # (n, bits) bit planes, LSB first, in chunks to bound memory
    return torch.from_numpy(np.concatenate(out) if out else np.zeros(0, np.uint8))


def unpack_codes(packed: torch.Tensor | np.ndarray, bits: int, n: int) -> torch.Tensor:
    """Inverse of `pack_codes`: the first `n` codes as int64."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    raw = _as_numpy_codes(packed).astype(np.uint8)
    if raw.size != packed_nbytes(n, bits):
        raise ValueError(f"{n} codes of {bits} bits need {packed_nbytes(n, bits)} bytes, got {raw.size}")
    if 8 % bits == 0:
        per = 8 // bits
        out = np.empty(raw.size * per, np.uint8)
        for j in range(per):
            out[j::per] = (raw >> np.uint8(j * bits)) & np.uint8(2**bits - 1)
        return torch.from_numpy(out[:n].astype(np.int64))
    if bits <= 8:
        pad = (-raw.size) % bits
        groups = np.concatenate([raw, np.zeros(pad, np.uint8)]).reshape(-1, bits)
        words = np.zeros((groups.shape[0], 8), np.uint8)
        words[:, :bits] = groups
        words = words.reshape(-1).view("<u8")
        codes = (words[:, None] >> (np.arange(8, dtype=np.uint64) * np.uint64(bits))) & np.uint64(2**bits - 1)
        return torch.from_numpy(codes.reshape(-1)[:n].astype(np.int64))
    shifts = np.arange(bits, dtype=np.int64)
    step = CHUNK * bits // 8  # CHUNK codes fill exactly this many bytes
    out = []
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        planes = np.unpackbits(raw[start * bits // 8: start * bits // 8 + step], bitorder="little")
        out.append((planes[: m * bits].reshape(m, bits).astype(np.int64) << shifts).sum(1))
    return torch.from_numpy(np.concatenate(out) if out else np.zeros(0, np.int64))


def trits_nbytes(n: int) -> int:
    """Bytes `pack_trits` writes for `n` ternary codes."""
    return (n + TRITS_PER_BYTE - 1) // TRITS_PER_BYTE


def pack_trits(codes: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Pack ternary codes {0, 1, 2} five per byte (base 3); 1.6 bits per code."""
    arr = _as_numpy_codes(codes).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 2):
        raise ValueError(f"ternary codes must be 0, 1 or 2; got [{arr.min()}, {arr.max()}]")
    pad = (-arr.size) % TRITS_PER_BYTE
    groups = np.concatenate([arr, np.zeros(pad, np.int64)]).reshape(-1, TRITS_PER_BYTE).astype(np.uint8)
    return torch.from_numpy((groups * _POW3).sum(1, dtype=np.uint16).astype(np.uint8))


def unpack_trits(packed: torch.Tensor | np.ndarray, n: int) -> torch.Tensor:
    """Inverse of `pack_trits`: the first `n` ternary codes as int64."""
    raw = _as_numpy_codes(packed).astype(np.int64)
    if raw.size != trits_nbytes(n):
        raise ValueError(f"{n} ternary codes need {trits_nbytes(n)} bytes, got {raw.size}")
    if raw.size and raw.max() >= 3**TRITS_PER_BYTE:
        raise ValueError(f"corrupt ternary byte {raw.max()} (a byte holds at most 3**5 - 1 = 242)")
    digits = (raw[:, None] // _POW3.astype(np.int64)) % 3
    return torch.from_numpy(digits.reshape(-1)[:n].copy())
