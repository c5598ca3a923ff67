"""One prefill per prompt, with the attention statistics every eviction policy needs (report §4, OKV).

The prompt minus its last token is run once through the model into a `DynamicCache`. A forward hook on each
decoder `self_attn` recomputes that layer's queries (post-RoPE, as the cached keys are) and accumulates, per KV
head, how much attention each cached position receives from three groups of queries:

- ``all``: every query (H2O's accumulated attention),
- ``window``: the last `window` queries (SnapKV's observation window),
- ``question``: the question's own tokens,
- ``question_peak``: the most any one question token gives it (a name in the question finds its mentions),
  and ``question_peak_model``, its mean over every layer and query head;
- ``question_lift_model``: that peak divided by the mean attention the position receives from all the queries
  that see it (model-wide): how much more the question looks at a position than the prompt usually does. Sinks and
  line breaks draw attention from every query and score low; the asked-about name scores high. Our OKV ranks by it.

Every policy and ratio is then applied to copies of this one cache; the last prompt token is fed by
`generate`, so even the first answer token is computed on the compressed cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache

SEGMENT_BREAKS = (".", "\n", "?", "!", ";")
PARAGRAPH_BREAKS = ("\n",)


@dataclass
class PromptLayout:
    """What each position of the cached prefix is (boolean masks of length `length`)."""

    length: int
    question: torch.Tensor
    boundaries: torch.Tensor  # image boundary tokens (<img>, </img>): OKV never evicts them
    visual: torch.Tensor  # visual placeholder tokens
    segments: torch.Tensor  # long: sentence index of each position
    paragraphs: torch.Tensor  # long: paragraph (line or block) index of each position


@dataclass
class Prefill:
    """The shared prefill: the full prefix cache, the per-layer attention scores and the prompt layout."""

    input_ids: torch.Tensor  # the whole prompt, (1, T)
    cache: DynamicCache  # keys/values of the first T-1 tokens
    scores: list[dict[str, torch.Tensor]]  # per layer: name -> (kv_heads, T-1)
    layout: PromptLayout
    seconds: float = 0.0
    extras: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.scores)


def make_layout(tokenizer, input_ids: torch.Tensor, question_start: int,
                boundary_tokens: tuple[str, ...] = ("<img>", "</img>"),
                visual_token: str = "<|vision_pad|>") -> PromptLayout:
    """Masks for the prefix `input_ids[0, :-1]`: the question is every position from `question_start` on."""
    ids = input_ids[0, :-1]
    length = ids.numel()
    if not 0 < question_start < length:
        raise ValueError(f"question_start={question_start} must fall inside the prefix of {length} tokens")
    question = torch.zeros(length, dtype=torch.bool)
    question[question_start:] = True
    vocab = tokenizer.get_vocab()
    boundary_ids = [vocab[t] for t in boundary_tokens if t in vocab]
    boundaries = torch.isin(ids, torch.tensor(boundary_ids, dtype=ids.dtype)) if boundary_ids else torch.zeros_like(question)
    visual = ids == vocab[visual_token] if visual_token in vocab else torch.zeros_like(question)
    pieces = tokenizer.batch_decode(ids.view(-1, 1))
    return PromptLayout(length, question, boundaries, visual, _spans(pieces, SEGMENT_BREAKS),
                        _spans(pieces, PARAGRAPH_BREAKS))


def _spans(pieces: list[str], breaks: tuple[str, ...]) -> torch.Tensor:
    """Index of the span (sentence, paragraph) each token belongs to; a break token closes its own span."""
    ends = torch.tensor([any(b in p for b in breaks) for p in pieces], dtype=torch.long)
    return torch.cumsum(ends, 0) - ends


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The language model's attention modules, in layer order (vision-tower attention is skipped)."""
    found = [m for name, m in model.named_modules()
             if name.endswith("self_attn") and hasattr(m, "layer_idx") and hasattr(m, "q_proj") and "vision" not in name]
    if not found:
        raise ValueError(f"{type(model).__name__} has no decoder self_attn modules with a layer_idx")
    return sorted(found, key=lambda m: m.layer_idx)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _column_scores(module: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   keys: torch.Tensor, question: torch.Tensor, window: int, chunk: int = 128) -> dict[str, torch.Tensor]:
    """Attention each key receives, summed over query groups, averaged over the query heads of each KV head."""
    _, length, _ = hidden.shape
    q = module.q_proj(hidden).view(1, length, -1, module.head_dim)
    if getattr(module, "q_norm", None) is not None:
        q = module.q_norm(q)
    q = q.transpose(1, 2)
    q = (q * cos.unsqueeze(1) + _rotate_half(q) * sin.unsqueeze(1))[0].float()  # (H, T, d)
    k = keys[0].float().repeat_interleave(module.num_key_value_groups, dim=0)  # (H, T, d)
    heads = q.shape[0]
    sums = {name: torch.zeros(heads, length) for name in ("all", "window", "question", "question_peak")}
    cols = torch.arange(length)
    for start in range(0, length, chunk):
        rows = torch.arange(start, min(start + chunk, length))
        logits = q[:, rows] @ k.transpose(1, 2) * module.scaling
        logits = logits.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
        probs = logits.softmax(-1)  # (H, r, T)
        sums["all"] += probs.sum(1)
        sums["window"] += probs[:, rows >= length - window].sum(1)
        asked = probs[:, question[rows]]
        sums["question"] += asked.sum(1)
        if asked.shape[1]:
            sums["question_peak"] = torch.maximum(sums["question_peak"], asked.amax(1))
    kv_heads = keys.shape[1]
    return {name: s.view(kv_heads, -1, length).mean(1) for name, s in sums.items()}


@torch.no_grad()
def prefill(model: nn.Module, input_ids: torch.Tensor, layout: PromptLayout, window: int = 32,
            **model_inputs) -> Prefill:
    """Run the prompt minus its last token once; return the cache and each layer's attention scores.

    `model_inputs` go to the forward (for a VLM: `pixel_values`, `image_grid_hw`).
    """
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"prefill takes one prompt of shape (1, T), got {tuple(input_ids.shape)}")
    if layout.length != input_ids.shape[1] - 1:
        raise ValueError(f"layout covers {layout.length} tokens but the prefix has {input_ids.shape[1] - 1}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    modules = attention_modules(model)
    scores: list[dict[str, torch.Tensor]] = [{} for _ in modules]
    cache = DynamicCache()

    def hook(module, args, kwargs, output):  # noqa: ARG001
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        cos, sin = kwargs["position_embeddings"]
        keys = kwargs["past_key_values"].layers[module.layer_idx].keys
        scores[module.layer_idx] = _column_scores(module, hidden, cos, sin, keys, layout.question, window)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in modules]
    start = time.perf_counter()
    try:
        model(input_ids=input_ids[:, :-1], past_key_values=cache, use_cache=True, **model_inputs)
    finally:
        for h in handles:
            h.remove()
    peak = torch.stack([s["question_peak"] for s in scores]).mean((0, 1))  # one ranking for the whole model
    seen_by = torch.arange(layout.length, 0, -1, dtype=torch.float32)  # queries that attend to each position
    usual = torch.stack([s["all"] for s in scores]).mean((0, 1)) / seen_by
    lift = peak / (usual + 1e-6)
    for s in scores:
        s["question_peak_model"] = peak.expand_as(s["question_peak"]).clone()
        s["question_lift_model"] = lift.expand_as(s["question_peak"]).clone()
    return Prefill(input_ids, cache, scores, layout, time.perf_counter() - start)
