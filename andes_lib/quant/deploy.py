"""The deployments chapters 07-08 leave in a run directory, found and loaded by name (ANDESVL.md §4).

- `floating point`: the base of `<run>/adapters/fp` with its float-trained adapters;
- `PTQ-only <scheme>`: the same base with the encodings of `<run>/quant/<scheme>/ptq-only`, same adapters;
- `QALFT <scheme>`: the QAT base with its frozen encodings and the adapters of `<run>/adapters/qalft-<scheme>`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters.registry import AdapterRegistry
from .ptq import ENCODINGS_FILE, load_encodings


@dataclass(frozen=True)
class Deployment:
    """A base checkpoint, optional frozen encodings, and the registry of adapters that run on it."""

    label: str
    base: Path
    encodings: Path | None
    adapters: Path


def find_deployments(run: str | os.PathLike[str]) -> dict[str, Deployment]:
    """Label -> Deployment for everything chapters 07-08 wrote under `run` (missing parts are skipped)."""
    run = Path(run)
    out: dict[str, Deployment] = {}
    fp = run / "adapters" / "fp"
    fp_base = AdapterRegistry(fp).read()["base"] if (fp / "registry.json").is_file() else None
    if fp_base:
        out["floating point"] = Deployment("floating point", Path(fp_base), None, fp)
        for enc in sorted(run.glob(f"quant/*/ptq-only/{ENCODINGS_FILE}")):
            label = f"PTQ-only {enc.parent.parent.name}"
            out[label] = Deployment(label, Path(fp_base), enc, fp)
    for folder in sorted(run.glob("adapters/qalft-*")):
        if not (folder / "registry.json").is_file():
            continue
        base = AdapterRegistry(folder).read()["base"]
        if base:
            path = Path(base.split("#")[0])
            label = f"QALFT {folder.name.removeprefix('qalft-')}"
            out[label] = Deployment(label, path, path / ENCODINGS_FILE, folder)
    return out


def load_deployment(dep: Deployment) -> tuple[Any, Any, dict[str, str]]:
    """(model with every loadable adapter, processor, {adapter: error}) of a deployment.

    The model is the bare (quantized) base when no adapter could be loaded.
    """
    from ..posttrain.common import load_checkpoint

    base, processor = load_checkpoint(dep.base)
    if dep.encodings is not None:
        load_encodings(base, dep.encodings)
    model, failures = AdapterRegistry(dep.adapters).load(base, strict=False)
    return (model if model is not None else base), processor, failures
