"""The EAGLE-style draft head: one decoder layer over the target's top-layer features (ANDESVL.md §4, EAGLE-2/HASS).

At position i the head reads the target's feature f_i (last hidden state, after the final norm) and the embedding
of the token at i+1, fuses them with a linear layer (EAGLE's `fc`), runs one transformer decoder layer (RMSNorm,
rotary attention with its own KV cache, SwiGLU MLP) and predicts f_{i+1}. The target's frozen LM head turns the
predicted feature into the draft token. `vocab` optionally restricts that LM head to the most frequent tokens of the
target's own outputs (a reduced draft vocabulary, as in EAGLE-3 / FR-Spec): a cheaper head, at the price of never
proposing the tokens outside it. The paper's exact head is unpublished: this is a re-creation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from .target import Target

HEAD_WEIGHTS = "draft_head.safetensors"
HEAD_CONFIG = "draft_head.json"


@dataclass
class HeadConfig:
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    qk_norm: bool = False
    draft_vocab: int = 0  # 0: the target's full LM head; else the number of most frequent tokens kept

    @classmethod
    def from_target(cls, target: Target, draft_vocab: int = 0) -> "HeadConfig":
        c = target.text_config
        return cls(hidden_size=c.hidden_size, num_heads=c.num_attention_heads, num_kv_heads=c.num_key_value_heads,
                   head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
                   intermediate_size=c.intermediate_size, rms_norm_eps=c.rms_norm_eps,
                   qk_norm=c.model_type.startswith("qwen3"), draft_vocab=draft_vocab)


class HeadCache:
    """The head's own KV cache: post-rotary keys and values, (1, kv_heads, T, head_dim)."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys = k if self.keys is None else torch.cat([self.keys, k], dim=2)
        self.values = v if self.values is None else torch.cat([self.values, v], dim=2)
        return self.keys, self.values

    def truncate(self, length: int) -> None:
        if self.keys is not None:
            self.keys, self.values = self.keys[:, :, :length], self.values[:, :, :length]


