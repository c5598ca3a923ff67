"""Quality of a compressed language model: held-out perplexity and top-1 agreement with the fp32 model.

Agreement is the share of next-token positions where the compressed model's top-1 token equals the fp32 model's,
the "Top-1 overlap" style metric the paper quotes for its deployed models (ANDESVL.md §4). The text is the
project's own generated data (questions, answers, rationales of every domain), with a seed the tokenizer never saw.
"""

from __future__ import annotations

import math
import random

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.corpus import corpus_texts


def text_chunks(tokenizer: PreTrainedTokenizerBase, n_chunks: int, seq_len: int, seed: int = 1) -> list[torch.Tensor]:
    """`n_chunks` windows of `seq_len` tokens (each a (1, seq_len) tensor) of shuffled project-generated text."""
    texts = _shuffled_texts(n_chunks, seq_len, seed, per_domain=120)
    return _windows(tokenizer("\n".join(texts), add_special_tokens=False)["input_ids"], n_chunks, seq_len)


def chat_chunks(tokenizer: PreTrainedTokenizerBase, n_chunks: int, seq_len: int, seed: int = 2) -> list[torch.Tensor]:
    """Like `text_chunks`, but the text is chat turns: consecutive project texts as a user message and the assistant's
    reply, in the tokenizer's chat template. Calibrating on them keeps the template's tokens in the distribution a
    recovery learns (a model distilled on prose alone forgets how an answer starts)."""
    texts = _shuffled_texts(n_chunks, seq_len, seed, per_domain=60)
    turns = [tokenizer.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                           tokenize=False) for q, a in zip(texts[::2], texts[1::2])]
    return _windows(tokenizer("".join(turns), add_special_tokens=False)["input_ids"], n_chunks, seq_len)


def _shuffled_texts(n_chunks: int, seq_len: int, seed: int, per_domain: int) -> list[str]:
    if n_chunks < 1 or seq_len < 2:
        raise ValueError(f"need n_chunks >= 1 and seq_len >= 2, got {n_chunks}, {seq_len}")
    texts = corpus_texts(n_per_domain=max(4, n_chunks * seq_len // per_domain), seed=seed)
    random.Random(seed).shuffle(texts)
    return texts


def _windows(ids: list[int], n_chunks: int, seq_len: int) -> list[torch.Tensor]:
    """The first n_chunks * seq_len ids as (1, seq_len) windows."""
    need = n_chunks * seq_len
    if len(ids) < need:
        raise ValueError(f"generated text gave {len(ids)} tokens, {need} needed")
    return list(torch.tensor(ids[:need]).reshape(n_chunks, 1, seq_len))


@torch.inference_mode()
def top1_predictions(model: nn.Module, chunks: list[torch.Tensor]) -> list[torch.Tensor]:
    """The model's argmax next-token prediction at every position of every chunk."""
    return [model(input_ids=c).logits[0].argmax(-1) for c in chunks]


@torch.inference_mode()
def evaluate_lm(model: nn.Module, chunks: list[torch.Tensor],
                reference_top1: list[torch.Tensor] | None = None) -> dict[str, float]:
    """Perplexity of the chunks (next-token NLL, positions 1..T-1) and top-1 agreement with a reference."""
    nll, n, agree = 0.0, 0, 0
    for i, c in enumerate(chunks):
        logits = model(input_ids=c).logits[0].float()
        nll += float(nn.functional.cross_entropy(logits[:-1], c[0, 1:], reduction="sum"))
        n += c.shape[1] - 1
        if reference_top1 is not None:
            agree += int((logits.argmax(-1) == reference_top1[i]).sum())
    out = {"nll": nll / n, "perplexity": math.exp(min(nll / n, 50.0))}
    if reference_top1 is not None:
        out["agreement"] = agree / sum(c.shape[1] for c in chunks)
    return out
