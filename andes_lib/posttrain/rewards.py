"""Deterministic, verifiable rewards for the Thinking model's GRPO (ANDESVL.md §2, SPEC §3.4).

A Thinking completion is generated after the pre-filled `<think>\\n` (`enable_thinking=True`) and must read

    <rationale>\\n</think>\\n\\n<final answer><|im_end|>

- `format`: 1 when the completion is *well formed*: exactly one `</think>`, no second `<think>`, a non-empty
  rationale, a non-empty final answer of at most `max_answer_chars`, the whole at most `max_chars`, and the turn
  ended by the model itself (not cut at the token limit). Else 0.
- `accuracy`: the evaluation package's own scoring (`andes_lib.eval.metrics.score`: text after `</think>`, then
  "The answer is", then the last `\\boxed{}`; the sample's metric) of a well-formed completion; 0 for a
  malformed one. Gating on the format closes the obvious hacks: an enormous completion that lists every
  possible answer, or one that never closes its thought, earns nothing.

TRL's GRPOTrainer decodes completions with `skip_special_tokens=True`, which deletes `</think>` and
`<|im_end|>`; the reward functions made by `thinking_rewards(tokenizer)` therefore re-decode the
`completion_ids` TRL also passes, keeping the special tokens. On plain strings (the unit tests) they read the
string as is, with `<|im_end|>` (or `finished=`) marking a completion that ended on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..eval.metrics import completion_text, score

THINK_START, THINK_END = "<think>", "</think>"
END_OF_TURN = ("<|im_end|>", "<|endoftext|>")
MAX_ANSWER_CHARS = 40  # a final answer is a word, a number or a short phrase, never a list of candidates
MAX_CHARS = 2000  # a nano completion is < 100 tokens; far longer means a runaway generation


@dataclass(frozen=True)
class ThinkingParse:
    """A completion split into rationale and final answer, and whether it is well formed (`reason` if not)."""

    rationale: str
    answer: str
    well_formed: bool
    reason: str = ""


def parse_thinking(text: str, finished: bool | None = None, max_answer_chars: int = MAX_ANSWER_CHARS,
                   max_chars: int = MAX_CHARS) -> ThinkingParse:
    """Split `rationale </think> answer` and check the format (see the module docstring).

    `finished`: whether the generation ended on its own; None reads it from an end-of-turn token in the text
    (and treats a text without one as finished, so hand-written strings need no special tokens).
    """
    if not isinstance(text, str):
        raise TypeError(f"expected the completion text, got {type(text).__name__}")
    ended = any(t in text for t in END_OF_TURN)
    for stop in END_OF_TURN:
        text = text.split(stop)[0]
    finished = True if finished is None else (finished or ended)
    stripped = text.lstrip()  # a completion generated without the pre-filled "<think>" starts with it
    body = stripped[len(THINK_START):] if stripped.startswith(THINK_START) else text

    def bad(reason: str, rationale: str = "", answer: str = "") -> ThinkingParse:
        return ThinkingParse(rationale.strip(), answer.strip(), False, reason)

    if len(text) > max_chars:
        return bad(f"longer than {max_chars} characters")
    if not finished:
        return bad("cut at the token limit (no end of turn)")
    if body.count(THINK_END) != 1:
        return bad("no </think>" if THINK_END not in body else "several </think>")
    rationale, answer = body.split(THINK_END)
    if THINK_START in body:
        return bad("a second <think>", rationale, answer)
    if not rationale.strip():
        return bad("empty rationale", rationale, answer)
    if not answer.strip():
        return bad("empty final answer", rationale, answer)
    if len(answer.strip()) > max_answer_chars:
        return bad(f"final answer longer than {max_answer_chars} characters", rationale, answer)
    return ThinkingParse(rationale.strip(), answer.strip(), True)


def format_score(text: str, finished: bool | None = None, **limits: Any) -> float:
    """1.0 for a well-formed Thinking completion, else 0.0."""
    return float(parse_thinking(text, finished, **limits).well_formed)


def accuracy_score(text: str, answer: str, metric: str, finished: bool | None = None, **limits: Any) -> float:
    """The evaluation metric of a well-formed completion's final answer (0.0 when malformed)."""
    parsed = parse_thinking(text, finished, **limits)
    if not parsed.well_formed:
        return 0.0
    for stop in END_OF_TURN:
        text = text.split(stop)[0]
    return score(text, answer, metric)


# ----------------------------------------------------------------------------- TRL reward functions
def _texts(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None,
           tokenizer: Any) -> list[tuple[str, bool | None]]:
    """(raw text with special tokens, finished) per completion; from the ids when both are available."""
    if completion_ids is not None and tokenizer is not None:
        eos = {tokenizer.convert_tokens_to_ids(t) for t in END_OF_TURN} - {None, tokenizer.unk_token_id}
        return [(tokenizer.decode(list(ids), skip_special_tokens=False), any(i in eos for i in ids))
                for ids in completion_ids]
    return [(completion_text(c), None) for c in completions]


def thinking_rewards(tokenizer: Any = None, max_answer_chars: int = MAX_ANSWER_CHARS,
                     max_chars: int = MAX_CHARS) -> list[Callable[..., list[float]]]:
    """[accuracy_reward, format_reward]: GRPO reward functions (`f(completions, answer, metric, completion_ids)`).

    With a tokenizer they read TRL's `completion_ids` (special tokens kept); without, the completion strings.
    """
    limits = {"max_answer_chars": max_answer_chars, "max_chars": max_chars}

    def accuracy_reward(completions: Sequence[Any], answer: Sequence[str], metric: Sequence[str],
                        completion_ids: Sequence[Sequence[int]] | None = None, **_: Any) -> list[float]:
        texts = _texts(completions, completion_ids, tokenizer)
        return [accuracy_score(t, a, m, f, **limits) for (t, f), a, m in zip(texts, answer, metric, strict=True)]

    def format_reward(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
                      **_: Any) -> list[float]:
        return [format_score(t, f, **limits) for t, f in _texts(completions, completion_ids, tokenizer)]

    return [accuracy_reward, format_reward]
