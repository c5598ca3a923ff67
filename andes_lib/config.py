"""Configurations of the AndesVL family (ANDESVL.md §1, SPEC §1.1-1.4).

`AndesVisionConfig` describes the native-resolution ViT in either released style:
AIMv2 (SwiGLU, RMSNorm, no biases) or SigLIP2 (GELU-tanh, LayerNorm, biases). `AndesVLConfig` is the
composite: vision tower + `PixelShuffleProjector` + a stock causal LM (Qwen3, or Llama for SmolLM2).
Both are transformers-v5 dataclass configs, so `save_pretrained` / `AutoConfig` round-trip them.
"""

from __future__ import annotations

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


@strict
class AndesVisionConfig(PreTrainedConfig):
    """Native-resolution ViT: packed images, learned position table resized per image, 2D RoPE (SPEC §1.3)."""

    model_type = "andesvl_vision"
    base_config_key = "vision_config"

    style: Literal["aimv2", "siglip2"] = "aimv2"
    hidden_size: int = 1024
    intermediate_size: int = 2816
    num_hidden_layers: int = 24
    num_attention_heads: int = 8
    num_channels: int = 3
    patch_size: int = 14
    position_grid: int = 32  # learned table of position_grid**2 entries, resized to each image's patch grid
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    image_mean: list[float] | tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: list[float] | tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if (self.hidden_size // self.num_attention_heads) % 4:
            raise ValueError("2D RoPE needs head_dim divisible by 4 (a quarter of the features per axis and sin/cos)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@strict
class AndesVLConfig(PreTrainedConfig):
    """Vision tower + pixel-shuffle MLP projector + language model (SPEC §1.4-1.5)."""

    model_type = "andesvl"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AndesVisionConfig),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 151654  # <|vision_pad|>
    image_start_token_id: int = 151652  # <img>
    image_end_token_id: int = 151653  # </img>
    projector_layernorm: bool = False  # True gives the InternVL-style LayerNorm(4C) first (earlier AndesVL builds)
    projector_output_rms: float = 0.0  # > 0: visual rows RMS-normalised, times a learned gain starting here
    projector_place_scale: float = 0.0  # > 0: each visual row + this times its (x, y) along two fixed directions
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.tie_word_embeddings = bool(self.text_config.tie_word_embeddings)
