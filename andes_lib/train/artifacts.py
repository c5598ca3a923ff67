"""The artifact cache: a stage name (`nano-sft`) -> a checkpoint folder, built on demand by its recipe chain.

    from andes_lib.train.artifacts import get_artifact, list_artifacts
    ckpt = get_artifact("nano-sft", run_dir=RUN_DIR)     # runs llm -> vision -> pt1 -> pt2 -> pt3 -> sft if needed
    model = AutoModelForImageTextToText.from_pretrained(ckpt); proc = AndesVLProcessor.from_pretrained(ckpt)

Where things live: `<run>/artifacts/<name>/` (a `save_pretrained` folder + processor + `history.json` +
`andes_artifact.json`) and, while a stage trains, `<run>/checkpoints/<name>/step-NNNNNN/` (resumable).
A finished artifact is also copied to a cache shared by all runs, `<cache>/artifacts/<name>-<fingerprint>/`
(`$ANDES_ARTIFACT_CACHE`, else `$ANDES_CACHE_DIR/artifacts`, else `<repo>/.cache/artifacts`; set
`ANDES_ARTIFACT_CACHE=off` to disable), so a chapter run on its own does not retrain what an earlier run built.

An artifact is reused only when its recorded fingerprint equals the recipe's (parameters, parent chain, data
generator source, tokenizer, training and model code): anything else is rebuilt, never silently reused.
`scale` shrinks every stage of the chain (steps and data pool) for smoke tests; scaled recipes have their own
fingerprints, so they never pass for full-size artifacts.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, atomic_dir, verify
from .loop import ARTIFACT_FILE, read_artifact_info, run_stage
from .recipes import RECIPES, StageRecipe, chain, fingerprint, get_recipe, parent_of

ENV_CACHE = "ANDES_ARTIFACT_CACHE"


def run_root(run_dir: str | os.PathLike[str] = "") -> Path:
    """The run directory (explicit > $ANDES_RUN_DIR > runs/interactive), as `andes_lib.report` resolves it."""
    from ..report import run_dir as resolve_run_dir

    return resolve_run_dir(run_dir)


def cache_root() -> Path | None:
    """The cross-run artifact cache, or None when disabled (`ANDES_ARTIFACT_CACHE=off`)."""
    value = os.environ.get(ENV_CACHE, "")
    if value.lower() in ("off", "0", "false", "no", "none"):
        return None
    if value:
        return Path(value)
    base = os.environ.get("ANDES_CACHE_DIR") or Path(__file__).resolve().parents[2] / ".cache"
    return Path(base) / "artifacts"


def scaled(recipe: StageRecipe, scale: float) -> StageRecipe:
    """The recipe with steps, warm-up, data pool and checkpoint cadence multiplied by `scale` (1.0: unchanged).

    Below 1 the batch shrinks too (by sqrt(scale)), so a smoke test (scale 0.02) runs in seconds.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if scale == 1.0:
        return recipe
    steps = max(2, math.ceil(recipe.steps * scale))
    batch = recipe.batch_size if scale >= 1 else max(2, round(recipe.batch_size * math.sqrt(scale)))
    accum = recipe.grad_accum if batch % recipe.grad_accum == 0 else 1
    return recipe.replace(
        steps=steps, batch_size=batch, grad_accum=accum,
        warmup_steps=max(1, min(steps // 2, math.ceil(recipe.warmup_steps * scale))),
        n_per_domain=max(8, math.ceil(recipe.n_per_domain * scale)),
        text_corpus=math.ceil(recipe.text_corpus * scale) if recipe.text_corpus else 0,
        save_every=max(1, math.ceil(recipe.save_every * scale)) if recipe.save_every else 0,
    )


def resolve_recipes(scale: float = 1.0, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                    recipes: Mapping[str, StageRecipe] | None = None) -> dict[str, StageRecipe]:
    """All recipes after `scale`, then per-stage `overrides` ({"nano-sft": {"steps": 200}} or {"sft": ...})."""
    out = {k: scaled(r, scale) for k, r in (RECIPES if recipes is None else recipes).items()}
    for name, changes in (overrides or {}).items():
        recipe = get_recipe(name, out)
        out[recipe.artifact] = recipe.replace(**changes)
    return out


def artifact_dir(name: str, run_dir: str | os.PathLike[str] = "") -> Path:
    return run_root(run_dir) / "artifacts" / name


def is_valid(path: Path, expected: str) -> bool:
    """True when `path` holds a complete artifact with fingerprint `expected`."""
    if not (path / ARTIFACT_FILE).is_file():
        return False
    try:
        verify(path)
        return read_artifact_info(path).get("fingerprint") == expected
    except (CheckpointError, ValueError, OSError):
        return False


def _copy(src: Path, dst: Path) -> Path:
    return atomic_dir(dst, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True,
                                                       ignore=shutil.ignore_patterns("manifest.json")))


def get_artifact(name: str, run_dir: str | os.PathLike[str] = "", *, scale: float = 1.0,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None, rebuild: bool = False,
                 use_cache: bool = True, progress: bool = True,
                 recipes: Mapping[str, StageRecipe] | None = None) -> Path:
    """The folder of artifact `name` in the run directory, trained (with its parents) when missing or stale.

    scale / overrides: shrink or change recipes (see `resolve_recipes`); rebuild: retrain even if present;
    use_cache: look in / store to the cross-run cache.
    """
    table = resolve_recipes(scale, overrides, recipes)
    recipe = get_recipe(name, table)
    expected = fingerprint(recipe, table)
    target = artifact_dir(recipe.artifact, run_dir)
    if not rebuild and is_valid(target, expected):
        return target
    cache = cache_root() if use_cache else None
    cached = cache / f"{recipe.artifact}-{expected}" if cache else None
    if not rebuild and cached is not None and is_valid(cached, expected):
        if progress:
            print(f"{recipe.artifact}: reusing the cached build {cached} (fingerprint {expected})")
        if _is_main_process():
            _copy(cached, target)
        return target
    if target.exists() and progress:
        print(f"{recipe.artifact}: the artifact in {target} is stale or incomplete; training it again")
    parent = parent_of(recipe, table)
    init_from = get_artifact(parent.artifact, run_dir, scale=scale, overrides=overrides, rebuild=False,
                             use_cache=use_cache, progress=progress, recipes=recipes) if parent else None
    run_stage(recipe, target, init_from, checkpoint_dir=run_root(run_dir) / "checkpoints" / recipe.artifact,
              fingerprint=expected, progress=progress, on_stale="restart")
    if cached is not None and _is_main_process():
        _copy(target, cached)
    return target


def _is_main_process() -> bool:
    """False on the non-main processes of an `accelerate launch` run (only the main one writes)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def list_artifacts(run_dir: str | os.PathLike[str] = "") -> dict[str, Path]:
    """Complete artifacts present in the run directory, by name, in pipeline order (the recipes' order, then any
    other name alphabetically); fingerprints are not checked here."""
    folder = run_root(run_dir) / "artifacts"
    if not folder.is_dir():
        return {}
    order = {name: i for i, name in enumerate(RECIPES)}
    found = sorted((p for p in folder.iterdir() if (p / ARTIFACT_FILE).is_file()),
                   key=lambda p: (order.get(p.name, len(order)), p.name))
    return {p.name: p for p in found}


def describe_chain(name: str, scale: float = 1.0, overrides: Mapping[str, Mapping[str, Any]] | None = None
                   ) -> list[dict[str, Any]]:
    """One row per stage leading to `name`: what trains, data, steps, batch, fingerprint (for notebooks)."""
    table = resolve_recipes(scale, overrides)
    rows = []
    for r in chain(name, table):
        rows.append({"stage": r.artifact, "trains": ", ".join(r.trainable), "frozen": ", ".join(r.frozen) or "-",
                     "lr": ", ".join(f"{k.split('_')[0]} {v:g}" for k, v in r.lr.items()),
                     "data": ", ".join(r.data) or "text only", "text_only": r.text_only, "loss_on": r.loss_on,
                     "max_seq_len": r.max_seq_len, "steps": r.steps, "batch": r.batch_size,
                     "optimizer": r.optimizer, "precision": r.precision,
                     "fingerprint": fingerprint(r, table)})
    return rows
