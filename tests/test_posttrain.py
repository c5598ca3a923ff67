"""Post-training (andes_lib.posttrain): MPO loss vs TRL, rewards, difficulty grading, GRPO on CPU. Fast (< 90 s)."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from datasets import Dataset
from PIL import Image

import andes_lib
from andes_lib.data.base import assistant_message, user_message
from andes_lib.posttrain import difficulty, pairs
from andes_lib.posttrain.common import POSTTRAIN_FILE, posttrain_optimizer, save_checkpoint, trained_with
from andes_lib.posttrain.grpo import group_advantages, grpo_loss, run_grpo, trl_vlm_model, trl_vlm_processor
from andes_lib.posttrain.mpo import (generation_loss, mpo_config, mpo_loss, mpo_loss_from_batch, preference_loss,
                                     quality_loss, run_mpo)
from andes_lib.posttrain.rewards import accuracy_score, format_score, parse_thinking, thinking_rewards
from andes_lib.posttrain.thinking import scan_rationale, thinking_completion


def image(i: int, w: int = 32, h: int = 32) -> Image.Image:
    return Image.new("RGB", (w + 16 * (i % 2), h), (40 * i % 255, 200, 90))


# ----------------------------------------------------------------------------- MPO
def test_mpo_terms_by_hand():
    c, r = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0])  # log-ratios (policy - reference)
    beta = 0.5
    sig = lambda x: 1 / (1 + torch.exp(-x))  # noqa: E731
    assert torch.allclose(preference_loss(c, r, beta), -torch.log(sig(beta * (c - r))))
    assert torch.allclose(quality_loss(c, r, beta), -torch.log(sig(beta * c)) - torch.log(sig(-beta * r)))
    logps = torch.tensor([[-1.0, -2.0, 0.0], [-3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert generation_loss(logps, mask).item() == pytest.approx(2.0)  # mean NLL over the 3 chosen tokens
    zeros = torch.zeros(2, 3)
    out = mpo_loss(logps, zeros, zeros, zeros, mask, mask, beta=0.1, weights=(0.8, 0.2, 1.0))
    expected = 0.8 * out["preference"] + 0.2 * out["quality"] + 1.0 * out["generation"]
    assert torch.allclose(out["loss"], expected)
    assert torch.allclose(out["rewards_chosen"], 0.1 * torch.tensor([-3.0, -3.0]))


def test_mpo_loss_equals_trl_dpo_trainer(proc, tmp_path):
    """Same batch, same weights: the hand-written loss equals TRL's DPOTrainer loss (sigmoid + bco_pair + sft)."""
    from trl import DPOTrainer

    model = andes_lib.build_model("nano", seed=0)
    ref = copy.deepcopy(model)
    with torch.no_grad():  # policy != reference, so the log-ratios are not all zero
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p, generator=torch.Generator().manual_seed(p.numel())))
    answers = [("red", "blue"), ("three squares", "two"), ("yes", "no"), ("a small red circle", "B")]
    rows = [{"images": [image(i)], "prompt": [user_message(f"Question {i}?", 1)],
             "chosen": [assistant_message(a)], "rejected": [assistant_message(b)]} for i, (a, b) in enumerate(answers)]
    args = mpo_config(tmp_path, steps=1, batch_size=4, beta=0.1, weights=(0.8, 0.2, 1.0))
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=proc)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
        ours = mpo_loss_from_batch(trainer.model, ref, batch, beta=0.1, weights=(0.8, 0.2, 1.0))
    assert ours["loss"].item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-6)
    assert ours["rewards_chosen"].abs().sum() > 0  # the batch really exercises the preference terms


