"""AndesVL: vision tower -> pixel-shuffle projector -> stock causal LM (ANDESVL.md §1, SPEC §1.5, §2.6).

The layout is the transformers-v5 composite one (`ForConditionalGeneration.model` backbone returning
`last_hidden_state`, plus `.lm_head`), which is what TRL's trainers, PEFT and `generate()` expect.
Visual rows overwrite the text embeddings at the `<|vision_pad|>` positions of each `<img>...</img>` span,
in order: image i of the batch fills the i-th run of placeholders.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ..config import AndesVLConfig
from .projector import PixelShuffleProjector
from .vision import AndesVisionModel, init_vision_weights


class AndesVLPreTrainedModel(PreTrainedModel):
    config_class = AndesVLConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["VisionBlock", "Qwen3DecoderLayer", "LlamaDecoderLayer"]
    _skip_keys_device_placement = "past_key_values"
    _supports_sdpa = True
    _supports_flash_attn = True
    _can_compile_fullgraph = False

    def _init_weights(self, module: nn.Module) -> None:
        init_vision_weights(self, module)


class AndesVLModel(AndesVLPreTrainedModel):
    """Backbone: returns the LM's last hidden state with images spliced in."""

    def __init__(self, config: AndesVLConfig):
        super().__init__(config)
        self.vision_tower = AndesVisionModel(config.vision_config)
        self.projector = PixelShuffleProjector(
            config.vision_config.hidden_size, config.text_config.hidden_size, layernorm=config.projector_layernorm,
            output_rms=config.projector_output_rms, place_scale=config.projector_place_scale,
        )
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor) -> torch.Tensor:
        """Packed patches -> one LLM-width row per 2x2 patch block, images concatenated in order."""
        features = self.vision_tower(pixel_values=pixel_values, image_grid_hw=image_grid_hw).last_hidden_state
        return self.projector(features, image_grid_hw)

    def splice_image_features(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Write visual rows at the `<|vision_pad|>` positions, in reading order across the batch."""
        mask = input_ids == self.config.image_token_id
        n_slots, n_rows = int(mask.sum()), image_features.shape[0]
        if n_slots != n_rows:
            raise ValueError(
                f"the text has {n_slots} <|vision_pad|> placeholder tokens but the images give {n_rows} visual tokens; "
                "build inputs with AndesVLProcessor so every image is expanded to its own token count"
            )
        mask = mask.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, image_features.to(inputs_embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_hw: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids to locate the <|vision_pad|> placeholders")
            if image_grid_hw is None:
                raise ValueError("pixel_values were given without image_grid_hw (one (h, w) patch grid per image)")
            features = self.get_image_features(pixel_values, image_grid_hw)
            inputs_embeds = self.splice_image_features(input_ids, inputs_embeds, features)
        elif input_ids is not None and past_key_values is None and (input_ids == self.config.image_token_id).any():
            raise ValueError("the text has <|vision_pad|> placeholders but no pixel_values were given")
        return self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, use_cache=use_cache, **kwargs,
        )


class AndesVLForConditionalGeneration(AndesVLPreTrainedModel, GenerationMixin):
    """AndesVL with a language-modelling head (tied to the input embeddings, as in Qwen3 <= 4B)."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: AndesVLConfig):
        super().__init__(config)
        self.model = AndesVLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_image_features(self, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values, image_grid_hw)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_hw: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        out = self.model(
            input_ids=input_ids, pixel_values=pixel_values, image_grid_hw=image_grid_hw,
            attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
            inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs,
        )
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.dtype == torch.bool:
            # a (batch, seq) mask: logits (n_kept, vocab) only where a loss is taken (training skips the rest)
            logits = self.lm_head(hidden[logits_to_keep])
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels,
                                      vocab_size=self.config.text_config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=out.past_key_values,
            hidden_states=out.hidden_states, attentions=out.attentions,
        )
