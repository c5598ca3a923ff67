"""Training: loss masks, freeze schedules, learning, bit-exact resume, corrupt checkpoints, recipe hashes, cache.

Everything runs on tiny hand-made data (32x32 single-colour images, 4 visual tokens, batch 4) with one torch
thread, so the file takes well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import random
import zlib

import datasets
import pytest
import torch
from PIL import Image

import andes_lib
from andes_lib.train import artifacts as artifacts_mod
from andes_lib.train.checkpoint import (CheckpointError, CorruptCheckpointError, list_checkpoints,
                                        optimizer_from_safetensors, optimizer_to_safetensors, verify)
from andes_lib.train.collate import IGNORE_INDEX, assistant_mask, collate, sequence_length
from andes_lib.train.feature_cache import install as install_feature_cache
from andes_lib.train.feature_cache import uninstall as uninstall_feature_cache
from andes_lib.train.loop import LRSchedule, apply_freeze, native_bf16, run_stage
from andes_lib.train.loss import label_weights, lm_loss_sum
from andes_lib.train.recipes import RECIPES, StageRecipe, chain, fingerprint, get_recipe
from andes_lib.train.stream import plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40)}


def tiny_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name = rng.choice(sorted(COLOURS))
        rows.append({
            "domain": "general_vqa", "task": "color", "images": [Image.new("RGB", (32, 32), COLOURS[name])],
            "messages": [{"role": "user", "content": [{"type": "image", "text": None},
                                                      {"type": "text", "text": "What colour is the image?"}]},
                         {"role": "assistant", "content": [{"type": "text", "text": name}]}],
        })
    return rows


def tiny_build_dataset(split, domains=None, n_per_domain=8, seed=0, progress=False, **kw):
    """Stands in for andes_lib.data.build_dataset: any domain/task gets the colour task."""
    domain = (domains or ["general_vqa"])[0]
    rows = tiny_rows(n_per_domain, seed=zlib.crc32(f"{domain}-{seed}".encode()))
    if domain == "text_only":
        for r in rows:
            r["images"] = []
            r["messages"][0]["content"] = [{"type": "text", "text": "Say a colour."}]
            r["domain"] = r["task"] = "text_only"
    return datasets.Dataset.from_list(rows)


@pytest.fixture(autouse=True)
def tiny_data(monkeypatch, tmp_path):
    monkeypatch.setattr("andes_lib.data.build_dataset", tiny_build_dataset)
    monkeypatch.setenv("ANDES_ARTIFACT_CACHE", str(tmp_path / "artifact-cache"))


def recipe(**kw) -> StageRecipe:
    base = dict(name="tiny", lr={"vision_tower": 3e-3, "projector": 3e-3, "language_model": 3e-3},
                data={"general_vqa": 1.0}, n_per_domain=32, steps=6, batch_size=4, warmup_steps=1,
                max_seq_len=64, loss_on="assistant")
    return StageRecipe(**(base | kw))


# ----------------------------------------------------------------------------- masks
def test_assistant_mask_matches_the_chat_template_generation_blocks(proc):
    msgs = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3 + 3?"}, {"role": "assistant", "content": "It is 6, of course."}]
    out = proc.tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
    ids = torch.tensor(out["input_ids"])
    assert assistant_mask(ids, proc.tokenizer).tolist() == out["assistant_masks"]
    # the labelled tokens decode to the answers with their end-of-turn token
    mine = assistant_mask(ids, proc.tokenizer).bool()
    assert proc.tokenizer.decode(ids[mine]) == "4<|im_end|>It is 6, of course.<|im_end|>"


def test_collate_labels_only_assistant_tokens_and_never_the_image_span(proc):
    rows = tiny_rows(3)
    batch = collate(proc, rows, loss_on="assistant")
    ids, labels = batch["input_ids"], batch["labels"]
    assert batch["pixel_values"].shape[0] == 3 * 16 and batch["image_grid_hw"].tolist() == [[4, 4]] * 3
    for b, row in enumerate(rows):
        kept = labels[b][labels[b] != IGNORE_INDEX]
        assert proc.tokenizer.decode(kept) == row["messages"][1]["content"][0]["text"] + "<|im_end|>"
    full = collate(proc, rows, loss_on="all")["labels"]
    image_ids = [proc.tokenizer.convert_tokens_to_ids(t) for t in ("<img>", "</img>", "<|vision_pad|>")]
    labelled = full[full != IGNORE_INDEX]
    assert not any((labelled == i).any() for i in image_ids)
    assert (full != IGNORE_INDEX).sum() > (labels != IGNORE_INDEX).sum()  # "all" also learns the question
    assert (full[batch["attention_mask"] == 0] == IGNORE_INDEX).all()  # never the padding
    assert sequence_length(proc, rows[0]) == int(batch["attention_mask"][0].sum())


# ----------------------------------------------------------------------------- recipes, data order
def test_recipe_hash_changes_with_every_parameter_and_the_parent():
    r = RECIPES["nano-sft"]
    assert r.params_hash() == r.replace(description="other words").params_hash()
    for change in ({"steps": r.steps + 1}, {"lr": {**r.lr, "projector": 1e-4}}, {"data": {"gui": 1.0}},
                   {"max_seq_len": 64}, {"seed": 1}, {"loss_on": "all"}, {"text_only": 0.5},
                   {"loss_weighting": "token"}, {"optimizer": "adamw"}, {"place_code": False}, {"pack": False}):
        assert r.replace(**change).params_hash() != r.params_hash(), change
    table = dict(RECIPES)
    before = fingerprint(table["nano-sft"], table)
    table["nano-pt1"] = table["nano-pt1"].replace(steps=7)
    assert fingerprint(table["nano-sft"], table) != before  # a changed ancestor invalidates the descendants
    assert [s.name for s in chain("nano-sft")] == ["llm", "vision", "pt1", "pt2", "pt3", "sft"]
    assert RECIPES["nano-pt1"].frozen == ("vision_tower", "language_model")  # alignment trains the projector only
    with pytest.raises(ValueError, match="unknown module group"):
        StageRecipe(name="x", lr={"llm": 1e-3}, data={"gui": 1.0})


def test_smol_chain_starts_from_the_pretrained_llm_and_bare_names_mean_nano():
    assert [r.artifact for r in chain("smol-sft")] == ["smol-vision", "smol-pt1", "smol-pt2", "smol-pt3", "smol-sft"]
    assert RECIPES["smol-vision"].parent is None and RECIPES["smol-pt1"].frozen == ("language_model",)
    assert all(r.lr.get("language_model", 0) <= 5e-5 for r in chain("smol-sft"))  # pre-trained: small LLM rates
    assert get_recipe("sft") is RECIPES["nano-sft"] and get_recipe("smol-sft").preset == "smol"
    assert fingerprint(RECIPES["smol-sft"]) != fingerprint(RECIPES["nano-sft"])


def test_data_plan_is_deterministic_and_follows_the_mix():
    r = recipe(steps=200, batch_size=8)
    a, b = plan(r, [50, 30], [0.75, 0.25]), plan(r, [50, 30], [0.75, 0.25])
    assert (a == b).all()
    share = (a[:, 0] == 0).mean()
    assert 0.7 < share < 0.8
    first_pass = a[a[:, 0] == 1][:30, 1]
    assert sorted(first_pass.tolist()) == list(range(30))  # each pass is a permutation of the pool
    assert (plan(r.replace(seed=1), [50, 30], [0.75, 0.25]) != a).any()


def test_lr_schedule_warms_up_then_decays():
    s = LRSchedule(steps=100, warmup=10, min_ratio=0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(55) < s(20) and s(99) == pytest.approx(0.1, abs=0.01)


# ----------------------------------------------------------------------------- training
def test_freeze_schedule_really_freezes(tmp_path):
    r = recipe(lr={"vision_tower": 3e-3, "projector": 3e-3}, steps=3)
    model = andes_lib.build_model("nano", seed=r.seed)
    counts = apply_freeze(model, r)
    assert counts["language_model"]["trainable"] == 0 and counts["projector"]["trainable"] > 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_stage(r, tmp_path / "final", progress=False)
    after = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(result.path)).state_dict()
    for key, value in before.items():
        unchanged = torch.equal(value, after[key])
        if key.startswith("model.language_model.") or key == "lm_head.weight":
            assert unchanged, f"{key} is frozen but changed"
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("model.projector."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("model.vision_tower."))
    assert result.info["trainable"]["language_model"]["trainable"] == 0


def test_no_gradient_reaches_frozen_modules(proc):
    r = recipe(lr={"projector": 1e-3})
    model = andes_lib.build_model("nano")
    apply_freeze(model, r)
    batch = collate(proc, tiny_rows(2), "assistant")
    labels = batch.pop("labels")
    model(**batch, labels=labels).loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("model.projector."):
            assert p.grad is not None
        else:
            assert p.grad is None, f"{name} got a gradient"


def test_loss_decreases_on_a_tiny_run(tmp_path):
    result = run_stage(recipe(steps=25, warmup_steps=3), tmp_path / "final", progress=False)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3, losses


def test_length_sorted_micro_batches_train_the_weights_of_one_batch(tmp_path):
    r = recipe(steps=3, batch_size=8, text_only=0.25, loss_weighting="sample", optimizer="muon")
    one = run_stage(r, tmp_path / "one", progress=False)
    two = run_stage(r.replace(grad_accum=2), tmp_path / "two", progress=False)
    assert [h["loss"] for h in two.history] == pytest.approx([h["loss"] for h in one.history], rel=1e-5)
    a = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(one.path)).state_dict()
    b = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(two.path)).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=2e-4) for k in a)  # float rounding; 3 steps at 3e-3 move them ~1e-2


def test_packed_rows_train_the_weights_of_padded_rows(tmp_path):
    r = recipe(steps=3, batch_size=8, text_only=0.25, loss_weighting="sample", optimizer="muon", grad_accum=2)
    padded = run_stage(r, tmp_path / "padded", progress=False)
    packed = run_stage(r.replace(pack=True), tmp_path / "packed", progress=False)
    assert [h["loss"] for h in packed.history] == pytest.approx([h["loss"] for h in padded.history], rel=1e-5)
    a = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(padded.path)).state_dict()
    b = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(packed.path)).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=2e-4) for k in a)
    with pytest.raises(ValueError, match="pack"):
        recipe(pack=1)


def test_pack_rows_gives_every_sample_its_own_tokens_images_and_loss(proc):
    rows = tiny_rows(5)
    for row, size in zip(rows, [(32, 32), (48, 32), (16, 16), (32, 48), (16, 32)], strict=True):
        row["images"] = [im.resize(size) for im in row["images"]]
    rows[1]["images"].append(Image.new("RGB", (16, 48), COLOURS["blue"]))  # two images in one sample
    rows[1]["messages"][0]["content"].insert(0, {"type": "image", "text": None})
    rows[3] = {"messages": [{"role": "user", "content": "Say a colour."},
                            {"role": "assistant", "content": "red, green and blue"}]}  # text only
    padded, packed = collate(proc, rows, "assistant"), collate(proc, rows, "assistant", pack=64)
    lengths = padded["attention_mask"].sum(1).tolist()
    assert "attention_mask" not in packed and packed["input_ids"].shape[1] == max(64, *lengths)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    starts = (packed["position_ids"] == 0).sum()
    assert starts >= len(rows)  # one run per sample, plus the padding at the end of a row
    assert sorted(map(tuple, packed["image_grid_hw"].tolist())) == sorted(map(tuple, padded["image_grid_hw"].tolist()))
    assert (packed["labels"] != IGNORE_INDEX).sum() == (padded["labels"][:, 1:] != IGNORE_INDEX).sum()
    model = andes_lib.build_model("nano", seed=0).eval()
    for weighting in ("token", "sample"):
        w_padded, w_packed = label_weights(padded, weighting).sum(), label_weights(packed, weighting).sum()
        assert torch.isclose(w_packed, w_padded)
        with torch.no_grad():
            a = lm_loss_sum(model, dict(padded), weighting) / w_padded
            b = lm_loss_sum(model, dict(packed), weighting) / w_packed
        assert torch.isclose(a, b, rtol=1e-5), (weighting, a, b)
    assert torch.isclose(label_weights(packed, "sample").sum(), torch.tensor(float(len(rows))))


@pytest.mark.parametrize("optimizer, precision", [("adamw", "fp32"), ("muon", "fp32"), ("muon", "bf16")])
def test_resume_after_a_kill_is_bit_exact(tmp_path, optimizer, precision):
    r = recipe(steps=6, save_every=2, text_only=0.25, optimizer=optimizer, precision=precision)
    straight = run_stage(r, tmp_path / "a" / "final", progress=False)
    stopped = run_stage(r, tmp_path / "b" / "final", stop_after=3, progress=False)  # "killed" after step 3
    assert stopped.path is None and list_checkpoints(tmp_path / "b" / "final.checkpoints")[-1].name == "step-000003"
    (tmp_path / "b" / ".tmp-step-000004-junk").mkdir()  # a save that was interrupted
    resumed = run_stage(r, tmp_path / "b" / "final", progress=False)
    assert resumed.info["resumed_from_step"] == 3
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(straight.path)).state_dict()
    b = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(resumed.path)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_frozen_tower_cache_returns_the_tower_features_and_computes_unknown_images(proc):
    model = andes_lib.build_model("nano").eval()
    tower = model.model.vision_tower
    known = [Image.new("RGB", (32, 32), c) for c in COLOURS.values()] + [Image.new("RGB", (48, 32), (9, 9, 9))]
    unknown = Image.new("RGB", (32, 48), (200, 100, 0))
    cache = install_feature_cache(tower, [{"images": known[:3]}, {"images": known[3:]}, {"text": "no image"}], proc)
    assert len(cache.features) == 5 and tower.forward is cache
    batch = proc.image_processor([known[4], unknown, known[0]])
    with torch.no_grad():
        cached = tower(**batch).last_hidden_state
        uninstall_feature_cache(tower)
        assert "forward" not in tower.__dict__
        plain = tower(**batch).last_hidden_state
    assert (cache.hits, cache.misses) == (2, 1)
    assert cached.shape == plain.shape and torch.allclose(cached, plain, atol=1e-5)


def test_a_stage_with_a_frozen_tower_uses_the_cache_and_still_resumes_bit_exact(tmp_path, monkeypatch):
    r = recipe(lr={"projector": 3e-3, "language_model": 3e-3}, steps=6, save_every=2)
    straight = run_stage(r, tmp_path / "a" / "final", progress=False)
    run_stage(r, tmp_path / "b" / "final", stop_after=3, progress=False)
    resumed = run_stage(r, tmp_path / "b" / "final", progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(straight.path)).state_dict()
    b = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(resumed.path)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    calls = []
    monkeypatch.setattr("andes_lib.train.loop.install_feature_cache", lambda *a: calls.append(a))
    plain = run_stage(r, tmp_path / "c" / "final", progress=False)  # the tower runs in every step
    assert len(calls) == 1
    assert [h["loss"] for h in plain.history] == pytest.approx([h["loss"] for h in straight.history], rel=1e-5)


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="this CPU emulates bf16: such stages train in fp32")
def test_a_bf16_stage_computes_in_bf16_and_lands_near_the_fp32_one(tmp_path):
    runs = {p: run_stage(recipe(steps=4, optimizer="muon", precision=p), tmp_path / p / "final", progress=False)
            for p in ("fp32", "bf16")}
    fp32, bf16 = ([h["loss"] for h in runs[p].history] for p in ("fp32", "bf16"))
    assert fp32 != bf16 and bf16 == pytest.approx(fp32, rel=0.05)


def test_a_stage_without_the_place_code_trains_without_it_and_keeps_it_in_the_config(tmp_path):
    with_code = run_stage(recipe(steps=2), tmp_path / "a" / "final", progress=False)
    without = run_stage(recipe(steps=2, place_code=False), tmp_path / "b" / "final", progress=False)
    a = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(with_code.path))
    b = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(without.path))
    assert a.config.projector_place_scale == b.config.projector_place_scale == 0.7
    assert b.model.projector.place_scale == 0.7  # a loaded model adds it again
    wa, wb = a.state_dict(), b.state_dict()
    assert not torch.equal(wa["model.projector.linear_2.weight"], wb["model.projector.linear_2.weight"])
    with pytest.raises(ValueError, match="place_code"):
        recipe(place_code="no")


CHILD = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
import andes_lib.data, test_train
andes_lib.data.build_dataset = test_train.tiny_build_dataset
from andes_lib.train.loop import run_stage
run_stage(test_train.recipe(steps={steps}, save_every=1), {final!r}, progress=False)
"""


