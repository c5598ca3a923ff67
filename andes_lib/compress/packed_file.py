"""The packed model file: every weight's codes, scales and codebooks in one safetensors file (ANDESVL.md §4).

Layout: for a weight `W` stored with scheme S the file holds `W::codes` (uint8), `W::scales` / `W::codebook`
(fp16) or `W::weight` (fp16); the safetensors metadata holds the format tag, the model config (JSON), each
weight's scheme and shape, and a CRC-32 of every stored tensor. Average bits per weight is the file's size in
bits (header, metadata, norms and side data included) over the model's parameter count (tied weights once).
`load_packed` unpacks into a transformers model that `generate`s; a truncated or corrupted file raises ValueError.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.initialization import no_init_weights

from .schemes import dequantize_matrix, parse_scheme, quantize_matrix

FORMAT = "andes-packed/1"
SEP = "::"


@dataclass
class PackedFile:
    """What `save_packed` wrote: the path, its size and the average bits per weight counted from that size."""

    path: Path
    file_bytes: int
    n_weights: int
    schemes: dict[str, str]

    @property
    def bpw(self) -> float:
        return 8 * self.file_bytes / self.n_weights


def count_weights(model: torch.nn.Module) -> int:
    """Parameters of the model, tied tensors counted once (what a bits-per-weight figure divides by)."""
    return sum(p.numel() for p in model.parameters())  # named_parameters() already de-duplicates tied tensors


def file_bpw(path: str | os.PathLike[str]) -> float:
    """Average bits per weight of a packed file: its size on disk over the parameter count it declares."""
    meta = read_metadata(path)
    return 8 * os.path.getsize(path) / int(meta["n_weights"])


def _crc(t: torch.Tensor) -> int:
    return zlib.crc32((t if t.dtype == torch.uint8 else t.view(torch.int16)).contiguous().numpy())


def _as_matrix(p: torch.Tensor) -> torch.Tensor:
    return p.reshape(1, -1) if p.ndim < 2 else p.reshape(p.shape[0], -1)


def save_packed(model: PreTrainedModel, path: str | os.PathLike[str], schemes: dict[str, str],
                importance: dict[str, torch.Tensor] | None = None, default: str = "fp16",
                search: bool | None = None, progress: bool = False,
                quantized: dict[str, dict[str, torch.Tensor]] | None = None) -> PackedFile:
    """Quantise every parameter of `model` with `schemes[name]` (else `default`; 1-D tensors stay fp16) and write.

    `importance` (name -> per-column weights, from `calibrate.activation_importance`) selects the calibrated fit;
    `search` defaults to True exactly when importance is given. `quantized` (name -> stored tensors, e.g. from
    `gptq.gptq_model`) supplies codes and scales chosen elsewhere for those names; they must fit their scheme.
    """
    from tqdm.auto import tqdm

    params = dict(model.named_parameters())
    unknown = sorted(set(schemes) - set(params))
    if unknown:
        raise ValueError(f"schemes name parameters the model does not have: {unknown[:5]}")
    search = bool(importance) if search is None else search
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict] = {}
    used: dict[str, str] = {}
    for name, p in tqdm(params.items(), desc="packing", disable=not progress, leave=False):
        scheme = parse_scheme(schemes.get(name, default) if p.ndim >= 2 else "fp16")
        m = _as_matrix(p)
        stored = (quantized or {}).get(name)
        if stored is None:
            stored = quantize_matrix(m, scheme, (importance or {}).get(name), search=search)
        elif {k: (tuple(t.shape), t.element_size()) for k, t in stored.items()} != scheme.stored_shapes(*m.shape):
            raise ValueError(f"{name}: the supplied tensors do not fit {scheme.name} for a {tuple(m.shape)} matrix")
        for key, t in stored.items():
            tensors[f"{name}{SEP}{key}"] = t.contiguous()
        entries[name] = {"scheme": scheme.name, "shape": list(p.shape), "rows": m.shape[0], "cols": m.shape[1]}
        used[name] = scheme.name
    crc = {k: _crc(t) for k, t in tensors.items()}
    n_weights = count_weights(model)
    meta = {"format": FORMAT, "config": model.config.to_json_string(use_diff=False),
            "entries": json.dumps(entries), "crc32": json.dumps(crc), "n_weights": str(n_weights)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-packed-")
    os.close(fd)
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)  # atomic: a half-written file never carries the final name
    return PackedFile(path, os.path.getsize(path), n_weights, used)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a packed file; ValueError if the file is missing pieces or is not a packed model."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable packed model (truncated or corrupt?): {e}") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format tag {meta.get('format')!r}, expected {FORMAT!r}")
    missing = {"config", "entries", "crc32", "n_weights"} - set(meta)
    if missing:
        raise ValueError(f"{path}: metadata lacks {sorted(missing)}")
    return meta


def load_packed_state(path: str | os.PathLike[str]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, fp32 state dict) unpacked from a packed file, every tensor checked against its CRC-32."""
    meta = read_metadata(path)
    entries, crc = json.loads(meta["entries"]), json.loads(meta["crc32"])
    state = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            lost = sorted(set(crc) - keys)
            if lost:
                raise ValueError(f"{path}: stored tensors missing: {lost[:5]}")
            stored_by_name: dict[str, dict[str, torch.Tensor]] = {}
            for key in crc:
                t = f.get_tensor(key)
                if _crc(t) != crc[key]:
                    raise ValueError(f"{path}: tensor {key} fails its CRC-32 check (corrupt file)")
                name, part = key.rsplit(SEP, 1)
                stored_by_name.setdefault(name, {})[part] = t
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable packed model (truncated or corrupt?): {e}") from e
    for name, e in entries.items():
        w = dequantize_matrix(stored_by_name.get(name, {}), parse_scheme(e["scheme"]), e["rows"], e["cols"])
        state[name] = w.reshape(e["shape"])
    return json.loads(meta["config"]), state


def load_packed(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Rebuild the model from a packed file (unpacked to `dtype`), ready to `generate`."""
    config_dict, state = load_packed_state(path)
    config = AutoConfig.for_model(**config_dict)
    with no_init_weights():  # every weight comes from the file: skip the random initialisation
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise ValueError(f"{path}: packed weights do not fit the model (missing {missing[:3]}, extra {unexpected[:3]})")
    model.tie_weights()
    return model.to(dtype).eval()


def _tied_keys(model: PreTrainedModel) -> set[str]:
    """Names the file does not carry: tied copies (e.g. lm_head.weight) and buffers."""
    names = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    return names | set(getattr(model, "_tied_weights_keys", None) or {}) | {n for n, _ in model.named_buffers()}
