"""KV-cache eviction (report §4, OKV): policies, budgets, the protected question, generate on the evicted cache."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

import andes_lib
from andes_lib import kv
from andes_lib.kv.tasks import encode, encode_image, score

RATIOS = (0.25, 0.5, 0.75, 0.9)


@pytest.fixture(scope="module")
def nano():
    return andes_lib.build_model("nano", seed=0), andes_lib.build_processor("nano")


@pytest.fixture(scope="module")
def text_prefill(nano):
    model, proc = nano
    sample = kv.make_samples("decisions", 1, seed=0)[0]
    ids, start = encode(proc.tokenizer, sample)
    return kv.prefill(model, ids, kv.make_layout(proc.tokenizer, ids, start))


@pytest.fixture(scope="module")
def image_prefill(nano):
    model, proc = nano
    image = Image.new("RGB", (128, 128), (200, 40, 40))
    batch, start = encode_image(proc, image, "What colour is it?")
    layout = kv.make_layout(proc.tokenizer, batch["input_ids"], start)
    extra = {k: v for k, v in batch.items() if k in ("pixel_values", "image_grid_hw")}
    return kv.prefill(nano[0], batch["input_ids"], layout, **extra)


def test_ratio_zero_equals_plain_generation(nano, text_prefill) -> None:
    model, _ = nano
    ids = text_prefill.input_ids
    plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    for policy in kv.POLICIES:
        cache, _ = kv.evict(text_prefill, policy, 0.0)
        assert torch.equal(kv.generate_evicted(model, text_prefill, cache, 12), plain[:, ids.shape[1]:]), policy


def test_evicted_generation_is_what_a_manual_decode_gives(nano, text_prefill) -> None:
    """generate on the compressed cache = a hand loop that feeds true positions; so positions are right."""
    model, _ = nano
    cache, _ = kv.evict(text_prefill, "snapkv", 0.5)
    manual_cache, _ = kv.evict(text_prefill, "snapkv", 0.5)
    ids, length = text_prefill.input_ids, text_prefill.input_ids.shape[1]
    token, manual = ids[:, -1:], []
    with torch.no_grad():
        for step in range(6):
            logits = model(input_ids=token, past_key_values=manual_cache, position_ids=torch.tensor([[length - 1 + step]]),
                           use_cache=True).logits
            token = logits[:, -1:].argmax(-1)
            manual.append(int(token))
    assert kv.generate_evicted(model, text_prefill, cache, 6)[0].tolist() == manual


@pytest.mark.parametrize("policy", list(kv.POLICIES))
def test_kept_count_matches_budget_per_layer(text_prefill, policy: str) -> None:
    length = text_prefill.layout.length
    for ratio in RATIOS:
        cache, kept = kv.evict(text_prefill, policy, ratio)
        budget = kv.keep_count(length, ratio)
        assert budget == length - round(ratio * length)
        assert len(kept) == len(cache.layers) == text_prefill.num_layers
        for idx, layer in zip(kept, cache.layers, strict=True):
            assert idx.shape == (layer.keys.shape[1], budget)
            assert layer.keys.shape[-2] == layer.values.shape[-2] == budget
            assert all(len(set(row.tolist())) == budget for row in idx), "a position kept twice"


@pytest.mark.parametrize("policy", list(kv.POLICIES))
def test_question_tokens_survive_every_policy(text_prefill, image_prefill, policy: str) -> None:
    for pre in (text_prefill, image_prefill):
        question = set(pre.layout.question.nonzero().flatten().tolist())
        assert question
        for ratio in RATIOS:
            if kv.keep_count(pre.layout.length, ratio) < len(question):
                continue
            for idx in kv.kept_positions(pre, policy, ratio):
                for row in idx:
                    assert question <= set(row.tolist()), (policy, ratio)


def test_okv_keeps_image_boundaries_and_policies_differ(image_prefill) -> None:
    layout = image_prefill.layout
    assert int(layout.boundaries.sum()) == 2 and int(layout.visual.sum()) > 0
    bounds = set(layout.boundaries.nonzero().flatten().tolist())
    kept = {p: kv.kept_positions(image_prefill, p, 0.5) for p in kv.POLICIES}
    assert all(bounds <= set(row.tolist()) for idx in kept["okv"] for row in idx)
    assert not torch.equal(kept["streaming"][0], kept["h2o"][0])
    assert not torch.equal(kept["snapkv"][0], kept["okv"][0])


def test_image_prompt_generates_on_evicted_cache(nano, image_prefill) -> None:
    caches = [kv.evict(image_prefill, p, 0.5)[0] for p in kv.POLICIES]
    out = kv.generate_evicted(nano[0], image_prefill, kv.stack_caches(caches), 4)
    assert out.shape == (len(kv.POLICIES), 4)


def test_cache_bytes_are_measured_and_halve_at_half_eviction(text_prefill) -> None:
    full = kv.cache_bytes(text_prefill.cache)
    layer = text_prefill.cache.layers[0]
    assert full == 2 * len(text_prefill.cache.layers) * layer.keys.numel() * layer.keys.element_size()
    half = kv.cache_bytes(kv.evict(text_prefill, "okv", 0.5)[0])
    assert math.isclose(half / full, 0.5, abs_tol=1 / text_prefill.layout.length)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_bad_ratio_is_refused(text_prefill, ratio) -> None:
    with pytest.raises(ValueError, match="eviction ratio"):
        kv.evict(text_prefill, "okv", ratio)


def test_unknown_policy_and_too_high_ratio_are_refused(text_prefill, image_prefill) -> None:
    with pytest.raises(ValueError, match="unknown eviction policy 'lru'"):
        kv.evict(text_prefill, "lru", 0.5)
    with pytest.raises(ValueError, match="question tokens"):
        kv.evict(image_prefill, "okv", 0.95)
    with pytest.raises(ValueError, match="unknown task"):
        kv.make_samples("summary", 2)


@pytest.fixture(scope="module")
def restate_prefill(nano):
    model, proc = nano
    sample = kv.make_samples("restate", 1, seed=0, scale=0.75)[0]
    ids, start = encode(proc.tokenizer, sample)
    return kv.prefill(model, ids, kv.make_layout(proc.tokenizer, ids, start))


def test_okv_keeps_whole_paragraphs_ranked_once_for_the_model(restate_prefill) -> None:
    pre, layout = restate_prefill, restate_prefill.layout
    kept = kv.kept_positions(pre, "okv", 0.5)
    first = kept[0][0]
    assert all(torch.equal(row, first) for idx in kept for row in idx)  # one ranking: every layer and head agree
    doc = ~layout.question & (torch.arange(layout.length) >= 4)  # outside the protected question and sinks
    mask = torch.zeros(layout.length, dtype=torch.bool)
    mask[first] = True
    partial = [int(p) for p in layout.paragraphs[doc].unique() if 0 < mask[doc & (layout.paragraphs == p)].float().mean() < 1]
    assert len(partial) <= 1  # whole paragraphs, save the one the budget cuts
    peak = torch.stack([s["question_peak"] for s in pre.scores]).mean((0, 1))
    assert torch.allclose(pre.scores[0]["question_peak_model"][0], peak)
    assert all((s["question_peak"] <= s["question"] + 1e-6).all() for s in pre.scores)  # a max within a sum
    usual = torch.stack([s["all"] for s in pre.scores]).mean((0, 1)) / torch.arange(layout.length, 0, -1)
    lift = pre.scores[0]["question_lift_model"][0]
    assert torch.allclose(lift, peak / (usual + 1e-6))


def test_okv_keeps_the_asked_paragraph_whole_under_a_tight_budget(restate_prefill) -> None:
    pre, layout = restate_prefill, restate_prefill.layout
    asked = kv.policies.asked_paragraph(pre.scores[0], layout)[0]
    assert 8 < int(asked.sum()) < 0.2 * layout.length  # a real paragraph, and the budget below can hold it
    kept = torch.zeros(layout.length, dtype=torch.bool)
    kept[kv.kept_positions(pre, "okv", 0.75)[0][0]] = True
    assert kept[asked].all()
    h2o = torch.zeros(layout.length, dtype=torch.bool)
    h2o[kv.kept_positions(pre, "h2o", 0.75)[0][0]] = True
    assert h2o.sum() == kept.sum()


def test_asked_paragraph_skips_the_question_and_the_sinks() -> None:
    # five paragraphs of four tokens: 0 holds the sinks, 4 is the question; the lift peaks in both of them
    paragraphs = torch.arange(20) // 4
    question = paragraphs == 4
    layout = kv.PromptLayout(20, question, torch.zeros(20, dtype=torch.bool), torch.zeros(20, dtype=torch.bool),
                             paragraphs, paragraphs)
    lift = torch.ones(2, 20)
    lift[:, 1], lift[:, 18], lift[:, 9] = 50.0, 40.0, 9.0  # a sink, a question token, then paragraph 2
    asked = kv.policies.asked_paragraph({"question_lift_model": lift}, layout)
    assert asked.shape == (2, 20) and torch.equal(asked[0], paragraphs == 2) and torch.equal(asked[1], asked[0])
    no_flag, one_span = torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.long)
    everything_taken = kv.PromptLayout(4, torch.tensor([False, False, True, True]), no_flag, no_flag, one_span, one_span)
    assert not kv.policies.asked_paragraph({"question_lift_model": torch.ones(1, 4)}, everything_taken).any()


def test_tasks_are_reproducible_and_scored() -> None:
    for task in kv.TASKS:
        a, b = kv.make_samples(task, 2, seed=3), kv.make_samples(task, 2, seed=3)
        assert a == b and a[0] != a[1]
        assert score(a[0].answer, a[0]) == 1.0
    restate = kv.make_samples("restate", 1)[0]
    assert f"{restate.prime} {restate.answer}" in restate.document  # the reference is the asked paragraph's rest
    assert restate.prime.split(" works")[0] in restate.question
    needle = kv.make_samples("needle", 1)[0]
    assert needle.document.count(needle.answer) == 1 and score(f"is {needle.answer}.", needle) == 1.0
    assert needle.document.split("\n\n")[0] == "Profiles of our volunteers."  # the needle never opens the text
    people = [line.split(".")[1].split(" lives")[0].strip() for line in kv.make_samples("multidoc", 1)[0].document.split("\n")[2:]]
    assert len({p.split()[0] for p in people}) == len({p.split()[1] for p in people}) == len(people) == 12
    lookup = kv.make_samples("lookup", 1)[0]
    assert lookup.answer in lookup.document and score("The code is 1", lookup) == 0.0
    assert score(f"The code is {lookup.answer}.", lookup) == 1.0


def test_explorer_answers_and_highlights(nano) -> None:
    import gradio as gr

    from apps.okv import build_app, example, explore

    model, proc = nano
    document, question, prime = example("lookup", 0)
    assert prime == "" and example("recite", 0)[2] == kv.make_samples("recite", 1)[0].prime
    document = "\n".join(document.splitlines()[:12])
    full, evicted, kept, note = explore(document, question, "okv", 0.5, "lookup", model, proc.tokenizer)
    started = explore(document, question, "okv", 0.5, "lookup", model, proc.tokenizer, prime=" The code is")
    assert started[0].startswith("The code is") and started[1].startswith("The code is")
    labels = [label for _, label in kept]
    assert set(labels) == {"kept", "evicted"} and "okv at 50%" in note
    assert isinstance(full, str) and isinstance(evicted, str)
    with pytest.raises(gr.Error, match="eviction ratio"):
        explore(document, question, "okv", 1.2, "lookup", model, proc.tokenizer)
    with pytest.raises(gr.Error, match="unknown eviction policy"):
        explore(document, question, "fifo", 0.5, "lookup", model, proc.tokenizer)
    assert isinstance(build_app(model, proc.tokenizer), gr.Blocks)


def test_sweep_rows_count_the_prompt_cache_only(nano, text_prefill) -> None:
    from andes_lib.kv.sweep import answer_rows

    model, proc = nano
    full = kv.cache_bytes(text_prefill.cache)
    rows = answer_rows(model, proc.tokenizer, text_prefill, list(kv.POLICIES), 0.0, 3)
    assert {r["kv_bytes"] for r in rows} == {full} and len({r["answer"] for r in rows}) == 1
    half = answer_rows(model, proc.tokenizer, text_prefill, list(kv.POLICIES), 0.5, 3)
    assert [r["policy"] for r in half] == list(kv.POLICIES)
    assert all(math.isclose(r["kv_bytes"] / full, 0.5, abs_tol=1 / text_prefill.layout.length) for r in half)


def test_image_prompt_is_the_evaluation_prompt(nano) -> None:
    """`encode_image` builds the chat prompt the harness evaluates (and the model was trained on), question last."""
    from andes_lib.data.base import user_message

    _, proc = nano
    image = Image.new("RGB", (96, 96), (40, 200, 40))
    batch, start = encode_image(proc, image, "What colour is the square?")
    text = proc.apply_chat_template([user_message("What colour is the square?", 1)], add_generation_prompt=True)
    assert torch.equal(batch["input_ids"], proc(images=[[image]], text=[text]).input_ids)
    assert proc.tokenizer.decode(batch["input_ids"][0, start:]).startswith("What colour is the square?")


def test_image_sweep_scores_every_policy_and_ratio(nano) -> None:
    from andes_lib.kv.sweep import image_sweep

    model, proc = nano
    rows = [{"id": f"r{i}", "domain": "general_vqa", "task": "color", "question": "What colour is the circle?",
             "answer": "red", "metric": "exact", "images": [Image.new("RGB", (96, 96), (200, 40, 40))]}
            for i in range(2)]
    out = image_sweep(model, proc, rows, list(kv.POLICIES), [0.0, 0.3], max_new_tokens=3, progress=False)
    assert len(out) == 2 * 2 * len(kv.POLICIES)
    full = [r for r in out if r["ratio"] == 0.0]
    assert all(r["visual_kept"] == 1.0 and r["score"] in (0.0, 1.0) for r in full)
    assert len({r["answer"] for r in full if r["prompt"] == 0}) == 1  # ratio 0: one answer shared by all policies
    assert all(0.0 <= r["visual_kept"] < 1.0 for r in out if r["ratio"] == 0.3)
    with pytest.raises(ValueError, match="single-image"):
        image_sweep(model, proc, [{**rows[0], "images": rows[0]["images"] * 2}], ["okv"], [0.0], progress=False)


def test_fact_recall_ignores_the_shared_sentence_pattern():
    """`kv.fact_recall`: a restatement of another person's profile copies the pattern (high Rouge-1) but none of
    the asked paragraph's own words."""
    fact_recall = kv.fact_recall
    sample = kv.make_samples("restate", 1, seed=0)[0]
    paragraphs = sample.document.split("\n\n")[1:]
    other = next(p for p in paragraphs if sample.answer not in p)
    wrong = other.split(" works as a ", 1)[1]
    assert fact_recall(sample.answer, sample) == 1.0
    assert score(wrong, sample) > 0.5 > fact_recall(wrong, sample)


def test_recite_notes_differ_so_a_wrong_note_scores_low():
    """`recite`: every note has its own subject and words, so copying another note (what a model that lost the
    asked one does) scores low, unlike `restate`'s look-alike profiles; the answer ends at the first blank line."""
    sample = kv.make_samples("recite", 1, seed=0)[0]
    notes = sample.document.split("\n\n")[1:]
    assert len(notes) == 24 and f"{sample.prime} {sample.answer}" in notes
    assert sum(sample.question.split("about ")[1].rstrip(".") in n.lower() for n in notes) <= 1
    assert score(f" {sample.answer}\n\n{notes[0]}", sample) == 1.0  # the next note after a blank line is not scored
    assert score(f"\n\n{sample.answer}", sample) == 0.0  # nor is anything after a first blank line
    others = [n for n in notes if sample.answer not in n]
    assert max(score(n, sample) for n in others) < 0.4 and max(kv.fact_recall(n, sample) for n in others) < 0.3
    with pytest.raises(ValueError, match="24 distinct notes"):
        kv.make_samples("recite", 1, scale=1.5)
