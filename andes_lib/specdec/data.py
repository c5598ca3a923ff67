"""Self-distillation data for the draft head: the target's own greedy answers and its features (EAGLE, HASS).

The head must predict what the *target* will say, so it is trained on the target's greedy continuations of
generated prompts (`prompts.py`), not on human text: one batched `generate` per batch, whose hidden states (the
prefill's and each step's) are the top-layer features, with the target's greedy token at every position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..data.base import user_message
from .target import Target


@dataclass
class DistillData:
    """Per sequence: token ids (T,), features (T, h), the target's greedy next token at each position (T,)."""

    ids: list[torch.Tensor] = field(default_factory=list)
    features: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    prompt_lengths: list[int] = field(default_factory=list)
    layer_states: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # hidden states after layer k

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tokens(self) -> int:
        return sum(len(x) for x in self.ids)

    def subset(self, rows: list[int]) -> "DistillData":
        """The sequences at `rows`, in that order."""
        return DistillData([self.ids[i] for i in rows], [self.features[i] for i in rows],
                           [self.labels[i] for i in rows], [self.prompt_lengths[i] for i in rows],
                           {k: [v[i] for i in rows] for k, v in self.layer_states.items()})


def chat_ids(tokenizer, prompt: str) -> torch.Tensor:
    """A user prompt in the target's chat template, ready for generation: (1, T) token ids."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    return ids


@torch.no_grad()
def collect(target: Target, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 16,
            keep_layers: tuple[int, ...] = (), progress: bool = True) -> DistillData:
    """Greedy answers of the target to `prompts`, with features and greedy labels at every position.

    `keep_layers` also stores the hidden states after those decoder layers (inputs for a truncated draft model).
    """
    if not prompts:
        raise ValueError("collect needs at least one prompt")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else target.eos_ids[0]
    encoded = [chat_ids(tokenizer, p)[0] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths per batch: less padding
    parts: dict[int, tuple] = {}
    for start in tqdm(range(0, len(prompts), batch_size), desc="self-distillation data", disable=not progress):
        rows = order[start:start + batch_size]
        chunk = [encoded[i] for i in rows]
        width = max(len(x) for x in chunk)
        left = torch.full((len(chunk), width), pad)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, x in enumerate(chunk):
            left[i, width - len(x):], mask[i, width - len(x):] = x, 1
        out = target.model.generate(input_ids=left, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=pad, return_dict_in_generate=True,
                                    output_hidden_states=True)
        # the states generate computed on the way: the prefill's, then one per step for the token it was fed
        layers = (len(out.hidden_states[0]) - 1, *keep_layers)
        states = {k: torch.cat([out.hidden_states[0][k]] + [h[k] for h in out.hidden_states[1:]], dim=1)
                  for k in layers}
        for i, x in enumerate(chunk):
            answer = out.sequences[i, width:].tolist()
            for j, t in enumerate(answer):
                if t in target.eos_ids:
                    answer = answer[: j + 1]
                    break
            s = torch.cat([x, torch.tensor(answer, dtype=torch.long)])
            s = s[: len(x) + len(out.hidden_states) - 1]  # the last step's token was never fed back: no state
            at = slice(width - len(x), width - len(x) + len(s))
            feats = states[layers[0]][i, at].clone()
            parts[rows[i]] = (s, feats, target.lm_head(feats).argmax(-1), len(x),
                              {k: states[k][i, at].clone() for k in keep_layers})
    data = DistillData(layer_states={k: [] for k in keep_layers})
    for i in range(len(prompts)):  # back in the order of `prompts`
        s, feats, labels, prompt_length, states = parts[i]
        data.ids.append(s)
        data.features.append(feats)
        data.labels.append(labels)
        data.prompt_lengths.append(prompt_length)
        for k in keep_layers:
            data.layer_states[k].append(states[k])
    return data


def image_inputs(processor, row, thinking: bool = False) -> dict[str, torch.Tensor]:
    """Processor inputs (batch 1) for an image question of `andes_lib.data`, in the evaluation's chat format
    (`thinking`: the Thinking model's mode, which opens `<think>`)."""
    prompt = processor.apply_chat_template([user_message(row["question"], len(row["images"]))],
                                           add_generation_prompt=True, enable_thinking=thinking)
    return dict(processor(images=[[im.convert("RGB") for im in row["images"]]], text=[prompt], return_tensors="pt"))


@torch.no_grad()
def collect_images(target: Target, processor, rows, max_new_tokens: int = 64, thinking: bool = False,
                   progress: bool = True) -> DistillData:
    """A VLM target's greedy answers to image questions, with features and greedy labels at every position.

    One sample at a time (each has its own images): `generate`, then one teacher-forced pass with the image
    inputs. Visual positions carry the placeholder token's id; the head sees them as the target's prompt.
    """
    if not rows:
        raise ValueError("collect_images needs at least one image question")
    data = DistillData()
    for row in tqdm(rows, desc="self-distillation data (images)", disable=not progress):
        inputs = image_inputs(processor, row, thinking)
        prompt = inputs["input_ids"][0]
        out = target.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answer = out[0, len(prompt):].tolist()
        for j, t in enumerate(answer):
            if t in target.eos_ids:
                answer = answer[: j + 1]
                break
        ids = torch.cat([prompt, torch.tensor(answer, dtype=torch.long)])
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        feats = target.backbone(input_ids=ids[None], **extra).last_hidden_state[0]
        data.ids.append(ids)
        data.features.append(feats)
        data.labels.append(target.lm_head(feats).argmax(-1))
        data.prompt_lengths.append(len(prompt))
    return data


def image_encoder(processor, thinking: bool = False):
    """`row -> (input_ids, extra first-forward inputs)` for `bench.compare` on a VLM."""
    def encode(row) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = image_inputs(processor, row, thinking)
        ids = inputs.pop("input_ids")
        inputs.pop("attention_mask", None)
        return ids, inputs
    return encode