def test_resume_after_a_real_sigkill_matches_the_uninterrupted_run(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    steps, final = 8, tmp_path / "killed" / "final"
    code = CHILD.format(tests=str(Path(__file__).parent), steps=steps, final=str(final))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = tmp_path / "killed" / "final.checkpoints"
    deadline = time.monotonic() + 120
    while not (ckpts / "step-000003").is_dir():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the child never reached step 3"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)  # wherever it is: mid-step or mid-save
    child.wait()
    assert not (final / "model.safetensors").exists()
    resumed = run_stage(recipe(steps=steps, save_every=1), final, progress=False)
    straight = run_stage(recipe(steps=steps, save_every=1), tmp_path / "straight" / "final", progress=False)
    assert resumed.info["resumed_from_step"] >= 3
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(straight.path)).state_dict()
    b = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(resumed.path)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_checkpoint_gives_a_clear_error_and_the_previous_survives(tmp_path):
    r = recipe(steps=6, save_every=1, keep_last=2)
    final = tmp_path / "final"
    run_stage(r, final, stop_after=4, progress=False)
    ckpts = list_checkpoints(tmp_path / "final.checkpoints")
    assert [c.name for c in ckpts] == ["step-000003", "step-000004"]  # keep_last=2 pruned the older ones
    weights = ckpts[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.raises(CorruptCheckpointError) as err:
        run_stage(r, final, progress=False)
    message = str(err.value)
    assert str(weights) in message and str(ckpts[0]) in message
    verify(ckpts[0])  # the previous one is intact
    resumed = run_stage(r, final, progress=False, on_corrupt="previous")
    assert resumed.info["resumed_from_step"] == 3 and resumed.path is not None


def test_checkpoints_of_other_inputs_are_never_resumed(tmp_path):
    r = recipe(steps=4, save_every=1)
    run_stage(r, tmp_path / "final", stop_after=2, progress=False)
    with pytest.raises(CheckpointError, match="another recipe or other inputs"):
        run_stage(r, tmp_path / "final", progress=False, fingerprint="tokenizer-retrained")
    restarted = run_stage(r, tmp_path / "final", progress=False, fingerprint="tokenizer-retrained", on_stale="restart")
    assert restarted.info["resumed_from_step"] == 0 and restarted.path is not None


def test_optimizer_state_round_trips_through_safetensors():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, doc = optimizer_to_safetensors(opt.state_dict())
    doc = json.loads(json.dumps(doc))
    restored = optimizer_from_safetensors(tensors, doc)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)
    fresh.load_state_dict(restored)
    for a, b in zip(opt.state.values(), fresh.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- artifact cache
def test_get_artifact_builds_the_chain_then_reuses_and_rebuilds_when_stale(tmp_path, monkeypatch):
    table = {"nano-a": recipe(name="a", steps=2), "nano-b": recipe(name="b", parent="a", steps=2)}
    calls = []
    real = artifacts_mod.run_stage
    monkeypatch.setattr(artifacts_mod, "run_stage", lambda r, *a, **k: calls.append(r.name) or real(r, *a, **k))
    run = tmp_path / "run"
    path = artifacts_mod.get_artifact("nano-b", run, recipes=table, progress=False)
    assert calls == ["a", "b"] and path == run / "artifacts" / "nano-b"
    assert set(artifacts_mod.list_artifacts(run)) == {"nano-a", "nano-b"}
    model = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(path))
    assert model.config.image_token_id == andes_lib.build_processor("nano").image_token_id
    assert artifacts_mod.get_artifact("nano-b", run, recipes=table, progress=False) == path and len(calls) == 2
    table["nano-a"] = table["nano-a"].replace(lr={"projector": 1e-3})  # the parent changed: both are stale
    artifacts_mod.get_artifact("nano-b", run, recipes=table, progress=False)
    assert calls == ["a", "b", "a", "b"]
    other = tmp_path / "other-run"  # a fresh run finds them in the cross-run cache
    artifacts_mod.get_artifact("nano-b", other, recipes=table, progress=False)
    assert len(calls) == 4 and (other / "artifacts" / "nano-b" / "model.safetensors").is_file()


