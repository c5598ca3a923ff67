"""The `vision` stage (dense patch labels): labels agree with pixels, only the vision tower trains, resume, errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import andes_lib
from andes_lib.data import general_vqa, render
from andes_lib.data.render import COLOURS
from andes_lib.train.loop import run_stage
from andes_lib.train.patch_labels import (COLOUR_CLASSES, GLYPH_CLASSES, HEAD_FILE, SHAPE_CLASSES, PatchLabelHead,
                                          collate_patch_labels, load_labeler, patch_label_accuracy, patch_label_loss,
                                          predict_label_maps, token_labels)
from andes_lib.train.recipes import StageRecipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def own_caches(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("ANDES_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))


def scene_row(seed: int, size: tuple[int, int] = (96, 96)) -> dict:
    """A general-VQA scene drawn at `size` (any size: the processor resizes and pads it)."""
    scene = general_vqa.plan(random.Random(seed)).scene | {"size": list(size)}
    return {"domain": "general_vqa", "images": general_vqa.render(scene), "scene": json.dumps(scene), "messages": []}


@pytest.mark.parametrize("size", [(96, 96), (120, 72)])
def test_labels_name_the_colour_the_pixels_show(proc, size):
    """Un-normalise the packed pixels: every object patch's label is the colour most of its pixels have."""
    ip = proc.image_processor
    mean, std = torch.tensor(ip.image_mean)[:, None], torch.tensor(ip.image_std)[:, None]
    palette = torch.tensor([COLOURS[c] for c in COLOUR_CLASSES[1:]], dtype=torch.float)
    checked = 0
    for seed in range(6):
        batch = collate_patch_labels(proc, [scene_row(seed, size)])
        pixels = (batch["pixel_values"].view(-1, 3, ip.patch_size**2) * std + mean) * 255  # (patches, 3, p*p)
        for k in torch.nonzero(batch["colour_labels"]).flatten().tolist():
            rgb = pixels[k].T  # (p*p, 3)
            nearest = torch.cdist(rgb, palette).argmin(-1)
            close = torch.cdist(rgb, palette).min(-1).values < 60
            votes = torch.bincount(nearest[close], minlength=len(palette))
            assert COLOUR_CLASSES[1 + int(votes.argmax())] == COLOUR_CLASSES[batch["colour_labels"][k]]
            checked += 1
        assert (batch["shape_labels"] > 0).sum() == (batch["colour_labels"] > 0).sum()
    assert checked > 50


def test_multi_image_scenes_give_one_label_map_per_panel(proc):
    from andes_lib.data import multi_image

    sample = multi_image.plan(random.Random(0))
    row = {"domain": "multi_image", "images": multi_image.render(sample.scene), "scene": json.dumps(sample.scene)}
    batch = collate_patch_labels(proc, [row])
    assert len(batch["image_grid_hw"]) == len(sample.scene["panels"]) > 1
    assert batch["shape_labels"].shape[0] == batch["pixel_values"].shape[0]


@pytest.mark.parametrize("domain", ["text_rich", "multilingual", "reasoning", "chart"])
def test_text_is_labelled_character_by_character_in_reading_order(proc, domain):
    """Every character the generator writes labels some patch, no other character does, and no shape is labelled;
    at token level (the majority of each 2x2 block) the text still reads left to right."""
    from andes_lib.data import registry

    checked = 0
    for seed in range(12):
        sample = registry.generate(domain, seed)
        with render.recording() as calls:
            registry.GENERATORS[domain].render(sample.scene)
        lines = [c["text"].replace(" ", "") for c in calls if c["kind"] == "text"]
        if not lines or sample.task in ("count", "compare"):
            continue
        row = {"domain": domain, "images": sample.images, "scene": json.dumps(sample.scene)}
        batch = collate_patch_labels(proc, [row])
        assert int(batch["shape_labels"].count_nonzero()) == 0
        assert {GLYPH_CLASSES[g] for g in batch["glyph_labels"].tolist() if g} == set("".join(lines))
        _, _, glyphs = token_labels(batch)
        read = "".join(GLYPH_CLASSES[g] for g in glyphs.tolist() if g)
        assert any(line[:2] in read for line in lines if len(line) > 2) or len(lines[0]) <= 2, (read, lines)
        checked += 1
    assert checked >= 3


