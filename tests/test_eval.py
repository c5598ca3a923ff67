"""Metrics on hand-made cases, baselines, and the harness with an oracle model (plus one real nano smoke run)."""

from __future__ import annotations

import hashlib
import math

import plotly.graph_objects as go
import pytest
import torch
from transformers import BatchFeature

from andes_lib.data import build_dataset
from andes_lib.eval import (EvalResult, baselines, box_iou, chance_score, evaluate, exact_match, extract_answer,
                            iou_match, parse_box, plot_scores, pope_metrics, relaxed_match, reward, rouge1, score,
                            yes_no, yesno_match)


# ----------------------------------------------------------------------------- metrics
def test_extract_answer_like_the_official_toolkit():
    assert extract_answer("<think>\n7 + 5 = 12\n</think>\n\n12") == "12"
    assert extract_answer("Let me see. The answer is 12.") == "12"
    assert extract_answer("so 2+2 = 4. The answer is \\boxed{4}.") == "4"
    assert extract_answer("\\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_answer("<think>The answer is 3</think>\n\nThe answer is \\boxed{5}") == "5"
    assert extract_answer("  circle ") == "circle"


def test_exact_match_normalises():
    assert exact_match("The Circle.", "circle") == 1.0
    assert exact_match("two", "2") == 1.0
    assert exact_match("红色。", "红色") == 1.0
    assert exact_match("出 口", "出口") == 1.0
    assert exact_match("square", "circle") == 0.0
    assert exact_match("OPEN", "open") == 1.0


def test_relaxed_numeric_tolerance():
    assert relaxed_match("12", "12") == 1.0
    assert relaxed_match("13", "12") == 0.0  # 8% off
    assert relaxed_match("101", "100") == 1.0  # within ChartQA's 5%
    assert relaxed_match("$47", "47") == 1.0
    assert relaxed_match("three", "3") == 1.0
    assert relaxed_match("0", "0") == 1.0 and relaxed_match("1", "0") == 0.0
    assert relaxed_match("1,200", "1200") == 1.0
    assert relaxed_match("none", "7") == 0.0
    assert relaxed_match("left", "left") == 1.0 and relaxed_match("right", "left") == 0.0


def test_yes_no_and_pope():
    assert yes_no("Yes, there is.") == "yes" and yes_no("no") == "no" and yes_no("有") == "yes"
    assert yes_no("maybe") is None and yes_no("") is None
    assert yesno_match("Yes.", "yes") == 1.0 and yesno_match("maybe", "no") == 0.0
    m = pope_metrics(["yes", "no", "yes", "maybe"], ["yes", "yes", "no", "no"])
    assert m == pytest.approx({"accuracy": 0.25, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5})
    perfect = pope_metrics(["yes", "no"], ["yes", "no"])
    assert perfect["accuracy"] == perfect["f1"] == 1.0
    with pytest.raises(ValueError):
        pope_metrics(["yes"], ["yes", "no"])


def test_boxes_and_iou():
    assert parse_box("<|box_start|>(10,20),(30,40)<|box_end|>") == (10, 20, 30, 40)
    assert parse_box("x1,y1 is (30, 40), (10, 20)") == (10, 20, 30, 40)
    assert parse_box("[30, 40, 10, 20]") == (10, 20, 30, 40)
    assert parse_box("(10,20)") is None and parse_box("no box") is None
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    gold = "<|box_start|>(0,0),(100,100)<|box_end|>"
    assert iou_match("(0,0),(100,100)", gold) == 1.0
    assert iou_match("(0,0),(100,60)", gold) == 1.0  # IoU 0.6
    assert iou_match("(0,0),(100,40)", gold) == 0.0  # IoU 0.4
    assert iou_match("garbage", gold) == 0.0
    with pytest.raises(ValueError, match="not a box"):
        iou_match("(0,0),(1,1)", "circle")


def test_rouge1():
    assert rouge1("a red circle", "a red square") == pytest.approx(2 / 3)
    assert rouge1("red circle", "red circle") == 1.0 and rouge1("", "red") == 0.0
    assert rouge1("红色圆形", "红色方形") == pytest.approx(0.75)


def test_score_and_grpo_reward():
    assert score("<think>\n5 + 7 = 12\n</think>\n\nThe answer is \\boxed{12}.", "12", "relaxed") == 1.0
    assert score("No", "yes", "yesno") == 0.0
    with pytest.raises(ValueError, match="unknown metric"):
        score("1", "1", "bleu")
    completions = [[{"role": "assistant", "content": "\\boxed{4}"}], "five", [{"role": "assistant",
                                                                               "content": [{"type": "text",
                                                                                            "text": "left"}]}]]
    assert reward(completions, answer=["4", "5", "right"], metric=["relaxed", "relaxed", "exact"]) == [1.0, 1.0, 0.0]


# ----------------------------------------------------------------------------- baselines
def test_baselines_hand_made():
    rows = [
        {"domain": "hallucination", "task": "object", "answer": "yes", "options": ["yes", "no"], "metric": "yesno"},
        {"domain": "hallucination", "task": "object", "answer": "yes", "options": ["yes", "no"], "metric": "yesno"},
        {"domain": "hallucination", "task": "object", "answer": "no", "options": ["yes", "no"], "metric": "yesno"},
        {"domain": "chart", "task": "value", "answer": "3", "options": ["1", "2", "3", "4"], "metric": "relaxed"},
    ]
    table = baselines(rows).set_index("domain")
    assert table.loc["hallucination", "chance"] == pytest.approx(0.5)
    assert table.loc["hallucination", "majority"] == pytest.approx(2 / 3)
    assert table.loc["chart", "chance"] == pytest.approx(0.25) and table.loc["chart", "n"] == 1
    by_task = baselines(rows, by="task")
    assert list(by_task["majority_answer"]) == ["yes", "3"]
    assert math.isnan(chance_score("x", [], "exact"))
    with pytest.raises(ValueError):
        baselines(rows, by="lang")


def test_generated_data_has_low_chance_and_majority():
    ds = build_dataset("validation", n_per_domain=40, use_cache=False, progress=False)
    table = baselines(ds).set_index("domain")
    assert (table["chance"] <= 0.5 + 1e-9).all(), table
    assert (table["majority"] < 0.65).all(), table
    assert table["majority"].mean() < 0.45


# ----------------------------------------------------------------------------- harness
class FakeTokenizer:
    """Whole strings as tokens; ids 0/1 are pad/eos."""

    eos_token, pad_token_id, eos_token_id = "<|im_end|>", 0, 1

    def __init__(self):
        self.padding_side = "right"
        self.strings = ["<|endoftext|>", "<|im_end|>"]

    def add(self, text: str) -> int:
        self.strings.append(text)
        return len(self.strings) - 1

    def batch_decode(self, ids, skip_special_tokens=False):
        return ["".join(self.strings[i] for i in row.tolist()) for row in ids]


class OracleProcessor:
    """'Sees' an image by its bytes: answers correctly for the real images, 'unknown' for anything else."""

    def __init__(self, dataset):
        self.tokenizer = FakeTokenizer()
        self.image_processor = type("IP", (), {"image_mean": [0.5, 0.5, 0.5]})()
        self.answers = {self.key(r["question"], r["images"]): r["answer"] for r in dataset}
        self.prompts: list[str] = []

    @staticmethod
    def key(question, images):
        return question, tuple(hashlib.md5(i.convert("RGB").tobytes()).hexdigest() for i in images)

    def apply_chat_template(self, messages, add_generation_prompt=True, enable_thinking=False):
        (message,) = messages
        images = sum(c["type"] == "image" for c in message["content"])
        return "<image>" * images + message["content"][-1]["text"]

    def __call__(self, images=None, text=None, return_tensors="pt", padding=True):
        assert self.tokenizer.padding_side == "left"
        self.prompts += text
        images = images or [[] for _ in text]
        ids = [[self.tokenizer.add(self.answers.get(self.key(t.replace("<image>", ""), im), "unknown"))]
               for t, im in zip(text, images, strict=True)]
        ids = torch.tensor(ids)
        return BatchFeature({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                             "pixel_values": torch.zeros(len(text), 3)})


class EchoModel(torch.nn.Module):
    """Generates the token the processor put at the end of the prompt, then end-of-turn."""

    dtype = torch.float32

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def generate(self, input_ids, max_new_tokens, do_sample, **kwargs):
        assert do_sample is False
        return torch.cat([input_ids, input_ids[:, -1:], torch.ones_like(input_ids[:, -1:])], dim=1)


@pytest.fixture(scope="module")
def small_set():
    return build_dataset("test", n_per_domain=3, use_cache=False, progress=False)


def test_evaluate_oracle_scores_full_marks_and_blind_does_not(small_set, tmp_path):
    proc = OracleProcessor(small_set)
    result = evaluate(EchoModel(), proc, small_set, batch_size=4, progress=False)
    assert proc.tokenizer.padding_side == "right"  # restored
    assert len(result.records) == len(small_set)
    assert result.scores() == {d: 1.0 for d in dict.fromkeys(small_set["domain"])}
    assert result.overall == 1.0 and result.pope()["f1"] == 1.0
    assert set(result.scores("group")) == set(result.scores()) - {"chart"}
    table = result.table()
    assert list(table.columns) == ["domain", "n", "score", "metric"] and (table["n"] == 3).all()
    assert isinstance(result.figure(), go.Figure)
    loaded = EvalResult.load(result.save(tmp_path / "eval.json"))
    assert loaded.scores() == result.scores() and loaded.config["blind"] is False

    blind = evaluate(EchoModel(), OracleProcessor(small_set), small_set, batch_size=8, blind=True, progress=False)
    assert blind.config["blind"] == "blank" and blind.overall == 0.0
    none = OracleProcessor(small_set)
    evaluate(EchoModel(), none, small_set, domains=["gui"], n=2, blind="none", progress=False)
    assert len(none.prompts) == 2 and not any("<image>" in p for p in none.prompts)


def test_evaluate_selects_domains_and_n(small_set):
    result = evaluate(EchoModel(), OracleProcessor(small_set), small_set, domains=["chart", "gui"], n=2,
                      progress=False)
    assert [r["domain"] for r in result.records] == ["chart", "chart", "gui", "gui"]


def test_evaluate_bad_inputs(small_set, tmp_path):
    model, proc = EchoModel(), OracleProcessor(small_set)
    with pytest.raises(FileNotFoundError):
        evaluate(model, proc, tmp_path / "nowhere", progress=False)
    with pytest.raises(ValueError, match="lacks column"):
        evaluate(model, proc, small_set.remove_columns("metric"), progress=False)
    with pytest.raises(ValueError, match="blind"):
        evaluate(model, proc, small_set, blind="grey", progress=False)
    with pytest.raises(ValueError, match="domain"):
        evaluate(model, proc, small_set, domains=["ocr"], progress=False)
    with pytest.raises(FileNotFoundError):
        EvalResult.load(tmp_path / "missing.json")


def test_plot_scores_kinds():
    series = {"model": {"gui": 0.5, "chart": 0.7}, "blind": {"gui": 0.1, "chart": 0.2}}
    assert len(plot_scores(series).data) == 2 and plot_scores(series, kind="bar").data[0].type == "bar"
    with pytest.raises(ValueError):
        plot_scores(series, kind="pie")


def test_evaluate_real_nano_smoke():
    """The harness drives the real nano model and processor end to end (untrained: the score is near zero)."""
    import andes_lib

    ds = build_dataset("test", ["hallucination", "multi_image"], n_per_domain=1, use_cache=False, progress=False)
    result = evaluate(andes_lib.build_model("nano"), andes_lib.build_processor("nano"), ds, max_new_tokens=3,
                      progress=False)
    assert len(result.records) == 2 and all(isinstance(r["output"], str) for r in result.records)
    assert all(0.0 <= r["score"] <= 1.0 for r in result.records)
