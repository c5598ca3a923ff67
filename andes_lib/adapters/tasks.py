"""The N adapter tasks of the 1+N LoRA chapter (ANDESVL.md §4): one data domain and one answer contract each.

The paper ships "new skills" as adapters; which skills it ships is not published. Ours are the project's data
domains, each with the output contract a phone feature would need, which the shared base does not follow:

| task           | domain        | questions                        | the adapter must answer                       |
|----------------|---------------|----------------------------------|-----------------------------------------------|
| `object_list`  | general_vqa   | "Describe the objects"           | one object per line: `- red circle`           |
| `ocr`          | text_rich     | all                              | JSON `{"text": "<reading>"}`                  |
| `gui`          | gui           | grounding ("Where is ...?")      | a tap point `tap (x,y)` (0-1000 grid)         |
| `chart`        | chart         | all                              | the final answer in `\\boxed{...}`             |
| `multilingual` | multilingual  | English colour/shape questions   | the answer in Chinese                         |

The default set is `object_list`, `gui`, `chart` and `multilingual`. `ocr` is kept as a fifth, opt-in task: its adapter has nothing to build on,
because the default nano vision stage is trained on shapes, not glyphs (`03` section 7: reading cost shapes 16-25
points per patch within the budget), so it stays at 0 until the tower can read.

A task's score is strict: an output that breaks the contract scores 0; otherwise the domain's metric from
`andes_lib.eval` decides (exact match, ChartQA's relaxed numeric match) or, for `gui`, whether the tap point falls
inside the element's box (ScreenSpot's point-in-box rule). So part of an adapter's gain is the contract (format,
language) and part is reading the image; the chapters report both the score and the share of contract-valid answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets

from ..data.base import assistant_message, user_message
from ..data.render import COLOURS_ZH, SHAPES_ZH
from ..eval.metrics import last_boxed, parse_box, score

_TAP = re.compile(r"tap\s*\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)")


def _json_text(output: str) -> str | None:
    try:
        value = json.loads(output.strip())
    except ValueError:
        return None
    return value["text"] if isinstance(value, dict) and isinstance(value.get("text"), str) else None


def _tap_format(answer: str) -> str:
    box = parse_box(answer)
    if box is None:
        raise ValueError(f"GUI grounding answer is not a box: {answer!r}")
    return f"tap ({round((box[0] + box[2]) / 2)},{round((box[1] + box[3]) / 2)})"


def _tap(output: str) -> str | None:
    m = _TAP.search(output)
    return m.group(0) if m else None


def _tap_score(tap: str, target: str) -> float:
    m, box = _TAP.search(tap), parse_box(target)
    if m is None or box is None:
        return 0.0
    x, y = float(m.group(1)), float(m.group(2))
    return float(box[0] <= x <= box[2] and box[1] <= y <= box[3])


def _objects(caption: str) -> list[str]:
    """'a red circle and an orange star' -> ['red circle', 'orange star'] (the caption's objects, in its order)."""
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", caption.strip())
    return [re.sub(r"^(?:a|an)\s+", "", p.strip()) for p in parts if p.strip()]


def _object_list(caption: str) -> str:
    return "\n".join(f"- {o}" for o in _objects(caption))


def _listed(output: str) -> str | None:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines or not all(line.startswith("- ") for line in lines):
        return None
    return json.dumps(sorted(line[2:].strip().lower() for line in lines))


def _same_objects(value: str, caption: str) -> float:
    """1.0 when the listed objects are exactly the caption's (as a multiset: the order is free)."""
    return float(json.loads(value) == sorted(_objects(caption)))


def _to_chinese(answer: str) -> str:
    return {**COLOURS_ZH, **SHAPES_ZH}.get(answer, answer)


@dataclass(frozen=True)
class AdapterTask:
    """A named skill shipped as one LoRA adapter: which samples, what answer, how it is scored."""

    name: str
    domain: str
    description: str
    keep: Callable[[dict[str, Any]], bool]
    format: Callable[[str], str]  # original answer -> the contract's answer text
    extract: Callable[[str], str | None]  # model output -> the value inside the contract (None: broken)
    expected: Callable[[str], str] = str  # original answer -> the value the contract must carry
    score_fn: Callable[[str, str], float] | None = None  # (contract value, original answer), else the metric

    def score(self, output: str, target: str, metric: str) -> float:
        """Strict task score of one output against the original answer (0 when the contract is broken)."""
        value = self.extract(output)
        if value is None:
            return 0.0
        return self.score_fn(value, target) if self.score_fn else score(value, self.expected(target), metric)

    def valid(self, output: str) -> bool:
        """True when the output follows the contract (whatever its content)."""
        return self.extract(output) is not None


TASKS: dict[str, AdapterTask] = {t.name: t for t in (
    AdapterTask("object_list", "general_vqa",
                "list the objects in the image, one per line ('- red circle'), for a screen reader or an automation",
                keep=lambda r: r["task"] == "caption", format=_object_list, extract=_listed, score_fn=_same_objects),
    AdapterTask("ocr", "text_rich", "read signs, prices and receipts; reply as JSON {\"text\": ...}",
                keep=lambda r: True, format=lambda a: json.dumps({"text": a}, ensure_ascii=False),
                extract=_json_text),
    AdapterTask("gui", "gui", "GUI grounding: reply with a tap point tap (x,y) on the named element",
                keep=lambda r: r["task"] == "ground", format=_tap_format, extract=_tap,
                score_fn=_tap_score),
    AdapterTask("chart", "chart", "chart reading: max, min, values, differences; final answer in \\boxed{}",
                keep=lambda r: True, format=lambda a: f"\\boxed{{{a}}}", extract=last_boxed),
    AdapterTask("multilingual", "multilingual", "answer English colour and shape questions in Chinese",
                keep=lambda r: r["lang"] == "en" and r["task"] in ("color", "shape"), format=_to_chinese,
                extract=lambda o: o.strip() or None, expected=_to_chinese),
)}
# how many raw samples of the domain give about one kept sample
_OVERSAMPLE = {"object_list": 8, "ocr": 1, "gui": 4, "chart": 1, "multilingual": 5}
DEFAULT_TASKS: tuple[str, ...] = ("object_list", "gui", "chart", "multilingual")


def get_tasks(names: Sequence[str] | None = None) -> list[AdapterTask]:
    """The tasks called `names` (the default four, `DEFAULT_TASKS`, when None); unknown names raise a ValueError listing the valid ones."""
    if names is None:
        return [TASKS[n] for n in DEFAULT_TASKS]
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError("pass a list of task names, e.g. ['ocr', 'chart']")
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown adapter task(s) {unknown}; known: {sorted(TASKS)}")
    return [TASKS[n] for n in names]


def task_data(task: AdapterTask | str, split: str, n: int, seed: int = 0) -> datasets.Dataset:
    """`n` samples of the task from `split`: its domain's samples (generated once, then cached by
    `andes_lib.data`), filtered to the task's questions, with the contract's answer in `answer` and
    `messages`, and the original answer in `target`."""
    from ..data import build_dataset

    t = get_tasks([task])[0] if isinstance(task, str) else task
    raw = build_dataset(split, [t.domain], n * _OVERSAMPLE[t.name] + 16, seed, progress=False)
    keep = [i for i, r in enumerate(raw.select_columns(["task", "lang"])) if t.keep(r)][:n]
    if len(keep) < n:
        raise ValueError(f"task {t.name}: only {len(keep)} of {n} samples in the {split} split")
    data = raw.select(keep)

    def contract(row: dict[str, Any]) -> dict[str, Any]:
        answer = t.format(row["answer"])
        return {"target": row["answer"], "answer": answer,
                "messages": [user_message(row["question"], len(row["images"])), assistant_message(answer)]}

    return data.map(contract, desc=None)


def rows(dataset: datasets.Dataset) -> list[dict[str, Any]]:
    """A dataset as a list of row dicts (PIL images decoded), for training batches."""
    return [dataset[i] for i in range(len(dataset))]


def eval_view(dataset: datasets.Dataset) -> datasets.Dataset:
    """A task dataset with the original answer back in `answer` (what `andes_lib.eval.evaluate` expects)."""
    return dataset.remove_columns(["answer", "messages"]).rename_column("target", "answer")
