"""The adapter registry in the run directory: 1 base + N named LoRA adapters on disk (ANDESVL.md §4, 1+N LoRA).

    <folder>/registry.json          base checkpoint + one entry per adapter (task, settings, checksum, scores)
    <folder>/<name>/adapter_config.json, adapter_model.safetensors      (PEFT's format, safetensors only)

Loading checks every adapter before PEFT sees it: a missing folder or file, a checksum that differs from the
registry's, or a file that is not safetensors raises `AdapterError` naming the adapter and the file. With
`strict=False` the broken ones are reported and the others are loaded and keep working.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from peft import PeftModel
from safetensors import SafetensorError, safe_open
from torch import nn

from ..train.checkpoint import sha256

REGISTRY_FILE = "registry.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
BASE_NAME = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class AdapterError(ValueError):
    """An adapter that cannot be used: unknown name, missing or corrupt file."""


def check_name(name: Any) -> str:
    """An adapter name usable as a PEFT adapter and a folder: letters, digits, '_' and '-'."""
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise AdapterError(f"adapter name must be a non-empty string of letters, digits, '_' or '-', got {name!r}")
    if name == BASE_NAME:
        raise AdapterError(f"{BASE_NAME!r} is reserved for the base model")
    return name


class AdapterRegistry:
    """The adapters of one base checkpoint, stored in `folder` (created on first save)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)

    @property
    def path(self) -> Path:
        return self.folder / REGISTRY_FILE

    def read(self) -> dict[str, Any]:
        """The registry document ({"base": ..., "adapters": {name: entry}}); empty when none was written."""
        if not self.path.is_file():
            return {"base": None, "adapters": {}}
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise AdapterError(f"{self.path}: the registry is not valid JSON ({e})") from e

    def _write(self, doc: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.path)

    def names(self) -> list[str]:
        return list(self.read()["adapters"])

    def entry(self, name: str) -> dict[str, Any]:
        adapters = self.read()["adapters"]
        if name not in adapters:
            raise AdapterError(f"unknown adapter {name!r}; registered in {self.folder}: {sorted(adapters)}")
        return adapters[name]

    def save(self, model: PeftModel, name: str, base: str, **info: Any) -> Path:
        """Save adapter `name` of `model` (safetensors) and register it with `base` (the checkpoint it fits)."""
        check_name(name)
        if name not in model.peft_config:
            raise AdapterError(f"the model has no adapter {name!r}; it has {sorted(model.peft_config)}")
        doc = self.read()
        if doc["base"] not in (None, str(base)):
            raise AdapterError(f"{self.folder} holds adapters of base {doc['base']}, not {base}")
        target = self.folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.folder) as tmp:
            model.save_pretrained(tmp, selected_adapters=[name], safe_serialization=True)
            written = Path(tmp) / name if (Path(tmp) / name).is_dir() else Path(tmp)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(written), str(target))
        doc["base"] = str(base)
        doc["adapters"][name] = {"dir": name, "sha256": sha256(target / WEIGHTS_FILE),
                                 "bytes": (target / WEIGHTS_FILE).stat().st_size, **info}
        self._write(doc)
        return target

    def check(self, name: str) -> Path:
        """The adapter's folder after checking its files; AdapterError says what is wrong."""
        entry = self.entry(check_name(name))
        folder = self.folder / entry["dir"]
        weights, config = folder / WEIGHTS_FILE, folder / CONFIG_FILE
        for f in (config, weights):
            if not f.is_file():
                raise AdapterError(f"adapter {name!r}: file {f} is missing")
        if sha256(weights) != entry["sha256"]:
            raise AdapterError(f"adapter {name!r}: file {weights} is corrupt (its checksum differs from the registry)")
        try:
            with safe_open(str(weights), "pt") as f:
                list(f.keys())
            json.loads(config.read_text(encoding="utf-8"))
        except (SafetensorError, OSError, ValueError) as e:
            raise AdapterError(f"adapter {name!r}: file {weights} or {config.name} is corrupt ({e})") from e
        return folder

    def load(self, base: nn.Module, names: list[str] | None = None, strict: bool = True
             ) -> tuple[PeftModel | None, dict[str, str]]:
        """(model with the adapters attached, {name: error} of those that failed).

        strict: raise on the first broken adapter; otherwise skip it (its error is returned) and load the rest.
        The model is None only when no adapter could be loaded.
        """
        if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
            raise TypeError("names must be a list of adapter names")
        model, failures = None, {}
        for name in self.names() if names is None else names:
            try:
                folder = self.check(name)
            except AdapterError as e:
                if strict:
                    raise
                failures[name] = str(e)
                continue
            if model is None:
                model = PeftModel.from_pretrained(base, str(folder), adapter_name=name)
            else:
                model.load_adapter(str(folder), adapter_name=name)
        if model is not None:
            model.eval()
        return model, failures