def test_run_mpo_keeps_frozen_groups_fixed_and_trains_the_rest(proc, tmp_path):
    model = andes_lib.build_model("nano", seed=0)
    init = save_checkpoint(model, proc, tmp_path / "init")
    rows = [{"images": [image(i)], "prompt": [user_message(f"Is there a circle {i}?", 1)],
             "chosen": [assistant_message("yes")], "rejected": [assistant_message("no")]} for i in range(4)]
    data = Dataset.from_list(rows)
    result = run_mpo(init, data, tmp_path / "mpo", steps=2, batch_size=2, lr=1e-3,
                     freeze=("vision_tower", "projector"))
    trained = andes_lib.AndesVLForConditionalGeneration.from_pretrained(result.path).state_dict()
    before = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], trained[k])}
    assert changed and all(k.startswith("model.language_model.") or "lm_head" in k for k in changed)
    assert trained_with(init) == "adamw"  # a model with no training record: AdamW, and the run records it
    assert trained_with(result.path) == "adamw" and (result.path / POSTTRAIN_FILE).is_file()
    with pytest.raises(ValueError, match="unknown module group"):
        run_mpo(init, data, tmp_path / "bad", steps=1, batch_size=2, freeze=("vision",))


def test_trained_with_reads_the_recipe_then_the_post_training_record(tmp_path):
    (tmp_path / "andes_artifact.json").write_text('{"recipe": {"optimizer": "muon"}}')
    assert trained_with(tmp_path) == "muon"
    (tmp_path / "andes_artifact.json").unlink()
    (tmp_path / POSTTRAIN_FILE).write_text('{"optimizer": "muon"}')
    assert trained_with(tmp_path) == "muon"
    (tmp_path / POSTTRAIN_FILE).write_text('{"optimizer": "sgd"}')
    assert trained_with(tmp_path) == "adamw"


