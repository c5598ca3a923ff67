"""Speculative decoding (ANDESVL.md §4): an EAGLE-style draft head on the target's top-layer features.

    target = Target(load_smol_llm())
    data = collect(target, tokenizer, [r["prompt"] for r in make_prompts(40)])
    head = DraftHead.from_target(target, vocab=frequent_tokens(data.labels, 4096, target.eos_ids))
    train_head(head, target, data)
    speculative_generate(target, head, chat_ids(tokenizer, "List 5 fruits."), 64, mode="tree")
"""

from .data import DistillData, chat_ids, collect, collect_images, image_encoder, image_inputs
from .decode import (MODES, SpecResult, Step, greedy_generate, greedy_stream, speculative_generate,
                     speculative_stream)
from .head import DraftHead, HeadCache, HeadConfig, frequent_tokens
from .prompts import KINDS, make_prompt, make_prompts
from .target import Target, keep_cache_positions, truncate_cache
from .train import TrainHistory, distill_loss, evaluate_head, train_head
from .tree import DraftTree, draft_tree

__all__ = ["DistillData", "chat_ids", "collect", "collect_images", "image_encoder", "image_inputs", "MODES",
           "SpecResult", "Step", "greedy_generate", "greedy_stream", "speculative_generate", "speculative_stream",
           "DraftHead", "HeadCache", "HeadConfig", "frequent_tokens", "KINDS", "make_prompt", "make_prompts", "Target",
           "keep_cache_positions", "truncate_cache", "TrainHistory", "distill_loss", "evaluate_head", "train_head",
           "DraftTree", "draft_tree"]
