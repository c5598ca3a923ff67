"""Turn conversations (and plain texts) into training batches: ids, attention mask, labels, packed pixels.

Images are expanded by the processor, so the text is templated with the chat template, then tokenised through
`processor(images=..., text=...)`. The loss mask is derived from the ChatML structure of the resulting ids:

- `loss_on="assistant"` (SFT): only the tokens after `<|im_start|>assistant\\n`, up to and including the
  turn's `<|im_end|>`, carry a label; the template's `{% generation %}` block marks exactly these tokens
  (`tests/test_train.py` checks the two agree on text-only conversations).
- `loss_on="all"` (pre-training): every real text token carries a label; the image span
  (`<img>`, the `<|vision_pad|>` placeholders, `</img>`) and the padding do not.
Labels are aligned with `input_ids` (the model's loss shifts them by one position).

`pack_rows` lays the rows of a padded batch end to end instead (sequence packing): the same samples, the same loss,
less padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

IGNORE_INDEX = -100


def row_text(processor: Any, row: dict[str, Any]) -> tuple[str, list]:
    """(templated text, images) of a row: a conversation (`messages` + `images`) or a plain `text` document."""
    if row.get("messages"):
        text = processor.apply_chat_template(row["messages"], tokenize=False)
        return text, list(row.get("images") or [])
    if "text" in row:
        return row["text"] + processor.tokenizer.pad_token, []
    raise ValueError(f"a training row needs 'messages' (conversation) or 'text' (plain text); got {sorted(row)}")


def assistant_mask(input_ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """1 on the tokens of every assistant turn's content and its `<|im_end|>`, 0 elsewhere (any batch shape)."""
    start, end = tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    header = tokenizer.encode("assistant\n", add_special_tokens=False)
    ids = input_ids.tolist() if input_ids.dim() == 2 else [input_ids.tolist()]
    out = torch.zeros(len(ids), len(ids[0]), dtype=torch.long)
    for b, seq in enumerate(ids):
        i, n = 0, len(seq)
        while i < n:
            if seq[i] == start and seq[i + 1:i + 1 + len(header)] == header:
                j = i + 1 + len(header)
                while j < n and seq[j] != end:
                    out[b, j] = 1
                    j += 1
                if j < n:  # the closing <|im_end|> is part of the answer: it teaches the model to stop
                    out[b, j] = 1
                i = j
            i += 1
    return out if input_ids.dim() == 2 else out[0]


def text_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, processor: Any) -> torch.Tensor:
    """1 on real text tokens; 0 on padding and on the image span tokens."""
    tok = processor.tokenizer
    image_ids = [tok.convert_tokens_to_ids(t) for t in ("<img>", "</img>", "<|vision_pad|>")]
    keep = attention_mask.bool()
    for i in image_ids:
        keep &= input_ids != i
    return keep.long()


def collate(processor: Any, rows: Sequence[dict[str, Any]], loss_on: str = "all",
            pack: int = 0) -> dict[str, torch.Tensor]:
    """A right-padded batch: input_ids, attention_mask, labels (+ pixel_values, image_grid_hw with images); with
    `pack` > 0, the same samples packed into rows of `pack` tokens (`pack_rows`)."""
    if loss_on not in ("all", "assistant"):
        raise ValueError(f"loss_on must be 'all' or 'assistant', got {loss_on!r}")
    texts, images = zip(*(row_text(processor, r) for r in rows))
    has_images = any(images)
    batch = processor(images=list(images) if has_images else None, text=list(texts), return_tensors="pt",
                      padding=True, padding_side="right")
    ids, attn = batch["input_ids"], batch["attention_mask"]
    mask = text_mask(ids, attn, processor)
    if loss_on == "assistant":
        mask &= assistant_mask(ids, processor.tokenizer)
    out = {"input_ids": ids, "attention_mask": attn, "labels": ids.masked_fill(mask == 0, IGNORE_INDEX)}
    if has_images:
        out["pixel_values"], out["image_grid_hw"] = batch["pixel_values"], batch["image_grid_hw"]
    return pack_rows(out, [len(im) for im in images], pack, processor.tokenizer.pad_token_id) if pack else out


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins of indices whose lengths sum to at most `capacity`: longest first, each into the first bin it fits."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        k = next((k for k, r in enumerate(room) if r >= lengths[i]), len(bins))
        if k == len(bins):
            bins.append([])
            room.append(capacity)
        bins[k].append(i)
        room[k] -= lengths[i]
    return bins