def test_posttrain_optimizer_puts_only_decoder_matrices_under_muon():
    model = andes_lib.build_model("nano", seed=0)
    model.model.vision_tower.requires_grad_(False)
    opt = posttrain_optimizer(model, 1e-4)
    groups = {g["name"]: g for g in opt.param_groups}
    decoder = {id(p) for layer in model.model.language_model.layers for p in layer.parameters() if p.dim() == 2}
    assert {id(p) for p in groups["language_model/muon"]["params"]} == decoder
    assert groups["language_model/muon"]["muon"] and not groups["other"]["muon"]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    listed = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(listed) == sorted(trainable)  # every trainable parameter once, the frozen tower left out
    assert all(g["lr"] == 1e-4 for g in opt.param_groups)
    assert isinstance(posttrain_optimizer(model, 1e-4, "adamw"), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        posttrain_optimizer(model, 1e-4, "sgd")
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        posttrain_optimizer(model, 1e-4)


# ----------------------------------------------------------------------------- rewards
GOOD = "The image shows 7 + 5. 7 + 5 = 12. The answer is \\boxed{12}.\n</think>\n\n12<|im_end|>"


@pytest.mark.parametrize(("text", "finished", "fmt", "acc"), [
    (GOOD, None, 1.0, 1.0),                                                     # correct
    (GOOD.replace("\n\n12", "\n\n13"), None, 1.0, 0.0),                         # well formed, wrong answer
    ("<think>\n" + GOOD, None, 1.0, 1.0),                                       # generated without the pre-fill
    ("The answer is 12 12 12", None, 0.0, 0.0),                                 # malformed: never closes the thought
    ("a\n</think>\n\n12\n</think>\n\n12", None, 0.0, 0.0),                      # malformed: two </think>
    ("\n</think>\n\n12", None, 0.0, 0.0),                                       # malformed: empty rationale
    ("I add.\n</think>\n\n", None, 0.0, 0.0),                                   # malformed: empty answer
    ("I add. <think> again\n</think>\n\n12", None, 0.0, 0.0),                   # malformed: a second <think>
    (GOOD.replace("<|im_end|>", ""), False, 0.0, 0.0),                          # cut at the token limit
    ("", None, 0.0, 0.0),                                                       # empty
    ("7 + 5 = 12. " * 400 + "\n</think>\n\n12", None, 0.0, 0.0),               # enormous (a runaway rationale)
    ("ok\n</think>\n\n" + " ".join(str(i) for i in range(19)), None, 0.0, 0.0),  # enormous answer: every option
])
def test_thinking_rewards_on_hand_made_completions(text, finished, fmt, acc):
    assert format_score(text, finished) == fmt
    assert accuracy_score(text, "12", "relaxed", finished) == acc


def test_rewards_are_trl_reward_functions_and_read_special_tokens_from_ids(proc):
    accuracy, fmt = thinking_rewards(proc.tokenizer)
    assert (accuracy.__name__, fmt.__name__) == ("accuracy_reward", "format_reward")
    texts = [GOOD, GOOD.replace("\n\n12", "\n\nblue"), "no thought at all<|im_end|>"]
    ids = [proc.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    # TRL passes completions decoded WITHOUT special tokens (no </think>): the ids must be used instead
    stripped = [proc.tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    assert "</think>" not in stripped[0]
    kw = {"answer": ["12", "blue", "12"], "metric": ["relaxed", "exact", "relaxed"]}
    assert accuracy(stripped, completion_ids=ids, **kw) == [1.0, 1.0, 0.0]
    assert fmt(stripped, completion_ids=ids, **kw) == [1.0, 1.0, 0.0]
    cut = [ids[0][:-1]]  # no end-of-turn token: cut at max_completion_length
    assert fmt([stripped[0]], completion_ids=cut) == [0.0]
    plain_accuracy, plain_fmt = thinking_rewards()  # no tokenizer: strings as given
    assert plain_accuracy([[{"role": "assistant", "content": GOOD}]], answer=["12"], metric=["relaxed"]) == [1.0]
    assert plain_fmt(["x"]) == [0.0]
    # deterministic
    assert accuracy(stripped, completion_ids=ids, **kw) == accuracy(stripped, completion_ids=ids, **kw)


def test_sft_thinking_targets_are_well_formed_and_correct():
    from andes_lib.data import generate

    for domain, seed in [("reasoning", 1), ("reasoning", 2), ("reasoning", 5), ("chart", 3), ("chart", 4)]:
        s = generate(domain, seed)
        text = thinking_completion(s.rationale, s.answer)
        parsed = parse_thinking(text)
        assert parsed.well_formed, (domain, parsed.reason, text)
        assert accuracy_score(text, s.answer, s.metric) == 1.0


def test_scan_rationale_names_objects_in_reading_order_and_numbers_the_targets():
    from andes_lib.data import generate
    from andes_lib.eval.metrics import last_boxed

    box = lambda col, row: [24 * col + 4, 24 * row + 4, 24 * col + 20, 24 * row + 20]  # noqa: E731
    scene = {"size": [96, 96], "query": {"task": "count", "shape": "star"}, "objects": [
        {"shape": "star", "colour": "red", "box": box(3, 2)}, {"shape": "circle", "colour": "orange", "box": box(0, 0)},
        {"shape": "star", "colour": "blue", "box": box(1, 2)}, {"shape": "star", "colour": "green", "box": box(2, 0)}]}
    assert scan_rationale(scene) == ("Row by row I see an orange circle, a green star (1), a blue star (2), a red star "
                                     "(3). There are 3. The answer is \\boxed{3}.")
    for seed in range(40):  # every generated count scene: the scan's count is the reference answer
        s = generate("reasoning", seed)
        if s.task == "count":
            assert last_boxed(scan_rationale(s.scene)) == s.answer


# ----------------------------------------------------------------------------- difficulty
@pytest.mark.parametrize(("passes", "k", "expected"), [
    (0, 8, "unsolved"), (1, 8, "hard"), (2, 8, "hard"), (3, 8, "easy"), (7, 8, "easy"), (8, 8, "solved"),
    (1, 4, "hard"), (2, 4, "easy"), (4, 4, "solved"), (0, 1, "unsolved"), (1, 1, "solved"),
])
def test_bucket_by_pass_rate(passes, k, expected):
    assert difficulty.bucket(passes, k) == expected


def test_bucket_rejects_impossible_counts():
    with pytest.raises(ValueError):
        difficulty.bucket(5, 4)
    with pytest.raises(ValueError):
        difficulty.bucket(0, 0)


def test_grade_puts_items_in_expected_buckets(monkeypatch):
    k = 8
    right, wrong = "I look.\n</think>\n\n4<|im_end|>", "I look.\n</think>\n\n5<|im_end|>"
    n_right = [0, 1, 2, 3, 5, 7, 8]
    rows = [{"id": f"r{i}", "domain": "reasoning", "task": "count", "question": "How many?", "images": [],
             "answer": "4", "metric": "relaxed"} for i in range(len(n_right))]

    def fake_sample(model, processor, rows_, k=8, **kw):
        assert kw["thinking"] is True
        return [[{"text": right if j < n else wrong, "finished": True, "n_tokens": 5} for j in range(k)]
                for n in n_right]

    monkeypatch.setattr(difficulty, "sample_answers", fake_sample)
    grades = difficulty.grade(None, None, rows, k=k)
    assert grades["passes"].tolist() == n_right
    assert grades["bucket"].tolist() == ["unsolved", "hard", "hard", "easy", "easy", "easy", "solved"]
    first, second = difficulty.stage_indices(grades)
    assert first == [3, 4, 5] and second == [1, 2]
    # stage 2 falls back to the unsolved prompts when no prompt is hard
    _, fallback = difficulty.stage_indices(grades[grades["bucket"] != "hard"], min_rows=1)
    assert fallback == [0]
    table = difficulty.bucket_table(grades)
    assert table.loc[0, ["unsolved", "hard", "easy", "solved"]].tolist() == [1, 2, 3, 1]


# ----------------------------------------------------------------------------- pairs
def sampled_rows(monkeypatch, specs, outputs):
    """SFT rows from (domain, task, question, answer, metric) and a fake sampler answering them with `outputs`."""
    rows = Dataset.from_list([{"id": f"r{i}", "domain": d, "task": t, "lang": "en", "seed": i, "images": [image(i)],
                               "question": q, "answer": a, "metric": m} for i, (d, t, q, a, m) in enumerate(specs)])
    monkeypatch.setattr(pairs, "sample_answers", lambda *a, **kw: [[{"text": t, "finished": True} for t in o]
                                                                  for o in outputs])
    return rows


def test_sampled_pairs_reject_only_wrong_answers(monkeypatch):
    rows = sampled_rows(monkeypatch, [("hallucination", "object", "Is there a star?", "yes", "yesno"),
                                      ("chart", "max", "Which bar is highest?", "B", "relaxed")],
                        [["yes", "<|vision_pad|>no", "no", "Yes."], ["B", "B", "B", "B"]])  # an image token: no pair
    data, stats = pairs.sampled_pairs(None, None, rows, k=4)
    assert len(data) == 1 and data[0]["chosen"][0]["content"][0]["text"] == "yes"
    assert data[0]["rejected"][0]["content"][0]["text"] == "no" and data[0]["source"] == "sampled"
    assert stats.set_index("domain").loc["hallucination", "wrong_share"] == 0.5
    assert stats.set_index("domain").loc["chart", "pairs"] == 0


def test_sampled_chosen_pairs_only_prompts_the_model_sometimes_gets_right(monkeypatch):
    rows = sampled_rows(monkeypatch, [("reasoning", "count", "How many stars are there?", "3", "exact"),
                                      ("text_rich", "sign", "What does the sign say?", "STOP", "exact")],
                        [["4", "3.", "3", "5"], ["OPEN", "SALE", "OPEN", "BANK"]])  # the sign is never read
    reference, _ = pairs.sampled_pairs(None, None, rows, k=4)
    assert sorted(reference["domain"]) == ["reasoning", "text_rich"]
    sampled, stats = pairs.sampled_pairs(None, None, rows, k=4, chosen="sampled")
    assert len(sampled) == 1 and sampled[0]["domain"] == "reasoning"
    assert sampled[0]["chosen"][0]["content"][0]["text"] == "3."
    assert sampled[0]["rejected"][0]["content"][0]["text"] == "4"
    assert stats.set_index("domain").loc["text_rich", "pairs"] == 0
    with pytest.raises(ValueError, match="chosen must be"):
        pairs.sampled_pairs(None, None, rows, k=4, chosen="best")


def test_yes_no_pairs_are_balanced_per_domain_and_other_pairs_kept():
    rows = [{"domain": "hallucination", "answer": a} for a in ["no"] * 7 + ["yes"] * 3 + [" Yes "]]
    rows += [{"domain": "multi_image", "answer": "yes"}, {"domain": "chart", "answer": "B"}]
    kept, dropped = pairs.balance_yes_no(Dataset.from_list(rows), seed=0)
    halluc = [r["answer"].strip().lower() for r in kept if r["domain"] == "hallucination"]
    assert sorted(halluc) == ["no"] * 4 + ["yes"] * 4 and dropped["hallucination"] == 3
    assert dropped["multi_image"] == 1 and [r["answer"] for r in kept if r["domain"] == "chart"] == ["B"]


def test_extra_answer_space_pairs_add_fresh_scenes_to_the_named_domain():
    data, table = pairs.build_mpo_pairs(None, None, ["chart", "hallucination"], n_sampled=0, n_answer_space=2,
                                        balance=False, extra_answer_space={"hallucination": 6, "chart": 0})
    counts = table.set_index("domain")["answer_space_pairs"]
    assert counts["hallucination"] == 8 and counts["chart"] == 2 and len(data) == 10
    halluc = [r for r in data if r["domain"] == "hallucination"]
    assert len({r["id"] for r in halluc}) == 8  # the extra scenes are not the base ones again
    assert all(r["chosen"][0]["content"][0]["text"] != r["rejected"][0]["content"][0]["text"] for r in halluc)
    with pytest.raises(ValueError, match="extra_answer_space"):
        pairs.build_mpo_pairs(None, None, ["hallucination"], n_sampled=0, extra_answer_space={"hallucination": -1})


# ----------------------------------------------------------------------------- GRPO
def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(r, 4)
    std = torch.tensor([1.0, 0.0, 0.0, 0.0]).std()  # unbiased, as TRL
    assert torch.allclose(adv[:4], (torch.tensor([1.0, 0, 0, 0]) - 0.25) / (std + 1e-4))
    assert torch.equal(adv[4:], torch.zeros(4))  # a group whose completions all score the same teaches nothing
    assert torch.allclose(group_advantages(r, 4, scale=False)[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]))
    with pytest.raises(ValueError):
        group_advantages(r, 3)


def test_trl_vlm_shim_matches_trl_pixel_splitting_and_model_inputs(proc):
    from trl.trainer.utils import split_pixel_values_by_grid

    images = [[image(0)], [image(1, 48, 32)], [image(2)]]
    texts = ["<image>a", "<image>bb", "<image>c"]
    shim = trl_vlm_processor(proc)
    out = shim(images=images, text=texts, padding=True, return_tensors="pt")
    assert "image_grid_thw" in out and "image_grid_hw" not in out
    assert isinstance(shim(text=["a", "bb b"])["input_ids"][0], list)  # lists by default, as TRL expects
    split = split_pixel_values_by_grid({**out, "num_images": [1, 1, 1]})
    for sample_images, sample_text, pixels in zip(images, texts, split["pixel_values"], strict=True):
        alone = proc(images=[sample_images], text=[sample_text])
        assert torch.equal(pixels, alone["pixel_values"])
    model = andes_lib.build_model("nano", seed=0).eval()
    ref = proc(images=images, text=texts, padding=True)
    with torch.no_grad():
        expected = model(**ref).logits
        with trl_vlm_model(model):
            got = model(input_ids=out["input_ids"], attention_mask=out["attention_mask"],
                        pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"]).logits
    assert torch.allclose(expected, got)
    assert type(model) is andes_lib.AndesVLForConditionalGeneration  # restored


def test_two_step_grpo_run_on_cpu(proc, tmp_path):
    model = andes_lib.build_model("nano", seed=0)
    init = save_checkpoint(model, proc, tmp_path / "init")
    prompts = Dataset.from_list([{"images": [image(i)], "prompt": [user_message(f"Count {i}?", 1)], "answer": "3",
                                  "metric": "relaxed", "domain": "reasoning"} for i in range(4)])

    def length_reward(completions, **kw):  # varies within a group, so the policy gradient is not zero
        return [float(len(c[0]["content"])) / 10 for c in completions]

    held_out = [{"question": "Count?", "images": [image(5)], "answer": "3", "metric": "relaxed"}]
    result = run_grpo(init, prompts, tmp_path / "grpo", steps=2, prompts_per_step=2, num_generations=2,
                      max_completion_length=4, lr=1e-3, reward_funcs=[length_reward], reward_weights=[1.0],
                      held_out=held_out, eval_every=1, log_every=1, freeze=("vision_tower", "projector"))
    frame = result.frame()
    assert len(frame) == 2 and frame["step"].tolist() == [1, 2]
    assert {"reward", "completions/mean_length", "rewards/length_reward/mean"} <= set(frame.columns)
    assert [h["step"] for h in result.held_out] == [0, 1, 2]
    trained = andes_lib.AndesVLForConditionalGeneration.from_pretrained(result.path).state_dict()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, trained[k])}
    assert changed and all(k.startswith("model.language_model.") or "lm_head" in k for k in changed)
    assert isinstance(frame, pd.DataFrame)


def test_trl_grpo_logps_and_loss_match_a_hand_computation(proc, tmp_path):
    """Through the shim, TRL scores each completion with its own image (same log-probs as a forward on one sample),
    and its GRPO loss equals `grpo_loss` in value and gradient."""
    from trl import GRPOTrainer

    from andes_lib.posttrain.common import prompt_text
    from andes_lib.posttrain.grpo import grpo_config

    model = andes_lib.build_model("nano", seed=0)
    rows = [{"images": [image(i, 32, 32 + 16 * (i % 2))], "prompt": [user_message(f"Count {'x' * i}?", 1)],
             "answer": "3", "metric": "relaxed", "domain": "reasoning"} for i in range(4)]
    args = grpo_config(tmp_path, steps=1, prompts_per_step=2, num_generations=2, max_completion_length=4,
                       reward_weights=[1.0], temperature=3.0)

    def chars(completions, **kw):
        return [float(len(c[0]["content"])) for c in completions]

    with trl_vlm_model(model):
        trainer = GRPOTrainer(model=model, reward_funcs=[chars],
                              args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=trl_vlm_processor(proc))
        batch = next(iter(trainer.get_train_dataloader()))
        out = trainer._generate_and_score_completions(batch)
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
        mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
        n = out["completion_ids"].shape[1]
        trl_logps = trainer._get_per_token_logps_and_entropies(
            model, ids, mask, n, pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"],
            num_images=out["num_images"])[0]
        # the hand-written loss has the same value and the same gradient as TRL's
        params = [p for p in model.parameters() if p.requires_grad]
        trl_loss = trainer.compute_loss(model, out)
        trl_grads = torch.autograd.grad(trl_loss, params, allow_unused=True)
        ours = grpo_loss(trl_logps, out["advantages"], out["completion_mask"])
        our_grads = torch.autograd.grad(ours, params, allow_unused=True)
        assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-6)
        assert out["advantages"].abs().sum() > 0
        pairs_ = [(a, b) for a, b in zip(trl_grads, our_grads, strict=True) if a is not None]
        assert pairs_ and all(torch.allclose(a, b, atol=1e-6) for a, b in pairs_)
        trl_logps = trl_logps.detach()
    for b, row in enumerate(batch):
        completion = out["completion_ids"][b][out["completion_mask"][b].bool()]
        enc = proc(images=[row["images"]], text=[prompt_text(proc, row["prompt"][0]["content"][-1]["text"], 1, True)])
        full = torch.cat([enc["input_ids"][0], completion])[None]
        with torch.no_grad():
            logits = model(input_ids=full, pixel_values=enc["pixel_values"], image_grid_hw=enc["image_grid_hw"]).logits
        # TRL scores completions at the sampling temperature
        logps = torch.log_softmax(logits[0, :-1] / 3.0, -1).gather(-1, full[0, 1:, None])[:, 0][-len(completion):]
        assert torch.allclose(logps, trl_logps[b][:len(completion)], atol=1e-4)
