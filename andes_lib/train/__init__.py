"""Training: the three pre-training stages and SFT of AndesVL (ANDESVL.md §2, SPEC §3) as resumable recipes.

    from andes_lib.train import get_artifact
    ckpt = get_artifact("nano-sft", run_dir=RUN_DIR)     # trains llm -> vision -> pt1 -> pt2 -> pt3 -> sft when missing

Modules: `recipes` (StageRecipe, the nano chain, fingerprints), `stream` (the data mix as a resumable plan),
`collate` (batches and loss masks), `patch_labels` (the `vision` stage: dense shape/colour labels per patch),
`loop` (`run_stage`, an accelerate loop), `checkpoint` (atomic safetensors
checkpoints), `artifacts` (the cache), `plots` (loss/LR curves).
"""

from .artifacts import describe_chain, get_artifact, list_artifacts
from .collate import IGNORE_INDEX, assistant_mask, collate
from .loop import StageResult, apply_freeze, run_stage, trainable_table
from .recipes import RECIPES, StageRecipe, chain, fingerprint, get_recipe

__all__ = [
    "describe_chain", "get_artifact", "list_artifacts", "IGNORE_INDEX", "assistant_mask", "collate", "StageResult",
    "apply_freeze", "run_stage", "trainable_table", "RECIPES", "StageRecipe", "chain", "fingerprint", "get_recipe",
]
