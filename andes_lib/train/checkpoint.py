"""Checkpoints that survive a kill at any moment: safetensors + JSON, written atomically, verified on load.

A checkpoint is a folder `step-000120/` holding

- `model.safetensors` + `config.json` (+ processor files): `save_pretrained`, so it loads like any artifact;
- `optimizer.safetensors` (every state tensor, e.g. AdamW's `exp_avg`) + `optimizer.json` (param groups and
  non-tensor state), `rng.safetensors` (torch CPU/CUDA generator states);
- `trainer_state.json`: step, data position, scheduler state, Python and NumPy RNG states, loss history;
- `manifest.json`, written last: size and SHA-256 of every other file.

It is written into a temporary sibling folder and renamed into place (one atomic `rename`), so a kill while
saving leaves the previous checkpoint untouched and only a `.tmp-*` folder behind (removed on the next save).
Pickle is never used: loading reads safetensors and JSON only. `load_checkpoint` re-hashes every file and
raises `CorruptCheckpointError` naming the bad file and the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
OPTIM_TENSORS, OPTIM_JSON, RNG_TENSORS = "optimizer.safetensors", "optimizer.json", "rng.safetensors"
STEP_DIR = re.compile(r"^step-(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is missing, truncated or altered; `path` is the file, `previous` an older checkpoint."""

    def __init__(self, message: str, path: Path, previous: Path | None = None):
        hint = (f"; the previous checkpoint {previous} is intact: delete {path.parent} to resume from it"
                if previous else "; no earlier checkpoint exists")
        super().__init__(message + hint)
        self.path, self.previous = path, previous


# ----------------------------------------------------------------------------- optimizer state <-> safetensors
def optimizer_to_safetensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (`state.<param>.<key>`) and a JSON document."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                plain.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain_state": plain}


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_to_safetensors`: a dict for `optimizer.load_state_dict`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in doc.get("plain_state", {}).items():
        state.setdefault(int(idx), {}).update(values)
    groups = []
    for group in doc["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


# ----------------------------------------------------------------------------- RNG states
def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Python and NumPy states (JSON) and torch generator states (tensors)."""
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    doc = {"python": [py[0], list(py[1]), py[2]],
           "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = s
    return doc, tensors


def set_rng_state(doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    py = doc["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = doc["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- files
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n", encoding="utf-8")


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Path) -> None:
    """Record size and SHA-256 of every file in `folder` (recursively) in manifest.json."""
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    write_json(folder / MANIFEST, {"files": files})


def verify(folder: Path, previous: Path | None = None) -> None:
    """Raise `CorruptCheckpointError` unless every file listed in the manifest is present and intact."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise CorruptCheckpointError(f"checkpoint {folder} is incomplete: {MANIFEST} is missing", manifest, previous)
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError) as err:
        raise CorruptCheckpointError(f"{manifest} is not a valid manifest ({err})", manifest, previous) from None
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            raise CorruptCheckpointError(f"checkpoint file {path} is missing", path, previous)
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise CorruptCheckpointError(f"checkpoint file {path} is corrupt: {size} bytes, expected "
                                         f"{meta['bytes']} (truncated or overwritten)", path, previous)
        if sha256(path) != meta["sha256"]:
            raise CorruptCheckpointError(f"checkpoint file {path} is corrupt: its SHA-256 does not match "
                                         f"the manifest", path, previous)


def _alive(pid: str) -> bool:
    """Whether the process that named a temporary folder still runs (another writer's folder is left alone)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder with `fill(tmp)` beside `target`, add a manifest, fsync, and rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by a run killed while saving
        if not _alive(stale.name[len(f".tmp-{target.name}-"):].split("-")[0]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-{os.getpid()}-", dir=target.parent))
    try:
        fill(tmp)
        write_manifest(tmp)
        _fsync_tree(tmp)
        if target.exists():  # replacing: move the old one out of the way first (rename is atomic)
            trash = target.parent / f".trash-{target.name}-{os.getpid()}"
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(target, trash)
            os.rename(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ----------------------------------------------------------------------------- checkpoints of a run
def list_checkpoints(folder: Path) -> list[Path]:
    """Complete-looking checkpoint folders (`step-NNNNNN`), oldest first; temporary folders are ignored."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def save_checkpoint(folder: Path, step: int, model: Any, processor: Any, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep_last: int = 2, model_state: dict[str, torch.Tensor] | None = None
                    ) -> Path:
    """Write `folder/step-<step>` atomically, then prune to the newest `keep_last` checkpoints."""
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=model_state)
        if processor is not None:
            processor.save_pretrained(tmp)
        tensors, doc = optimizer_to_safetensors(optimizer.state_dict())
        save_file(tensors, str(tmp / OPTIM_TENSORS))
        write_json(tmp / OPTIM_JSON, doc)
        rng_doc, rng_tensors = rng_state()
        save_file(rng_tensors, str(tmp / RNG_TENSORS))
        write_json(tmp / STATE, {**state, "step": step, "rng": rng_doc})

    path = atomic_dir(folder / f"step-{step:06d}", fill)
    for old in list_checkpoints(folder)[:-keep_last]:
        trash = old.parent / f".trash-{old.name}"
        os.rename(old, trash)  # atomic: a kill while deleting never leaves a half checkpoint that looks whole
        shutil.rmtree(trash, ignore_errors=True)
    return path


def load_state(path: Path, previous: Path | None = None) -> dict[str, Any]:
    """Verify a checkpoint and read its parts (without touching a model): state, model, optimizer, RNG."""
    verify(path, previous)
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
        weights = load_file(str(path / "model.safetensors"))
        optim = optimizer_from_safetensors(load_file(str(path / OPTIM_TENSORS)),
                                           json.loads((path / OPTIM_JSON).read_text(encoding="utf-8")))
        rng_tensors = load_file(str(path / RNG_TENSORS))
    except Exception as err:  # verified files that still fail to parse: report which checkpoint
        raise CorruptCheckpointError(f"checkpoint {path} cannot be read ({err})", path, previous) from err
    return {"state": state, "model": weights, "optimizer": optim, "rng_tensors": rng_tensors}


def latest_checkpoint(folder: Path) -> tuple[Path, Path | None] | None:
    """(newest checkpoint, the one before it) or None."""
    found = list_checkpoints(folder)
    if not found:
        return None
    return found[-1], (found[-2] if len(found) > 1 else None)


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Load a `save_pretrained` state dict; only tied weights (e.g. lm_head) may be absent from the file."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    really_missing = [k for k in missing if k not in tied]
    if really_missing or unexpected:
        raise CheckpointError(f"{where}: weights do not match the model (missing {really_missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
