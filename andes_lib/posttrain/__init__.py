"""Post-training (ANDESVL.md §2, SPEC §3.3-3.4): MPO for the Instruct model; long-CoT SFT then two-stage GRPO
for the Thinking model.

    from andes_lib.posttrain import build_mpo_pairs, run_mpo, mpo_loss                     # chapter 05
    from andes_lib.posttrain import thinking_sft_data, run_thinking_sft, grade, run_grpo   # chapter 06

Training goes through TRL (`DPOTrainer` with the MPO loss list, `SFTTrainer`, `GRPOTrainer`); the losses,
advantages and rewards are also written out by hand here, and tested against TRL.
"""

from .common import get_artifact, load_checkpoint, prompt_text, sample_answers, save_checkpoint
from .difficulty import BUCKETS, bucket, bucket_table, grade, stage_indices
from .grpo import GRPOResult, group_advantages, grpo_config, grpo_loss, grpo_rows, run_grpo, thinking_eval
from .mpo import (MPO_BETA, MPO_LOSS_TYPES, MPO_WEIGHTS, MPOResult, generation_loss, mpo_config, mpo_loss,
                  mpo_loss_from_batch, preference_loss, quality_loss, run_mpo)
from .pairs import answer_space_pairs, build_mpo_pairs, sampled_pairs
from .rewards import accuracy_score, format_score, parse_thinking, thinking_rewards
from .thinking import (THINKING_DOMAINS, SFTResult, run_thinking_sft, thinking_checkpoint, thinking_completion,
                       thinking_sft_data)

__all__ = [
    "get_artifact", "load_checkpoint", "prompt_text", "sample_answers", "save_checkpoint", "BUCKETS", "bucket",
    "bucket_table",
    "grade", "stage_indices", "GRPOResult", "group_advantages", "grpo_config", "grpo_loss", "grpo_rows", "run_grpo",
    "thinking_eval", "MPO_BETA", "MPO_LOSS_TYPES", "MPO_WEIGHTS", "MPOResult", "generation_loss", "mpo_config",
    "mpo_loss", "mpo_loss_from_batch", "preference_loss", "quality_loss", "run_mpo", "answer_space_pairs",
    "build_mpo_pairs", "sampled_pairs", "accuracy_score", "format_score", "parse_thinking", "thinking_rewards",
    "THINKING_DOMAINS", "SFTResult", "run_thinking_sft", "thinking_checkpoint", "thinking_completion",
    "thinking_sft_data",
]
