"""Speculative decoding (ANDESVL.md §4): lossless chain and tree decoding, cache roll-back, draft head, prompts.

The target here is the `nano` AndesVL (random weights, sharpened so its greedy text varies) with a briefly trained
draft head, so that rounds both accept and reject draft tokens; notebook 10 runs the same code on SmolLM2-135M.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, DynamicCache

import andes_lib
from andes_lib.specdec import (DistillData, DraftHead, DraftTree, Target, chat_ids, collect, draft_tree,
                               evaluate_head, frequent_tokens, greedy_generate, keep_cache_positions, make_prompts,
                               speculative_generate, train_head, truncate_cache)
from andes_lib.specdec import decode as decode_module
from andes_lib.specdec.assistant import build_assistant, train_assistant
from andes_lib.posttrain import thinking_checkpoint
from andes_lib.specdec.bench import REFERENCE, compare, hf_method, summarise
from andes_lib.specdec.data import collect_images, image_encoder, image_inputs
from andes_lib.specdec.head import HeadCache
from andes_lib.specdec.lookup import NgramLookup

MODES = [dict(mode="chain", draft_len=4), dict(mode="chain", draft_len=3, threshold=0.3),
         dict(mode="tree", topk=3, depth=4, tree_size=10)]


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    """(target, processor, trained head, distillation data) on a sharpened random nano model."""
    model = andes_lib.build_model("nano", seed=3)
    with torch.no_grad():  # sharper logits: greedy text that depends on the context instead of one repeated token
        model.lm_head.weight.mul_(8.0)
    proc = andes_lib.build_processor("nano")
    target = Target(model)
    prompts = [r["prompt"] for r in make_prompts(4, seed=0)]
    data = collect(target, proc.tokenizer, prompts, max_new_tokens=24, batch_size=12, keep_layers=(1,), progress=False)
    head = DraftHead.from_target(target, vocab=frequent_tokens(data.labels, 256, target.eos_ids))
    history = train_head(head, target, data, steps=25, batch_size=6, lr=2e-3, progress=False)
    return target, proc, head, data, history


class EveryThirdWrong(DraftHead):
    """The trained head, except that every third token it proposes is replaced by a wrong one: rounds then accept
    a prefix of the draft and reject the rest, which is where a wrong cache roll-back would show."""

    calls = 0

    def token_ids(self, index: torch.Tensor) -> torch.Tensor:
        ids = super().token_ids(index)
        EveryThirdWrong.calls += 1
        return torch.where(ids > 0, ids - 1, ids + 1) if EveryThirdWrong.calls % 3 == 0 else ids


def partially_wrong(head: DraftHead, target: Target) -> DraftHead:
    clone = EveryThirdWrong(head.config)
    clone.load_state_dict(head.state_dict())
    return clone.attach(target).eval()


def test_prompts_are_distinct_per_kind_and_disjoint_when_excluded():
    train = make_prompts(10, seed=0)
    assert [r["kind"] for r in train].count("summary") == 10 and len({r["prompt"] for r in train}) == 30
    test = make_prompts(10, seed=1, exclude={r["prompt"] for r in train})
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    with pytest.raises(ValueError, match="unknown prompt kind"):
        make_prompts(1, kinds=("poetry",))


def test_distillation_labels_are_the_targets_greedy_answer(setup):
    target, proc, _, data, _ = setup
    for ids, labels, n in zip(data.ids, data.labels, data.prompt_lengths):
        assert len(ids) > n
        assert torch.equal(labels[n - 1:-1], ids[n:])  # the answer is the greedy label of the previous position
    assert data.layer_states[1][0].shape == data.features[0].shape
    with torch.no_grad():  # the states kept from generate (left-padded batch) are a plain forward's, position by position
        for i in range(len(data)):
            ids = data.ids[i][None]
            tf = target.backbone(input_ids=ids, output_hidden_states=True)
            assert torch.allclose(data.features[i], tf.last_hidden_state[0], atol=1e-4)
            assert torch.allclose(data.layer_states[1][i], tf.hidden_states[1][0], atol=1e-4)
    part = data.subset([2, 0])
    assert len(part) == 2 and part.ids[0] is data.ids[2] and part.prompt_lengths[1] == data.prompt_lengths[0]
    assert part.layer_states[1][0] is data.layer_states[1][2] and part.labels[1] is data.labels[0]


def test_training_lowers_the_loss_and_the_head_agrees_with_the_target(setup):
    target, _, head, data, history = setup
    first = sum(r["loss"] for r in history.rows[:5]) / 5
    last = sum(r["loss"] for r in history.rows[-5:]) / 5
    assert last < 0.7 * first
    assert evaluate_head(head, target, data)["top1"] > 0.3
    answers = evaluate_head(head, target, data, answers_only=True)["top1"]
    hits = total = 0  # the same agreement counted by hand over the answer positions only
    for ids, feats, labels, n in zip(data.ids, data.features, data.labels, data.prompt_lengths):
        pred = head(feats[None, :-1], target.embed(ids[None, 1:]), torch.arange(len(ids) - 1)[None])[0]
        drafted = head.token_ids((pred @ head.lm_weight.T).argmax(-1))[n - 1:]
        hits, total = hits + int((drafted == labels[n:]).sum()), total + len(drafted)
    assert answers == pytest.approx(hits / total, abs=1e-6)


@pytest.fixture(scope="module")
def references(setup):
    """(prompt ids, plain greedy `generate` tokens) for two prompts."""
    target, proc, _, _, _ = setup
    out = []
    for row in make_prompts(1, seed=5, kinds=("chat", "code")):
        ids = chat_ids(proc.tokenizer, row["prompt"])
        out.append((ids, target.model.generate(input_ids=ids, max_new_tokens=32, do_sample=False)[0, ids.shape[1]:]))
    return out


def test_our_greedy_loop_equals_generate(setup, references):
    target = setup[0]
    for ids, reference in references:
        assert greedy_generate(target, ids, 32).tokens == reference.tolist()


@pytest.mark.parametrize("kwargs", MODES, ids=["chain", "chain-threshold", "tree"])
def test_speculative_output_equals_plain_greedy(setup, references, kwargs):
    target, proc, head, _, _ = setup
    partial = partially_wrong(head, target)
    accepted = rejected = 0
    for ids, reference in references:
        for h in (head, partial):
            spec = speculative_generate(target, h, ids, 32, **kwargs)
            assert spec.tokens == reference.tolist()
            assert len(spec.drafted) == len(spec.tokens) and spec.rounds < len(spec.tokens)
        accepted += sum(spec.accepted)  # the partially wrong head: rounds accept a prefix, reject the rest
        rejected += sum(p - a for p, a in zip(spec.proposed, spec.accepted))
    assert accepted > 0 and rejected > 0


def test_image_prompt_on_the_vlm_is_lossless(setup):
    target, proc, head, _, _ = setup
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the shape?"}]}]
    batch = proc(images=[[Image.new("RGB", (64, 48), (200, 30, 30))]],
                 text=[proc.apply_chat_template(msgs, add_generation_prompt=True)], return_tensors="pt")
    extra = {"pixel_values": batch["pixel_values"], "image_grid_hw": batch["image_grid_hw"]}
    reference = target.model.generate(**batch, max_new_tokens=20, do_sample=False)[0, batch["input_ids"].shape[1]:]
    for kwargs in MODES:
        spec = speculative_generate(target, head, batch["input_ids"], 20, **kwargs, **extra)
        assert spec.tokens == reference.tolist()


def test_max_new_tokens_and_eos_are_respected(setup):
    target, proc, head, _, _ = setup
    ids = chat_ids(proc.tokenizer, "Tell me three facts about the moon's phases.")
    for n in (1, 2, 7):
        assert speculative_generate(target, head, ids, n, mode="tree").tokens == greedy_generate(target, ids, n).tokens
    eos = target.eos_ids[0]
    for kwargs in MODES:
        out = speculative_generate(target, head, ids, 40, **kwargs).tokens
        assert eos not in out[:-1]


def test_bad_requests_are_refused(setup):
    target, proc, head, _, _ = setup
    ids = chat_ids(proc.tokenizer, "hello")
    with pytest.raises(ValueError, match="unknown mode"):
        speculative_generate(target, head, ids, 4, mode="beam")
    with pytest.raises(ValueError, match="one sequence at a time"):
        speculative_generate(target, head, ids.repeat(2, 1), 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_generate(target, head, ids, 0)
    with pytest.raises(ValueError, match="lookup_min"):
        speculative_generate(target, head, ids, 4, lookup_min=-1)


def test_cache_rollback_keeps_the_accepted_positions():
    cache = DynamicCache()
    keys = torch.arange(10.0).view(1, 1, 10, 1).expand(1, 2, 10, 3).contiguous()
    cache.update(keys, keys + 100, 0)
    keep_cache_positions(cache, 4, torch.tensor([1, 3, 4]))
    assert cache.layers[0].keys[0, 0, :, 0].tolist() == [0, 1, 2, 3, 5, 7, 8]
    assert cache.layers[0].values[0, 1, :, 0].tolist() == [100, 101, 102, 103, 105, 107, 108]
    truncate_cache(cache, 5)
    assert cache.get_seq_length() == 5


def test_tree_mask_lets_each_node_see_only_its_ancestors():
    tree = DraftTree(tokens=[5, 6, 7, 8], parents=[-1, -1, 0, 2], depths=[1, 1, 2, 3])
    mask = tree.attention_mask(past=2)[0, 0] == 0
    assert mask[:, :2].all()
    assert mask[:, 2:].tolist() == [[True, False, False, False, False], [True, True, False, False, False],
                                    [True, False, True, False, False], [True, True, False, True, False],
                                    [True, True, False, True, True]]
    assert DraftTree.chain([1, 2, 3]).is_chain and not tree.is_chain


def test_lookup_proposes_the_longest_match_context_first():
    lookup = NgramLookup([[1, 2, 3, 4], [1, 2, 3, 4], [9, 2, 3, 7], [5, 6, 8]], max_n=3, min_n=1)
    session = lookup.session([0, 2, 3])
    assert session.propose(2) == [4]  # corpus: "2 3" -> 4 twice, 7 once; then "2 3 4" and "3 4" end the walk
    session.extend([7, 5, 2, 3])  # the context now holds "2 3 7": context wins on an equal-length match
    assert session.propose(1) == [7]
    assert session.propose(3, after=[8]) == []  # nothing ever follows 8
    assert NgramLookup([[5, 6, 8]], min_n=2).session([6]).propose(2) == []  # one token is shorter than min_n
    with pytest.raises(ValueError, match="min_n"):
        NgramLookup([], max_n=2, min_n=3)


def test_merging_a_lookup_chain_into_a_tree_shares_the_agreeing_prefix():
    tree = DraftTree.chain([5, 6, 7])
    assert tree.merge_chain([5, 6, 7]).is_chain and tree.merge_chain([5, 6, 7, 8]).tokens == [5, 6, 7, 8]
    merged = tree.merge_chain([5, 9, 4])
    assert merged.tokens == [5, 6, 7, 9, 4] and merged.parents == [-1, 0, 1, 0, 3] and merged.depths == [1, 2, 3, 2, 3]
    assert not merged.is_chain and len(DraftTree.chain([]).merge_chain([3])) == 1


@pytest.mark.parametrize("kwargs", [dict(mode="chain", draft_len=4), dict(mode="chain", draft_len=0, lookup_len=6),
                                    dict(mode="tree", topk=3, depth=4, tree_size=10),
                                    dict(mode="chain", draft_len=4, lookup_min=1)],
                         ids=["chain+lookup", "lookup-only", "tree+lookup", "lookup-first"])
def test_lookup_drafts_stay_lossless(setup, references, kwargs):
    target, _, head, data, _ = setup
    lookup = NgramLookup(data.ids + [r for _, r in references], max_n=3, min_n=1)  # references: lookups that hit
    partial = partially_wrong(head, target)
    if kwargs["mode"] == "chain" and not kwargs["draft_len"]:  # the lookup drafts alone: the head is never run
        partial.forward = lambda *a, **kw: pytest.fail("the head ran although it drafts nothing")
    for ids, reference in references:
        spec = speculative_generate(target, partial, ids, 32, lookup=lookup, **kwargs)
        assert spec.tokens == reference.tolist()
    if kwargs["mode"] == "chain" and not kwargs["draft_len"]:
        assert sum(spec.accepted) > 0  # the lookup alone found the answer's n-grams


def test_lookup_first_drafts_a_chain_without_the_head_when_the_lookup_finds_enough(setup, references, monkeypatch):
    target, _, head, data, _ = setup
    lookup = NgramLookup(data.ids + [r for _, r in references], max_n=3, min_n=1)
    ids, reference = references[0]
    calls, real = [], decode_module._draft_chain
    monkeypatch.setattr(decode_module, "_draft_chain", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    merged = speculative_generate(target, head, ids, 32, mode="chain", draft_len=4, lookup=lookup)
    merged_calls = len(calls)
    calls.clear()
    first = speculative_generate(target, head, ids, 32, mode="chain", draft_len=4, lookup=lookup, lookup_min=1)
    assert first.tokens == merged.tokens == reference.tolist()
    assert merged_calls == merged.rounds and len(calls) < first.rounds  # rounds with a lookup draft skip the head


def test_benchmark_times_decoding_after_the_first_token_for_every_method(setup):
    target, proc, head, _, _ = setup
    methods = {REFERENCE: hf_method(target.model), "HF prompt lookup": hf_method(target.model, prompt_lookup_num_tokens=3),
               "ours": lambda ids, n: speculative_generate(target, head, ids, n, mode="chain", draft_len=3)}
    rows = compare(methods, proc.tokenizer, make_prompts(1, seed=7, kinds=("code",)), 12, progress=False)
    assert [r["method"] for r in rows] == list(methods) and all(r["lossless"] for r in rows)
    for r in rows:  # prefill is left out: the decode-only speedup uses the time after the first token
        assert r["tokens"] > 1 and r["decode_speedup"] > 0 and r["decode_tok_per_s"] > 0
    summary = {s["method"]: s for s in summarise(rows)}
    assert summary[REFERENCE]["median_decode_speedup"] == 1.0 and summary["ours"]["mean_accepted_length"] >= 1.0


def image_rows(n: int) -> list[dict]:
    colours = [(200, 30, 30), (30, 160, 60), (40, 60, 200)]
    return [{"question": "Describe the objects in the image.", "domain": "general_vqa", "answer": "",
             "images": [Image.new("RGB", (64, 48), colours[i % 3])]} for i in range(n)]


def test_image_distillation_is_the_vlms_greedy_answer_with_the_image(setup):
    target, proc, _, _, _ = setup
    rows = image_rows(2)
    data = collect_images(target, proc, rows, max_new_tokens=10, progress=False)
    for row, ids, labels, n in zip(rows, data.ids, data.labels, data.prompt_lengths, strict=True):
        inputs = image_inputs(proc, row)
        assert torch.equal(ids[:n], inputs["input_ids"][0])
        assert torch.equal(ids, target.model.generate(**inputs, max_new_tokens=10, do_sample=False)[0][: len(ids)])
        assert torch.equal(labels[n - 1:-1], ids[n:])  # features were read with the image: labels are the answer
    with pytest.raises(ValueError, match="at least one"):
        collect_images(target, proc, [], progress=False)


def test_benchmark_on_image_prompts_is_lossless(setup):
    target, proc, head, _, _ = setup
    methods = {REFERENCE: hf_method(target.model),
               "ours": lambda ids, n, **extra: speculative_generate(target, head, ids, n, mode="chain", draft_len=3,
                                                                   **extra)}
    rows = compare(methods, proc.tokenizer, image_rows(2), 12, encode=image_encoder(proc), progress=False)
    assert len(rows) == 4 and all(r["lossless"] and r["kind"] == "general_vqa" for r in rows)


def test_thinking_checkpoint_is_the_latest_stage_or_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run chapter 06"):
        thinking_checkpoint(tmp_path)
    for stage in ("think-sft", "grpo-stage1"):
        (tmp_path / "posttrain" / "thinking" / stage).mkdir(parents=True)
        (tmp_path / "posttrain" / "thinking" / stage / "model.safetensors").write_bytes(b"")
    assert thinking_checkpoint(tmp_path).name == "grpo-stage1"


def test_dynamic_tree_is_a_tree_of_the_requested_size(setup):
    target, proc, head, _, _ = setup
    cache = HeadCache()
    feats = torch.randn(1, 6, target.hidden_size)
    hidden = head(feats, target.embed(torch.arange(6))[None], torch.arange(6)[None], cache=cache)[0, -1:]
    tree = draft_tree(head, target.embed, hidden, cache, 6, topk=3, depth=4, size=9)
    assert len(tree) == 9 and len(cache) == 6  # the head's cache is restored
    for i, (p, d) in enumerate(zip(tree.parents, tree.depths)):
        assert p < i and d == (1 if p < 0 else tree.depths[p] + 1)
        assert p < 0 or tree.tokens[i] is not None
    assert set(tree.tokens) <= set(head.vocab.tolist())


def test_head_saves_and_reloads_as_safetensors(setup, tmp_path):
    target, _, head, _, _ = setup
    head.save(tmp_path)
    again = DraftHead.load(tmp_path, target)
    x, e = torch.randn(1, 3, target.hidden_size), torch.randn(1, 3, target.hidden_size)
    pos = torch.arange(3)[None]
    assert torch.equal(head(x, e, pos), again(x, e, pos)) and torch.equal(head.vocab, again.vocab)
    with pytest.raises(FileNotFoundError, match="no draft head"):
        DraftHead.load(tmp_path / "missing", target)


def test_truncated_draft_model_trains_and_assists_losslessly(setup):
    target, proc, _, data, _ = setup
    llm = target.model.model.language_model
    causal = AutoModelForCausalLM.from_config(llm.config)  # the nano text model as a plain causal LM
    causal.model.load_state_dict(llm.state_dict())
    causal.lm_head.weight = target.lm_head.weight
    causal.generation_config.eos_token_id = target.eos_ids[0]
    with pytest.raises(ValueError, match="n_layers"):
        build_assistant(causal, llm.config.num_hidden_layers)
    assistant = build_assistant(causal, 2)
    history = train_assistant(assistant, data, torch.tensor([], dtype=torch.long), steps=8, batch_size=4,
                              progress=False)
    assert history.rows[-1]["loss"] < history.rows[0]["loss"]
    ids = chat_ids(proc.tokenizer, "List 3 fruits.")
    plain = causal.generate(input_ids=ids, max_new_tokens=16, do_sample=False)
    assisted = causal.generate(input_ids=ids, max_new_tokens=16, do_sample=False, assistant_model=assistant)
    assert torch.equal(plain, assisted)


def test_app_streams_coloured_tokens_and_refuses_empty_prompts(setup):
    import gradio as gr

    from apps.specdec import SpecEngine, build_app
    from andes_lib.specdec.view import DRAFT_COLOUR, colour_tokens

    target, proc, head, _, _ = setup
    engine = SpecEngine(target=target, tokenizer=proc.tokenizer, head=head)
    assert isinstance(build_app(engine), gr.Blocks)
    updates = list(engine.stream("List 3 fruits.", "tree", 24))
    answer, stats = updates[-1]
    spec = speculative_generate(target, head, chat_ids(proc.tokenizer, "List 3 fruits."), 24, mode="tree",
                                lookup=NgramLookup())  # the app also drafts from its own context
    assert spec.tokens == speculative_generate(target, head, chat_ids(proc.tokenizer, "List 3 fruits."), 24).tokens
    assert answer == colour_tokens(proc.tokenizer, spec.tokens, spec.drafted)
    assert f"{len(spec.tokens)} tokens" in stats and (DRAFT_COLOUR in answer) == any(spec.drafted)
    with pytest.raises(gr.Error, match="Type a prompt"):
        list(engine.stream("  ", "chain", 8))
    with pytest.raises(ValueError, match="draft flags"):
        colour_tokens(proc.tokenizer, [1, 2], [True])
