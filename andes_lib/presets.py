"""Presets: `nano` (trains on a laptop CPU), the paper's four sizes, and `smol` (a real pretrained LLM).

Paper sizes follow ANDESVL.md §1 / SPEC §1.1-1.3: SigLIP2-Base + Qwen3-0.6B (0.6B) and AIMv2-Large +
Qwen3-0.6B / 1.7B / 4B (1B / 2B / 4B). They are built on the `meta` device by default, so parameters and
memory can be counted without allocating; pass `device="cuda"` on a GPU to get real (random) weights.
"""

from __future__ import annotations

import torch

from .config import AndesVisionConfig, AndesVLConfig
from .model.modeling import AndesVLForConditionalGeneration
from .processing.processor import AndesVLImageProcessor, AndesVLProcessor
from .processing.tokenizer import IMAGE_END, IMAGE_PAD, IMAGE_START, load_tokenizer

PAPER_PARAMS = {"andesvl-0.6b": 0.695e9, "andesvl-1b": 0.927e9, "andesvl-2b": 2.055e9, "andesvl-4b": 4.360e9}
PRESETS = ("nano", "smol", *PAPER_PARAMS)

SIGLIP2_BASE = dict(style="siglip2", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, patch_size=16, position_grid=32, norm_eps=1e-6,
                    image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
AIMV2_LARGE = dict(style="aimv2", hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                   num_attention_heads=8, patch_size=14, position_grid=32, norm_eps=1e-5)
NANO_VISION = dict(style="aimv2", hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                   num_attention_heads=4, patch_size=8, position_grid=16, norm_eps=1e-5)


def qwen3(hidden: int, layers: int, heads: int, ffn: int, kv_heads: int = 8, head_dim: int = 128,
          vocab: int = 151936, max_positions: int = 40960) -> dict:
    """A stock Qwen3 text config (SPEC §1.2): QK-norm, RoPE theta 1e6, tied embeddings."""
    return dict(model_type="qwen3", hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv_heads, head_dim=head_dim, intermediate_size=ffn, vocab_size=vocab,
                max_position_embeddings=max_positions, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
                pad_token_id=151643)


PAPER = {
    "andesvl-0.6b": (SIGLIP2_BASE, qwen3(1024, 28, 16, 3072)),
    "andesvl-1b": (AIMV2_LARGE, qwen3(1024, 28, 16, 3072)),
    "andesvl-2b": (AIMV2_LARGE, qwen3(2048, 28, 16, 6144)),
    "andesvl-4b": (AIMV2_LARGE, qwen3(2560, 36, 32, 9728)),
}
NANO_MAX_SIZE = 160  # pixel budget of nano: at most (160 / 16)^2 = 100 visual tokens per image


def _check(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"preset name must be a string, got {type(name).__name__}")
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


def get_config(name: str) -> AndesVLConfig:
    """The `AndesVLConfig` of a preset (for `smol`, the text part is read from the GGUF when the model loads)."""
    _check(name)
    if name in PAPER:
        vision, text = PAPER[name]
        return AndesVLConfig(vision_config=AndesVisionConfig(**vision), text_config=dict(text))
    tok = load_tokenizer()
    ids = tok.convert_tokens_to_ids
    text = qwen3(256, 4, 4, 768, kv_heads=2, head_dim=64, vocab=len(tok), max_positions=2048)
    text.update(bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    # visual rows held at RMS 1 (text embeddings: ~0.05), plus each token's place: see PixelShuffleProjector and
    # benchmarks/oracle_binding.py
    return AndesVLConfig(vision_config=AndesVisionConfig(**NANO_VISION), text_config=text,
                         image_token_id=ids(IMAGE_PAD), image_start_token_id=ids(IMAGE_START),
                         image_end_token_id=ids(IMAGE_END), projector_output_rms=1.0, projector_place_scale=0.7)


def build_image_processor(name: str) -> AndesVLImageProcessor:
    """Image processor with the preset's patch size, pixel budget and normalisation."""
    _check(name)
    vision = PAPER[name][0] if name in PAPER else NANO_VISION
    mean_std = {k: vision[k] for k in ("image_mean", "image_std") if k in vision}
    max_size = 1792 if name in PAPER else NANO_MAX_SIZE
    return AndesVLImageProcessor(patch_size=vision["patch_size"], max_size=max_size, **mean_std)


def build_processor(name: str) -> AndesVLProcessor:
    """Processor (image processor + tokenizer + ChatML template) for `nano` or `smol`."""
    _check(name)
    if name in PAPER:
        raise ValueError(
            f"{name} is an accounting preset (meta device): its tokenizer is the 151,936-token Qwen3 vocabulary, "
            "not shipped here; use build_image_processor() for its image sizing"
        )
    if name == "smol":
        from .model.smol import load_smol_tokenizer  # lazy: converts the GGUF on first use
        tokenizer = load_smol_tokenizer()
    else:
        tokenizer = load_tokenizer()
    return AndesVLProcessor(build_image_processor(name), tokenizer)


def build_model(name: str, device: str | torch.device | None = None, seed: int = 0):
    """Build a preset. Paper sizes default to the `meta` device; `nano` is random-initialised from `seed`.

    `smol` returns the real SmolLM2-135M-Instruct text backbone with a fresh vision tower and projector.
    """
    _check(name)
    if name == "smol":
        return build_smol(seed)
    device = device if device is not None else ("meta" if name in PAPER else "cpu")
    torch.manual_seed(seed)
    with torch.device(device):
        model = AndesVLForConditionalGeneration(get_config(name))
    return model.eval()


def build_smol(seed: int = 0) -> AndesVLForConditionalGeneration:
    from .model.smol import load_smol_llm, load_smol_tokenizer

    llm, tok = load_smol_llm(), load_smol_tokenizer()
    ids = tok.convert_tokens_to_ids
    text = llm.config.to_dict()
    text.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = AndesVLConfig(vision_config=AndesVisionConfig(**NANO_VISION), text_config=text,
                           image_token_id=ids(IMAGE_PAD), image_start_token_id=ids(IMAGE_START),
                           image_end_token_id=ids(IMAGE_END))
    torch.manual_seed(seed)
    model = AndesVLForConditionalGeneration(config)
    model.model.language_model.load_state_dict(llm.model.state_dict())
    model.tie_weights()
    return model.eval()


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Parameters per component (shared tensors counted once), works on the meta device."""
    base = model.model
    parts = {"vision_tower": base.vision_tower, "projector": base.projector, "language_model": base.language_model}
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
    counts["lm_head (untied)"] = 0 if model.config.tie_word_embeddings else model.lm_head.weight.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
