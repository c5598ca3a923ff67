"""Scoring functions, pure and per sample (ANDESVL.md §3, the official toolkit's answer extraction).

`extract_answer` follows the AndesVL evaluation toolkit: keep the text after `</think>`, then what follows
"The answer is", then the content of the last `\\boxed{}`. Metrics: exact match after normalisation, relaxed
numeric match (ChartQA's 5% tolerance), yes/no accuracy with POPE's precision/recall/F1, box IoU >= 0.5 for GUI
grounding, and Rouge-1 F1 for free text. `score(prediction, answer, metric)` chains extraction and metric.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

NUMBER_WORDS: dict[str, str] = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
ARTICLES = {"a", "an", "the"}
_PUNCT = string.punctuation + "，。！？：；、“”‘’（）《》"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BOX = re.compile(r"[\(\[]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*[\)\]]?\s*,?\s*[\(\[]?\s*"
                  r"(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*[\)\]]")
_ANSWER_IS = re.compile(r"the answer is\s*:?", re.IGNORECASE)
_CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")

Box = tuple[float, float, float, float]


def extract_answer(text: str) -> str:
    """The final answer inside a model's output: after `</think>`, after "The answer is", in the last `\\boxed{}`."""
    text = text.split("</think>")[-1]
    parts = _ANSWER_IS.split(text)
    if len(parts) > 1:
        text = parts[-1]
    boxed = last_boxed(text)
    if boxed is not None:
        text = boxed
    return text.strip().rstrip(".").strip()


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return text[i:]


def normalize(text: str) -> str:
    """Lower-case, drop punctuation, articles and spaces between CJK characters, spell numbers as digits."""
    text = text.lower().strip()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    words = [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ARTICLES]
    joined = " ".join(words)
    return "".join(joined.split()) if _CJK.search(joined) else joined


def exact_match(prediction: str, answer: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize(prediction) == normalize(answer))


def parse_number(text: str) -> float | None:
    """The first number in `text` (number words count, thousands commas ignored), or None."""
    words = re.sub(r"[a-z]+", lambda m: NUMBER_WORDS.get(m.group(), m.group()), text.lower())
    match = _NUMBER.search(re.sub(r"(?<=\d),(?=\d{3})", "", words))
    return float(match.group()) if match else None


def relaxed_match(prediction: str, answer: str, tolerance: float = 0.05) -> float:
    """Numeric answers: 1.0 within `tolerance` relative error (exact for 0); other answers: exact match."""
    target = parse_number(answer) if _NUMBER.fullmatch(answer.strip()) else None
    if target is None:
        return exact_match(prediction, answer)
    value = parse_number(prediction)
    if value is None:
        return 0.0
    return float(abs(value - target) <= tolerance * abs(target)) if target else float(value == 0)


def yes_no(text: str) -> str | None:
    """'yes' or 'no' from the first word of the text (Chinese 是/有 and 否/不/没 too), else None."""
    norm = normalize(text)
    if not norm:
        return None
    first = norm.split()[0]
    if first in ("yes", "true") or norm[0] in "是有对":
        return "yes"
    if first in ("no", "false") or norm[0] in "否不没":
        return "no"
    return None


def yesno_match(prediction: str, answer: str) -> float:
    """1.0 when both parse to the same yes/no (an unparseable prediction is wrong)."""
    pred = yes_no(prediction)
    return float(pred is not None and pred == yes_no(answer))


def pope_metrics(predictions: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """POPE's accuracy, precision, recall, F1 ("yes" is positive) and the yes-ratio of the predictions."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    preds, golds = [yes_no(p) for p in predictions], [yes_no(a) for a in answers]
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, golds, strict=True))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, golds, strict=True))
    fn = sum(p != "yes" and g == "yes" for p, g in zip(preds, golds, strict=True))
    correct = sum(p is not None and p == g for p, g in zip(preds, golds, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(preds)
    return {"accuracy": correct / n if n else 0.0, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": sum(p == "yes" for p in preds) / n if n else 0.0}


def parse_box(text: str) -> Box | None:
    """(x1, y1, x2, y2) from `(x1,y1),(x2,y2)` (box tokens optional) or `[x1, y1, x2, y2]`, sorted; else None."""
    match = _BOX.search(text)
    if not match:
        return None
    x1, y1, x2, y2 = (float(g) for g in match.groups())
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_match(prediction: str, answer: str, threshold: float = 0.5) -> float:
    """1.0 when the predicted box overlaps the reference box with IoU >= `threshold`."""
    gold = parse_box(answer)
    if gold is None:
        raise ValueError(f"reference answer is not a box: {answer!r}")
    pred = parse_box(prediction)
    return float(pred is not None and box_iou(pred, gold) >= threshold)


def tokens(text: str) -> list[str]:
    """Rouge tokens: lower-case words, each CJK character on its own."""
    return re.findall(r"[\u3000-\u9fff\uff00-\uffef]|[a-z0-9]+", text.lower())


def rouge1(prediction: str, answer: str) -> float:
    """Rouge-1 F1: unigram overlap between prediction and reference."""
    pred, gold = Counter(tokens(prediction)), Counter(tokens(answer))
    overlap = sum((pred & gold).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(pred.values()), overlap / sum(gold.values())
    return 2 * precision * recall / (precision + recall)


METRICS: dict[str, Callable[[str, str], float]] = {
    "exact": exact_match, "relaxed": relaxed_match, "yesno": yesno_match, "iou": iou_match, "rouge1": rouge1,
}


def score(prediction: str, answer: str, metric: str) -> float:
    """Extract the final answer from a raw model output, then score it with the named metric."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {list(METRICS)}")
    return METRICS[metric](extract_answer(prediction), answer)


def completion_text(completion: Any) -> str:
    """Text of a completion: a string, or TRL's conversational list of messages."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message["content"]
        parts.append(content if isinstance(content, str) else "".join(c.get("text") or "" for c in content))
    return "".join(parts)


def reward(completions: Sequence[Any], answer: Sequence[str], metric: Sequence[str], **_: Any) -> list[float]:
    """A TRL GRPO reward function: each completion scored against its row's answer with its row's metric."""
    return [score(completion_text(c), a, m) for c, a, m in zip(completions, answer, metric, strict=True)]
