"""Do the visual tokens carry the objects? A linear probe per visual token, after any stage (issue: make nano see).

Each visual token the LLM receives stands for a 2x2 block of patches. Its label is the object most of those patches
belong to (`collate_patch_labels`, the vision stage's own labels), or background. A linear classifier trained on the
projector outputs of some scenes and tested on others measures how readable shape and colour are at the LLM's input:
if they are not, no LLM can answer "what colour is the star?"; if they are and the model still fails, the language
side is what does not bind (`benchmarks/oracle_binding.py`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from ..model.projector import token_positions
from .patch_labels import COLOUR_CLASSES, SHAPE_CLASSES, collate_patch_labels, token_labels


@torch.no_grad()
def visual_tokens(model: Any, processor: Any, rows: Sequence[dict[str, Any]], batch_size: int = 32
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(projector outputs, shape ids, colour ids, (x, y) of the token in its image, -1 to 1), one row per visual
    token of every image of `rows`."""
    feats, shapes, colours, places = [], [], [], []
    for i in range(0, len(rows), batch_size):
        batch = collate_patch_labels(processor, rows[i:i + batch_size])
        feats.append(model.get_image_features(batch["pixel_values"], batch["image_grid_hw"]).float())
        s, c, _ = token_labels(batch)
        shapes.append(s)
        colours.append(c)
        places.append(token_positions(batch["image_grid_hw"]))
    return torch.cat(feats), torch.cat(shapes), torch.cat(colours), torch.cat(places)


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 classes: int, steps: int = 300, lr: float = 0.05, seed: int = 0) -> float:
    """Held-out accuracy of a softmax classifier (full-batch Adam on standardised features) on object tokens."""
    torch.manual_seed(seed)
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    head = torch.nn.Linear(x_train.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(x_train), y_train).backward()
            opt.step()
    with torch.no_grad():
        keep = y_test > 0  # object tokens only: background is most of the image and easy
        return float((head(x_test[keep]).argmax(-1) == y_test[keep]).float().mean())


def position_r2(x_train: torch.Tensor, xy_train: torch.Tensor, x_test: torch.Tensor, xy_test: torch.Tensor,
                ridge: float = 1.0) -> float:
    """Held-out R^2 of a ridge regression of each token's (x, y) from its row: how readable *where* a token is (1:
    exactly, 0: no better than the mean). Relations and GUI grounding need it."""
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    a, b = (x_train - mean) / std, (x_test - mean) / std
    a, b = torch.cat([a, torch.ones(len(a), 1)], 1), torch.cat([b, torch.ones(len(b), 1)], 1)
    w = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1]), a.T @ xy_train)
    residual = (b @ w - xy_test).pow(2).sum()
    return float(1 - residual / (xy_test - xy_test.mean(0)).pow(2).sum())


def object_share(x: torch.Tensor, shapes: torch.Tensor, colours: torch.Tensor) -> float:
    """Share of the object tokens' variance that their (shape, colour) explains: how much of what the LLM reads is
    the object. Linear probes can read an object that is 5% of the variance; attention has to find it first."""
    keep = shapes > 0
    x, key = x[keep].float(), (shapes[keep] * 64 + colours[keep])
    x = x - x.mean(0)
    fit = torch.zeros_like(x)
    for k in key.unique():
        fit[key == k] = x[key == k].mean(0)
    return float(fit.pow(2).sum() / x.pow(2).sum().clamp(min=1e-12))


def probe_visual_tokens(model: Any, processor: Any, train_rows: Sequence[dict[str, Any]],
                        test_rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Held-out shape and colour accuracy of linear probes on the visual tokens, how well their place reads
    (`position_r2`), the share of their variance that is the object (`object_share`), and their RMS beside the
    text's."""
    model.eval()
    x_tr, s_tr, c_tr, p_tr = visual_tokens(model, processor, train_rows)
    x_te, s_te, c_te, p_te = visual_tokens(model, processor, test_rows)
    with torch.no_grad():
        text_rms = model.get_input_embeddings().weight.float().pow(2).mean(-1).sqrt().mean()
    return {"shape": linear_probe(x_tr, s_tr, x_te, s_te, len(SHAPE_CLASSES)),
            "colour": linear_probe(x_tr, c_tr, x_te, c_te, len(COLOUR_CLASSES)),
            "position_r2": position_r2(x_tr, p_tr, x_te, p_te),
            "object_share": object_share(x_te, s_te, c_te),
            "visual_rms": float(x_te.pow(2).mean(-1).sqrt().mean()), "text_rms": float(text_rms),
            "object_tokens": int((s_te > 0).sum())}


@torch.no_grad()
def label_reader(labeler: Any | None, processor: Any, rows: Sequence[dict[str, Any]], batch_size: int = 25
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """What a presence question can rest on: the token-level shape confusion of the `vision` stage's labels (true x
    predicted, rows sum to 1, background first) and POPE answered straight from them ("is any token labelled a red
    star?") per hallucination task. `labeler=None` reads the true labels (the reader's ceiling: 1.0)."""
    confusion = torch.zeros(len(SHAPE_CLASSES), len(SHAPE_CLASSES))
    hits: dict[str, list[int]] = {}
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        labels = collate_patch_labels(processor, chunk)
        true_s, _, _ = token_labels(labels)
        if labeler is not None:
            s_logits, c_logits, *_ = labeler(labels["pixel_values"], labels["image_grid_hw"])
            labels = {"shape_labels": s_logits.argmax(-1), "colour_labels": c_logits.argmax(-1)}
        shapes, colours, _ = token_labels(labels)
        confusion.index_put_((true_s, shapes), torch.ones(len(shapes)), accumulate=True)
        per_image = len(shapes) // len(chunk)
        for k, row in enumerate(chunk):
            seen = set(zip(shapes[k * per_image:(k + 1) * per_image].tolist(),
                           colours[k * per_image:(k + 1) * per_image].tolist(), strict=True))
            query = json.loads(row["scene"])["query"]
            shape, colour = SHAPE_CLASSES.index(query["shape"]), query.get("colour")
            hit = any(s == shape and (colour is None or c == COLOUR_CLASSES.index(colour)) for s, c in seen)
            hits.setdefault(query["task"], []).append(int(("yes" if hit else "no") == row["answer"]))
    return confusion / confusion.sum(1, keepdim=True).clamp(min=1), {t: sum(h) / len(h) for t, h in hits.items()}
