"""A small draft *model* for transformers' assisted generation: the target's first layers, distilled (baseline).

`generate(assistant_model=...)` needs a standalone causal LM that shares the target's tokenizer. Ours keeps the
target's embeddings, its first `n_layers` decoder layers and its final norm and LM head (a layer-skip draft), then
trains the top kept layer and the norm to reproduce the target's top-layer features from the stored hidden states
after layer `n_layers - 1`, with the same self-distillation loss as the draft head (`train.distill_loss`).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from .data import DistillData
from .train import TrainHistory, batch_stream, distill_loss, optimizer, update, vocab_index


def build_assistant(model: nn.Module, n_layers: int) -> nn.Module:
    """The first `n_layers` decoder layers of a causal LM (plus embeddings, final norm, tied LM head), copied."""
    total = model.config.num_hidden_layers
    if not 1 <= n_layers < total:
        raise ValueError(f"n_layers must be in [1, {total - 1}] for a {total}-layer target, got {n_layers}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = n_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:n_layers]
    assistant = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    missing, _ = assistant.load_state_dict(model.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"weights missing from the truncated copy: {missing[:4]}")
    assistant.tie_weights()
    assistant.generation_config = copy.deepcopy(model.generation_config)
    return assistant.eval()


def train_assistant(assistant: nn.Module, data: DistillData, vocab: torch.Tensor, steps: int = 100,
                    batch_size: int = 8, lr: float = 3e-4, ce_weight: float = 0.1, max_len: int = 256,
                    seed: int = 0, progress: bool = True) -> TrainHistory:
    """Train the top layer and final norm of `assistant` on `data` (which must keep layer `n_layers - 1`)."""
    n = assistant.config.num_hidden_layers
    if n - 1 not in data.layer_states:
        raise ValueError(f"the data must keep the hidden states after layer {n - 1}: collect(..., keep_layers=({n - 1},))")
    states = data.layer_states[n - 1]
    torch.manual_seed(seed)
    backbone = assistant.model
    top, norm = backbone.layers[-1], backbone.norm
    for p in assistant.parameters():
        p.requires_grad_(False)
    params = list(top.parameters()) + list(norm.parameters())
    for p in params:
        p.requires_grad_(True)
    lm_weight = assistant.get_output_embeddings().weight.detach()
    if len(vocab):
        lm_weight = lm_weight[vocab]
    index = vocab_index(vocab, assistant.get_output_embeddings().weight.shape[0])
    opt, sched = optimizer(params, lr, steps)
    history, t0 = TrainHistory(), time.perf_counter()
    assistant.train()
    stream = batch_stream(data, index, steps, batch_size, max_len, seed, "draft model", progress)
    for step, (rows, _, feats, labels, valid) in enumerate(stream):
        hidden = torch.zeros_like(feats)
        for i, r in enumerate(rows):
            m = min(hidden.shape[1], len(states[r]))
            hidden[i, :m] = states[r][:m]
        positions = torch.arange(hidden.shape[1]).unsqueeze(0)
        out = top(hidden, attention_mask=None, position_ids=positions,
                  position_embeddings=backbone.rotary_emb(hidden, positions))
        out = out[0] if isinstance(out, tuple) else out
        loss = distill_loss(norm(out), feats, labels, valid, lm_weight, ce_weight)
        update(opt, sched, params, loss["loss"])
        history.rows.append({"step": step + 1, **{k: v.item() for k, v in loss.items()}})
    assistant.eval()
    for p in assistant.parameters():
        p.requires_grad_(False)
    history.seconds = time.perf_counter() - t0
    return history
