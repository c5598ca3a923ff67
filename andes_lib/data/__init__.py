"""Synthetic multimodal data for AndesVL's evaluation domains (ANDESVL.md §3), text-only data, preference pairs
and verifiable prompts (§2). Every generator is deterministic: `generate(domain, seed) -> Sample`.

    from andes_lib.data import build_dataset, generate
    train = build_dataset("train")                       # cached Arrow dataset, TRL conversational format
    sample = generate("chart", 7)                        # Sample: images, question, answer, scene, rationale
"""

from .base import Sample, assistant_text, box_string, user_message
from .corpus import corpus_texts
from .dataset import (DEFAULT_N, SPLITS, build_dataset, build_preference_dataset, build_verifiable_dataset,
                      cache_root, load_data, sample_seed, validate_record, write_samples)
from .registry import DOMAINS, GENERATORS, PAPER_GROUP, generate

__all__ = [
    "Sample", "assistant_text", "box_string", "user_message", "corpus_texts", "DEFAULT_N", "SPLITS",
    "build_dataset", "build_preference_dataset", "build_verifiable_dataset", "cache_root", "load_data",
    "sample_seed", "validate_record", "write_samples", "DOMAINS", "GENERATORS", "PAPER_GROUP", "generate",
]