class DraftHead(nn.Module):
    """fc([embedding; feature]) -> one decoder layer -> predicted next feature."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = c = config
        h, hd = c.hidden_size, c.head_dim
        self.fc = nn.Linear(2 * h, h, bias=False)
        self.input_norm = nn.RMSNorm(h, eps=c.rms_norm_eps)
        self.q_proj = nn.Linear(h, c.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(h, c.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(h, c.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(c.num_heads * hd, h, bias=False)
        self.q_norm = nn.RMSNorm(hd, eps=c.rms_norm_eps) if c.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(hd, eps=c.rms_norm_eps) if c.qk_norm else nn.Identity()
        self.post_norm = nn.RMSNorm(h, eps=c.rms_norm_eps)
        self.gate_proj = nn.Linear(h, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(h, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, h, bias=False)
        self.register_buffer("vocab", torch.zeros(c.draft_vocab, dtype=torch.long))
        self.rotary: nn.Module | None = None
        self.lm_weight: torch.Tensor | None = None  # the target's LM head rows the head may propose (frozen)

    # ------------------------------------------------------------------ wiring to a target
    @classmethod
    def from_target(cls, target: Target, vocab: torch.Tensor | None = None, seed: int = 0) -> "DraftHead":
        """A fresh head sized for `target`; the decoder layer starts from a copy of the target's top layer."""
        torch.manual_seed(seed)
        head = cls(HeadConfig.from_target(target, 0 if vocab is None else len(vocab)))
        if vocab is not None:
            head.vocab.copy_(vocab)
        layers = getattr(target.backbone, "language_model", target.backbone).layers
        top = layers[-1].state_dict()
        names = {"input_layernorm.weight": "input_norm.weight", "post_attention_layernorm.weight": "post_norm.weight",
                 **{f"self_attn.{p}.weight": f"{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")},
                 "self_attn.q_norm.weight": "q_norm.weight", "self_attn.k_norm.weight": "k_norm.weight",
                 **{f"mlp.{p}.weight": f"{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")}}
        head.load_state_dict({names[k]: v for k, v in top.items() if k in names}, strict=False)
        with torch.no_grad():  # start as "feature in, feature out": fc = [small embedding part | identity]
            h = head.config.hidden_size
            head.fc.weight.zero_()
            head.fc.weight[:, h:] = torch.eye(h)
            head.fc.weight[:, :h].normal_(0, 0.02)
        head.attach(target)
        return head

    def attach(self, target: Target) -> "DraftHead":
        """Share the target's rotary embedding and (restricted) LM head; neither is trained nor saved."""
        if target.hidden_size != self.config.hidden_size:
            raise ValueError(f"head hidden size {self.config.hidden_size} != target hidden size {target.hidden_size}")
        self.rotary = target.rotary()
        weight = target.lm_head.weight.detach()
        self.lm_weight = weight[self.vocab] if len(self.vocab) else weight
        return self

    # ------------------------------------------------------------------ forward
    def forward(self, features: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor,
                cache: HeadCache | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted next features (B, q, h) for inputs (B, q, h); `mask` (q, cached + q) is boolean, True = attend.

        Without `mask` the attention is causal over the cache and the new positions.
        """
        if self.rotary is None:
            raise RuntimeError("call head.attach(target) (or DraftHead.from_target) before using the head")
        c = self.config
        b, q, _ = features.shape
        x = self.fc(torch.cat([embeds, features], dim=-1))
        hs = self.input_norm(x)
        query = self.q_norm(self.q_proj(hs).view(b, q, c.num_heads, c.head_dim)).transpose(1, 2)
        key = self.k_norm(self.k_proj(hs).view(b, q, c.num_kv_heads, c.head_dim)).transpose(1, 2)
        value = self.v_proj(hs).view(b, q, c.num_kv_heads, c.head_dim).transpose(1, 2)
        cos, sin = self.rotary(x, positions)
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        past = 0
        if cache is not None:
            past = len(cache)
            key, value = cache.append(key, value)
        if mask is None and (q > 1 or past == 0):
            mask = torch.ones(q, past + q, dtype=torch.bool).tril(past)
        attn = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=True)
        x = x + self.o_proj(attn.transpose(1, 2).reshape(b, q, -1))
        hs = self.post_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(hs)) * self.up_proj(hs))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Draft logits over the draft vocabulary (the full one when `vocab` is empty)."""
        return hidden @ self.lm_weight.T

    def token_ids(self, index: torch.Tensor) -> torch.Tensor:
        """Map draft-vocabulary indices to the target's token ids."""
        return self.vocab[index] if len(self.vocab) else index

    # ------------------------------------------------------------------ persistence (safetensors + JSON)
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / HEAD_WEIGHTS)
        (directory / HEAD_CONFIG).write_text(json.dumps(asdict(self.config), indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path, target: Target) -> "DraftHead":
        directory = Path(directory)
        if not (directory / HEAD_WEIGHTS).is_file():
            raise FileNotFoundError(f"no draft head in {directory} (expected {HEAD_WEIGHTS})")
        head = cls(HeadConfig(**json.loads((directory / HEAD_CONFIG).read_text())))
        head.load_state_dict(load_file(directory / HEAD_WEIGHTS))
        return head.attach(target).eval()


def frequent_tokens(labels: list[torch.Tensor], size: int, always: tuple[int, ...] = ()) -> torch.Tensor:
    """The `size` most frequent token ids among `labels` (the target's greedy outputs), plus `always` (EOS)."""
    if size <= 0:
        raise ValueError(f"draft vocabulary size must be > 0, got {size}")
    counts = torch.bincount(torch.cat(labels))
    order = torch.argsort(counts, descending=True, stable=True)
    keep = [int(t) for t in always]
    for t in order.tolist():
        if len(keep) >= size:
            break
        if t not in keep:
            keep.append(t)
    return torch.tensor(sorted(keep), dtype=torch.long)