def test_the_glyph_term_trains_only_on_images_with_text(proc):
    from andes_lib.data import registry
    from andes_lib.train.patch_labels import n_labels

    sign = registry.generate("text_rich", 0)
    text = {"domain": "text_rich", "images": sign.images, "scene": json.dumps(sign.scene)}
    batch = collate_patch_labels(proc, [scene_row(0), text])
    n_shapes = len(collate_patch_labels(proc, [scene_row(0)])["shape_labels"])
    assert not batch["text_images"][:n_shapes].any() and batch["text_images"][n_shapes:].all()
    assert n_labels(batch) == 2 * len(batch["shape_labels"]) + len(batch["shape_labels"]) - n_shapes
    head = PatchLabelHead(proc.image_processor.patch_size ** 2 * 3)
    logits = head(torch.randn(len(batch["shape_labels"]), proc.image_processor.patch_size ** 2 * 3))
    wrong = torch.full_like(logits[2], -50.0).index_fill_(1, torch.tensor([5]), 50.0)  # "glyph 5" everywhere
    on_shapes = (logits[0], logits[1], torch.cat([wrong[:n_shapes], logits[2][n_shapes:]]), None)
    on_text = (logits[0], logits[1], torch.cat([logits[2][:n_shapes], wrong[n_shapes:]]), None)
    assert torch.equal(patch_label_loss(on_shapes, batch, head), patch_label_loss((*logits, None), batch, head))
    assert patch_label_loss(on_text, batch, head) > patch_label_loss((*logits, None), batch, head) + 100


def test_a_row_without_its_generator_is_refused_with_a_clear_error(proc):
    row = scene_row(0) | {"domain": None}
    with pytest.raises(ValueError, match="domain"):
        collate_patch_labels(proc, [row])
    row = scene_row(0) | {"domain": "text_rich"}
    with pytest.raises((ValueError, KeyError)):
        collate_patch_labels(proc, [row])


def test_a_patch_label_recipe_trains_the_vision_tower_only():
    with pytest.raises(ValueError, match="no 'language_model'"):
        StageRecipe(name="v", objective="patch_labels", lr={"vision_tower": 1e-3, "language_model": 1e-3},
                    data={"general_vqa": 1.0})
    with pytest.raises(ValueError, match="objective"):
        StageRecipe(name="v", objective="pixels", lr={"vision_tower": 1e-3}, data={"general_vqa": 1.0})


def vision_recipe(**kw) -> StageRecipe:
    base = dict(name="vision", objective="patch_labels", lr={"vision_tower": 2e-3}, data={"general_vqa": 1.0},
                n_per_domain=24, steps=30, batch_size=4, warmup_steps=2, max_seq_len=256)
    return StageRecipe(**(base | kw))


def test_vision_stage_learns_changes_only_the_tower_and_keeps_the_head_beside(tmp_path, proc):
    before = andes_lib.build_model("nano", seed=0).state_dict()
    result = run_stage(vision_recipe(), tmp_path / "final", progress=False)
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
    weights = load_file(str(result.path / "model.safetensors"))
    assert not any(k.startswith("patch_label_head") for k in weights)
    after = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(result.path)).state_dict()
    for key, value in before.items():
        if key.startswith("model.vision_tower."):
            continue
        assert torch.equal(value, after[key]), f"{key} is outside the vision tower but changed"
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("model.vision_tower."))
    labeler, processor = load_labeler(result.path)
    rows = [scene_row(10_000 + i) for i in range(8)]
    scores = patch_label_accuracy(labeler, processor, rows)
    assert scores["background"] > 0.9 and scores["object_patches"] > 0
    maps = predict_label_maps(labeler, processor, [rows[0]["images"][0], scene_row(1, (120, 72))["images"][0]])
    assert [tuple(m.shape) for m in maps] == [(12, 12), (10, 16)] and int(maps[0].max()) < len(SHAPE_CLASSES)
    glyphs = predict_label_maps(labeler, processor, [rows[0]["images"][0]], label="glyph")[0]
    assert glyphs.shape == maps[0].shape and int(glyphs.max()) < len(GLYPH_CLASSES)
    with pytest.raises(ValueError, match="label must be"):
        predict_label_maps(labeler, processor, [rows[0]["images"][0]], label="size")
    with pytest.raises(FileNotFoundError, match=HEAD_FILE):
        load_labeler(tmp_path)


