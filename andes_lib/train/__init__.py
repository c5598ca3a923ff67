"""Training: the three pre-training stages and SFT of AndesVL (ANDESVL.md §2, SPEC §3) as resumable recipes."""

from .artifacts import describe_chain, get_artifact, list_artifacts
from .collate import IGNORE_INDEX, assistant_mask, collate
from .loop import StageResult, apply_freeze, run_stage, trainable_table
from .recipes import RECIPES, StageRecipe, chain, fingerprint, get_recipe

__all__ = ["describe_chain", "get_artifact", "list_artifacts", "IGNORE_INDEX", "assistant_mask", "collate", "StageResult", "apply_freeze", "run_stage",
           "trainable_table", "RECIPES", "StageRecipe", "chain", "fingerprint", "get_recipe"]
