"""A device table: the paper presets' decode speed and memory projected onto a phone-class SoC.

Projection, not measurement: decode tokens/s = usable bandwidth / bytes per token (the roofline of
`roofline.py`), memory = weights at the stated precision + KV cache at a stated context. The SoC figures are
stated assumptions (LPDDR5X at 10.7 GT/s on a 64-bit bus = 85 GB/s peak, as in 2025 flagship phone SoCs such
as the Dimensity 9500 the paper uses; a usable fraction of it), set beside the paper's ~200 tokens/s and up to
30.9% memory reduction (ANDESVL.md §4). Speculative decoding raises tokens per weight pass; it is a separate
multiplier here (the paper's 6.7x is a *peak* figure with OKV and compression together).
"""

from __future__ import annotations

from dataclasses import dataclass

from .roofline import kv_bytes_per_token, roofline_tokens_per_s


@dataclass(frozen=True)
class SoC:
    """A phone-class chip, by the numbers the decode roofline needs."""

    name: str
    peak_bandwidth_gbs: float
    usable_fraction: float  # of peak that a well-tuned decode kernel streams at

    @property
    def usable_gbs(self) -> float:
        return self.peak_bandwidth_gbs * self.usable_fraction


PHONE_SOC = SoC("phone SoC, LPDDR5X-10667 x64 (assumed)", 85.3, 0.6)
PAPER_DECODE_TOKENS_PER_S = 200.0  # model-card figure, on the phone (ANDESVL.md §4)
PAPER_MEMORY_REDUCTION = 0.309  # "up to 30.9%" memory reduction on device


@dataclass(frozen=True)
class LLMShape:
    """What a decode step reads: LLM parameters and the KV-cache geometry."""

    name: str
    params: float
    n_layers: int
    n_kv_heads: int
    head_dim: int


def project(shape: LLMShape, bpw: float, soc: SoC = PHONE_SOC, context: int = 1024, kv_bytes: float = 2.0,
            speculative_tokens_per_pass: float = 1.0) -> dict[str, float | str]:
    """Projected decode tokens/s and memory of one LLM at `bpw` bits per weight on `soc`."""
    if bpw <= 0 or context < 0 or speculative_tokens_per_pass < 1:
        raise ValueError(f"need bpw > 0, context >= 0, tokens per pass >= 1 (got {bpw}, {context}, "
                         f"{speculative_tokens_per_pass})")
    weights = shape.params * bpw / 8
    kv = kv_bytes_per_token(shape.n_layers, shape.n_kv_heads, shape.head_dim, kv_bytes) * context
    tps = roofline_tokens_per_s(soc.usable_gbs, weights + kv) * speculative_tokens_per_pass
    return {"model": shape.name, "bpw": bpw, "weights_gib": weights / 2**30, "kv_gib": kv / 2**30,
            "memory_gib": (weights + kv) / 2**30, "decode_tokens_per_s": tps}


def preset_llm_shape(name: str) -> LLMShape:
    """The LLM of a paper preset (parameters counted on the meta device, embedding once if tied)."""
    from ..presets import build_model, get_config

    text = get_config(name).text_config
    model = build_model(name)  # paper sizes build on the meta device: no memory, no time
    params = sum(p.numel() for p in model.model.language_model.parameters())
    if not getattr(text, "tie_word_embeddings", True):
        params += model.lm_head.weight.numel()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return LLMShape(name, float(params), text.num_hidden_layers, text.num_key_value_heads, head_dim)