def test_vision_stage_resumes_bit_exactly_head_included(tmp_path):
    r = vision_recipe(steps=6, save_every=2)
    straight = run_stage(r, tmp_path / "a" / "final", progress=False)
    stopped = run_stage(r, tmp_path / "b" / "final", stop_after=3, progress=False)
    assert stopped.path is None
    resumed = run_stage(r, tmp_path / "b" / "final", progress=False)
    assert resumed.info["resumed_from_step"] == 3
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for name in ("model.safetensors", HEAD_FILE):
        a, b = load_file(str(straight.path / name)), load_file(str(resumed.path / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_the_code_term_pulls_each_projector_row_onto_its_objects_code():
    head = PatchLabelHead(16, code_size=8)
    assert torch.equal(head.shape_codes, PatchLabelHead(16, code_size=8).shape_codes)  # fixed: same in every run
    assert not any("codes" in k for k in head.state_dict())  # and not saved in the head file
    batch = {"shape_labels": torch.tensor([0, 2, 2, 2, 5, 5, 0, 0]), "colour_labels": torch.tensor([0, 1, 1, 1, 3, 3, 0, 0]),
             "glyph_labels": torch.zeros(8, dtype=torch.long), "text_images": torch.zeros(8, dtype=torch.bool)}
    logits = head(torch.randn(8, 16))
    rows = head.code_target(torch.tensor([2, 5]), torch.tensor([1, 3]), torch.tensor([0, 0]))  # majority of each block
    ce_only = patch_label_loss((*logits, rows), batch, head)
    assert torch.allclose(patch_label_loss((*logits, rows), batch, head, code_weight=2.0), ce_only)  # on target
    off = patch_label_loss((*logits, rows + 0.5), batch, head, code_weight=2.0)
    assert torch.allclose(off - ce_only, torch.tensor(2.0 * 0.25 * 2))
    with pytest.raises(ValueError, match="warm_projector"):
        patch_label_loss((*logits, None), batch, head, code_weight=1.0)
    with pytest.raises(ValueError, match="code_weight"):
        StageRecipe(name="v", objective="patch_labels", code_weight=1.0, lr={"vision_tower": 1e-3},
                    data={"general_vqa": 1.0})


def test_vision_stage_warms_the_projector_onto_the_codes(tmp_path, proc):
    recipe = vision_recipe(lr={"vision_tower": 2e-3, "projector": 2e-3}, code_weight=1.0, steps=12)
    before = andes_lib.build_model("nano", seed=0).model.projector.state_dict()
    result = run_stage(recipe, tmp_path / "final", progress=False)
    after = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(result.path)).model.projector.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in before)
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_label_reader_reads_pope_from_token_labels(proc):
    """True labels answer every POPE question; a labeler that sees nothing answers only the "no"s."""
    from andes_lib.data import build_dataset
    from andes_lib.train.probe import label_reader

    rows = list(build_dataset("validation", ["hallucination"], 12, progress=False)
                .select_columns(["domain", "images", "scene", "answer"]))
    confusion, reader = label_reader(None, proc, rows)
    assert reader and all(acc == 1.0 for acc in reader.values())
    assert torch.allclose(confusion.diagonal()[confusion.sum(1) > 0], torch.ones(1))

    def blind(pixel_values, grid):  # every token read as background
        n = int(grid.prod(-1).sum())
        return (torch.eye(len(SHAPE_CLASSES))[[0] * n], torch.eye(len(COLOUR_CLASSES))[[0] * n],
                torch.eye(len(GLYPH_CLASSES))[[0] * n], None)

    confusion, reader = label_reader(blind, proc, rows)
    tasks = {json.loads(r["scene"])["query"]["task"] for r in rows}
    share_no = {t: np.mean([r["answer"] == "no" for r in rows if json.loads(r["scene"])["query"]["task"] == t])
                for t in tasks}
    assert reader == pytest.approx(share_no) and confusion[1:, 0][confusion.sum(1)[1:] > 0].eq(1).all()
