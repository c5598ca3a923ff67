"""Muon + AdamW in one optimizer (`andes_lib.train.optim`), checked against torch's own Muon and AdamW."""

from __future__ import annotations

import pytest
import torch

import andes_lib
from andes_lib.train.loop import param_groups
from andes_lib.train.optim import MuonAdamW, orthogonalize
from andes_lib.train.recipes import RECIPES, StageRecipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_orthogonalize_flattens_the_singular_values():
    torch.manual_seed(0)
    for shape in ((32, 48), (48, 32)):
        g = torch.randn(*shape) @ torch.diag(torch.logspace(-1, 1, shape[1]))
        before, after = torch.linalg.svdvals(g), torch.linalg.svdvals(orthogonalize(g))
        assert orthogonalize(g).shape == g.shape and before.max() / before.min() > 50
        assert after.max() < 1.25 and after.min() > 0.5, after  # Newton-Schulz lands near 1, not exactly on it


@pytest.mark.parametrize("ns_dtype", ["float32", "bfloat16"])
def test_muon_steps_match_torch_muon_and_adamw_steps_match_torch_adamw(ns_dtype):
    torch.manual_seed(0)
    w, b = torch.randn(64, 96), torch.randn(96)
    ours_w, ours_b = w.clone().requires_grad_(), b.clone().requires_grad_()
    ref_w, ref_b = w.clone().requires_grad_(), b.clone().requires_grad_()
    ours = MuonAdamW([{"params": [ours_w], "muon": True}, {"params": [ours_b]}], lr=0.01, weight_decay=0.1,
                     ns_dtype=ns_dtype)
    ref = [torch.optim.Muon([ref_w], lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"),
           torch.optim.AdamW([ref_b], lr=0.01, weight_decay=0.1, betas=(0.9, 0.98))]
    for _ in range(4):
        gw, gb = torch.randn(64, 96), torch.randn(96)
        ours_w.grad, ref_w.grad, ours_b.grad, ref_b.grad = gw.clone(), gw.clone(), gb.clone(), gb.clone()
        ours.step()
        for o in ref:
            o.step()
    moved = (ref_w - w).abs().mean()
    assert (ours_w - ref_w).abs().mean() < 0.02 * moved  # torch iterates in bfloat16 (its scaling differs slightly)
    assert torch.allclose(ours_b, ref_b, atol=1e-6)


def test_a_muon_group_takes_matrices_only_and_recipes_name_known_optimizers():
    with pytest.raises(ValueError, match="not 2-D"):
        MuonAdamW([{"params": [torch.zeros(4, requires_grad=True)], "muon": True, "name": "bias"}])
    with pytest.raises(ValueError, match="optimizer must be one of"):
        StageRecipe(name="x", lr={"projector": 1e-3}, data={"gui": 1.0}, optimizer="sgd")
    with pytest.raises(ValueError, match="precision must be one of"):
        StageRecipe(name="x", lr={"projector": 1e-3}, data={"gui": 1.0}, precision="fp16")
    with pytest.raises(ValueError, match="ns_dtype"):
        MuonAdamW([torch.zeros(2, 2, requires_grad=True)], ns_dtype="float16")


def test_muon_trains_the_llm_decoder_matrices_and_adamw_the_rest():
    model = andes_lib.build_model("nano")
    groups = {g["name"]: g for g in param_groups(model, RECIPES["nano-pt2"].replace(optimizer="muon"))}
    muon = {id(p) for p in groups["language_model/muon"]["params"]}
    matrices = {id(p) for layer in model.model.language_model.layers for p in layer.parameters() if p.dim() == 2}
    assert muon == matrices and groups["language_model/muon"]["muon"]
    embed = model.model.language_model.embed_tokens.weight
    assert id(embed) not in muon and any(p is embed for p in groups["language_model"]["params"])
    assert not groups["projector"]["muon"] and "language_model/muon" not in {
        g["name"] for g in param_groups(model, RECIPES["nano-pt2"].replace(optimizer="adamw"))}
