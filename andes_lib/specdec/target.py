"""The target model as the speculative decoder sees it: top-layer features, logits, and a KV cache it can roll back.

EAGLE-style drafting (ANDESVL.md §4: "reuses the target model's top-layer features") needs, at every position,
the target's last hidden state (after the final norm, right before the LM head). `Target` wraps a transformers
causal LM (SmolLM2 / Llama / Qwen3) or an AndesVL model (whose first call also takes the image inputs) and returns
both, and knows how to cut its `DynamicCache` back to the accepted tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache


@dataclass
class TargetOutput:
    logits: torch.Tensor    # (1, q, vocab)
    features: torch.Tensor  # (1, q, hidden): top-layer hidden states, the draft head's input


class Target:
    """A frozen causal LM (or AndesVL) with its embedding, LM head and backbone exposed."""

    def __init__(self, model: nn.Module):
        if not hasattr(model, "model") or model.get_output_embeddings() is None:
            raise ValueError(f"{type(model).__name__} is not a causal LM with a `.model` backbone and an LM head")
        self.model = model.eval()
        self.backbone = model.model
        self.embed = model.get_input_embeddings()
        self.lm_head = model.get_output_embeddings()
        config = model.config
        self.text_config = getattr(config, "text_config", None) or config
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = self.text_config.eos_token_id if eos is None else eos
        self.eos_ids: tuple[int, ...] = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.text_config)

    def rotary(self) -> nn.Module:
        """The backbone's rotary-embedding module (no weights), reused by the draft head."""
        lm = getattr(self.backbone, "language_model", self.backbone)
        return lm.rotary_emb

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, cache: DynamicCache, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **extra) -> TargetOutput:
        """Run `input_ids` (1, q) after what `cache` holds; `attention_mask` may be a 4D additive tree mask."""
        out = self.backbone(input_ids=input_ids, past_key_values=cache, position_ids=position_ids,
                            attention_mask=attention_mask, use_cache=True, **extra)
        features = out.last_hidden_state
        return TargetOutput(logits=self.lm_head(features), features=features)


def truncate_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first `length` positions of every layer (rolls back rejected draft tokens)."""
    for layer in cache.layers:
        if layer.keys is not None and layer.keys.shape[-2] > length:
            layer.keys = layer.keys[:, :, :length]
            layer.values = layer.values[:, :, :length]


def keep_cache_positions(cache: DynamicCache, prefix: int, extra: torch.Tensor) -> None:
    """Keep the first `prefix` positions plus the positions `prefix + extra` (the accepted branch of a tree)."""
    index = torch.cat([torch.arange(prefix), prefix + extra.to(torch.long)])
    for layer in cache.layers:
        if layer.keys is not None:
            layer.keys = layer.keys.index_select(2, index)
            layer.values = layer.values.index_select(2, index)