def test_list_artifacts_follows_the_pipeline_order(tmp_path):
    for name in ("nano-sft", "nano-vision", "my-model", "nano-pt1", "nano-llm", "half-written"):
        (tmp_path / "artifacts" / name).mkdir(parents=True)
        if name != "half-written":
            (tmp_path / "artifacts" / name / "andes_artifact.json").write_text("{}")
    assert list(artifacts_mod.list_artifacts(tmp_path)) == ["nano-llm", "nano-vision", "nano-pt1", "nano-sft", "my-model"]


def test_sft_mix_benchmark_overrides_merge_into_the_recipe():
    """benchmarks/sft_mix.py: `data` entries are merged into SFT's mix, a weight of 0 removes a source, and other
    fields replace the recipe's; a non-object is refused."""
    import importlib.util
    from pathlib import Path

    from andes_lib.train.recipes import get_recipe

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sft_mix.py"
    spec = importlib.util.spec_from_file_location("sft_mix", path)
    sft_mix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sft_mix)
    out = sft_mix.overrides({"data": {"multi_image/odd": 0, "multi_image/changed": 1.0}, "steps": 10})["sft"]
    assert out["steps"] == 10
    assert "multi_image/odd" not in out["data"] and out["data"]["multi_image/changed"] == 1.0
    assert out["data"]["multi_image/same"] == get_recipe("sft").data["multi_image/same"]
    with pytest.raises(ValueError, match="JSON object"):
        sft_mix.overrides([1, 2])