def pack_rows(batch: dict[str, torch.Tensor], images_per_row: Sequence[int], capacity: int,
              pad_token_id: int) -> dict[str, torch.Tensor]:
    """Sequence packing: the samples of a right-padded batch laid end to end in rows of `capacity` tokens.

    Every sample's `position_ids` restart at 0 and the attention mask is left out, so transformers' attention keeps
    each sample to itself (`masking_utils.find_packed_sequence_indices`: a block-diagonal causal mask); the padding
    at the end of a row is a sample of its own with no labels. A sample's first label is dropped: in a padded row
    nothing predicts it, in a packed one the previous sample's last token would. The images are reordered to follow
    their samples. Loss and gradient equal the padded batch's up to float rounding (`tests/test_train.py`); with
    `loss_weighting="sample"` the weights are counted per sample (`loss.label_weights`).
    """
    ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    n = attn.sum(dim=1).tolist()
    capacity = max(capacity, *n)
    bins = first_fit_decreasing(n, capacity)
    out_ids = torch.full((len(bins), capacity), pad_token_id, dtype=ids.dtype)
    out_labels = torch.full((len(bins), capacity), IGNORE_INDEX, dtype=labels.dtype)
    positions = torch.zeros((len(bins), capacity), dtype=torch.long)
    image_order: list[int] = []
    first_image = [0]
    for k in images_per_row:
        first_image.append(first_image[-1] + k)
    for b, members in enumerate(bins):
        at = 0
        for i in members:
            out_ids[b, at:at + n[i]] = ids[i, :n[i]]
            out_labels[b, at + 1:at + n[i]] = labels[i, 1:n[i]]
            positions[b, at:at + n[i]] = torch.arange(n[i])
            image_order.extend(range(first_image[i], first_image[i + 1]))
            at += n[i]
        positions[b, at:] = torch.arange(capacity - at)
    out = {"input_ids": out_ids, "labels": out_labels, "position_ids": positions}
    if "pixel_values" in batch:
        grid = batch["image_grid_hw"]
        patches = (grid[:, 0] * grid[:, 1]).tolist()
        chunks = batch["pixel_values"].split(patches)
        out["pixel_values"] = torch.cat([chunks[j] for j in image_order])
        out["image_grid_hw"] = grid[image_order]
    return out


def sequence_length(processor: Any, row: dict[str, Any]) -> int:
    """Number of tokens of a row once images are expanded (without building pixel tensors)."""
    text, images = row_text(processor, row)
    if images:
        parts = text.split(processor.image_token)
        if len(parts) - 1 != len(images):
            raise ValueError(f"row has {len(parts) - 1} image markers but {len(images)} images")
        ip = processor.image_processor
        spans = [processor.image_span(ip.num_visual_tokens(*im.size)) for im in images]
        text = parts[0] + "".join(s + p for s, p in zip(spans, parts[1:], strict=True))
    return len(processor.tokenizer(text)["input_ids"])


def label_spans(processor: Any, row: dict[str, Any], loss_on: str = "assistant") -> list[tuple[str, bool]]:
    """(text, labelled) runs of a row's tokens, the image span collapsed into one run: for showing the loss mask."""
    batch = collate(processor, [row], loss_on)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    pad = processor.tokenizer.convert_tokens_to_ids("<|vision_pad|>")
    runs: list[tuple[str, bool]] = []
    i = 0
    while i < len(ids):
        if ids[i] == pad:
            j = i
            while j < len(ids) and ids[j] == pad:
                j += 1
            runs.append((f"[{j - i} x <|vision_pad|>]", False))
            i = j
            continue
        runs.append((processor.tokenizer.decode([ids[i]]), labels[i] != IGNORE_INDEX))
        i += 1
    return runs
