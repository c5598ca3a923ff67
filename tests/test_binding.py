"""What made nano see: loss weighting, the projector's output RMS, labelled-only logits, the token probe, the oracle."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import andes_lib
from andes_lib.data import build_dataset
from andes_lib.model.projector import PixelShuffleProjector, place_directions, token_positions
from andes_lib.train.loss import token_weights
from andes_lib.train.probe import object_share, position_r2, probe_visual_tokens, token_labels

ROOT = Path(__file__).resolve().parents[1]


def test_token_weights_average_per_token_per_sample_or_square():
    labels = torch.full((2, 6), -100)
    labels[0, :1] = 5  # a one-token answer
    labels[1, :4] = 7  # a four-token answer
    assert token_weights(labels, "token").sum() == 5
    sample = token_weights(labels, "sample")
    assert torch.allclose(sample.sum(-1), torch.ones(2)) and sample[0, 0] == 1 and sample[1, 0] == 0.25
    assert torch.allclose(token_weights(labels, "square").sum(-1), torch.tensor([1.0, 2.0]))
    assert token_weights(labels, "sample")[labels == -100].abs().sum() == 0
    with pytest.raises(ValueError, match="unknown loss weighting"):
        token_weights(labels, "mean")


def test_projector_output_rms_holds_rows_at_the_learned_gain():
    torch.manual_seed(0)
    proj = PixelShuffleProjector(8, 16, output_rms=2.0)
    rows = proj(torch.randn(12, 8) * 50)
    assert torch.allclose(rows.pow(2).mean(-1).sqrt(), torch.full((3,), 2.0), atol=1e-3)
    assert PixelShuffleProjector(8, 16).output_gain is None
    with pytest.raises(ValueError, match="output_rms"):
        PixelShuffleProjector(8, 16, output_rms=-1.0)


def test_place_code_adds_each_tokens_x_and_y_along_two_fixed_directions():
    torch.manual_seed(0)
    plain, placed = PixelShuffleProjector(8, 16, output_rms=1.0), PixelShuffleProjector(8, 16, output_rms=1.0,
                                                                                          place_scale=0.5)
    placed.load_state_dict(plain.state_dict())
    features, grid = torch.randn(24, 8), torch.tensor([[2, 4], [4, 2], [2, 4]])  # three images of two tokens
    delta = placed(features, grid) - plain(features, grid)
    directions = place_directions(16)
    assert torch.allclose(directions @ directions.T, 16 * torch.eye(2), atol=1e-4)  # orthogonal, RMS 1 each
    assert torch.allclose(delta, 0.5 * token_positions(grid) @ directions, atol=1e-5)
    assert torch.equal(placed(features), plain(features))  # without the grid (the vision stage's code target): none
    assert torch.equal(place_directions(16), place_directions(16).clone())
    with pytest.raises(ValueError, match="place_scale"):
        PixelShuffleProjector(8, 16, place_scale=-1.0)


def test_logits_only_where_a_label_follows_give_the_full_loss():
    model = andes_lib.build_model("nano")
    ids = torch.randint(20, 500, (3, 12))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[1, 9:] = -100
    target = labels[:, 1:]
    full = F.cross_entropy(model(input_ids=ids).logits[:, :-1].flatten(0, 1), target.flatten(), reduction="sum")
    kept = model(input_ids=ids, logits_to_keep=F.pad(target != -100, (0, 1))).logits
    assert kept.shape == (int((target != -100).sum()), model.config.text_config.vocab_size)
    assert torch.allclose(F.cross_entropy(kept, target[target != -100], reduction="sum"), full, rtol=1e-5)


def test_token_labels_take_the_most_common_object_of_each_2x2_block():
    shapes = torch.tensor([0, 2, 2, 3, 0, 0, 0, 0])
    colours = torch.tensor([0, 1, 1, 4, 0, 0, 0, 0])
    s, c, g = token_labels({"shape_labels": shapes, "colour_labels": colours})
    assert not g.any()  # no glyph labels: background
    assert s.tolist() == [2, 0] and c.tolist() == [1, 0]


def test_probe_reports_accuracies_and_scales():
    model, proc = andes_lib.build_model("nano"), andes_lib.build_processor("nano")
    rows = list(build_dataset("validation", ["hallucination"], 6, progress=False).select_columns(["domain", "images", "scene"]))
    out = probe_visual_tokens(model, proc, rows[:4], rows[4:])
    assert 0 <= out["shape"] <= 1 and 0 <= out["colour"] <= 1 and out["object_tokens"] > 0
    # nano's projector holds rows at RMS 1 at init, plus its place code (0.7 x and y along two orthogonal directions)
    assert 1.0 <= out["visual_rms"] <= (1 + 2 * 0.7**2) ** 0.5 and out["position_r2"] > 0.99
    assert 0 <= out["object_share"] <= 1 and out["position_r2"] <= 1


def test_token_positions_are_block_centres_in_projector_order():
    xy = token_positions(torch.tensor([[2, 4], [4, 2]]))  # two images: tokens side by side, then one above the other
    assert torch.allclose(xy, torch.tensor([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5]]))


def test_position_r2_reads_a_linear_place_and_not_noise():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(400, 2, generator=g) * 2 - 1
    rows = xy @ torch.randn(2, 16, generator=g) + 0.05 * torch.randn(400, 16, generator=g)
    assert position_r2(rows[:300], xy[:300], rows[300:], xy[300:]) > 0.95
    noise = torch.randn(400, 16, generator=g)
    assert position_r2(noise[:300], xy[:300], noise[300:], xy[300:]) < 0.1


def test_object_share_is_one_for_pure_codes_and_falls_with_nuisance():
    shapes, colours = torch.tensor([1, 1, 2, 2, 3, 3, 0]), torch.tensor([1, 1, 2, 2, 1, 1, 0])
    codes = torch.randn(4, 8)
    pure = codes[shapes] + codes[colours]
    assert object_share(pure, shapes, colours) == pytest.approx(1.0)
    noisy = pure + 3 * torch.randn(len(shapes), 8)
    assert object_share(noisy, shapes, colours) < 0.9


@pytest.mark.slow
def test_oracle_benchmark_runs_end_to_end():
    spec = importlib.util.spec_from_file_location("oracle_binding", ROOT / "benchmarks" / "oracle_binding.py")
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    args = argparse.Namespace(init="fresh", real=False, mix="general_vqa/color:1", n_train=32, steps=3, batch=8,
                              lr=1e-3, std=0.02, rms=1.0, weighting="sample", every=3, seed=0, json="",
                              labeler="", projector_lr=-1.0, pos=1.0, pos_kind="ramp")
    result = oracle.run(args)
    assert set(result) == set(oracle.PROBE_TASKS) and all(0 <= v <= 1 for v in result.values())
