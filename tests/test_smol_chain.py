"""The `smol` chain (real SmolLM2-135M + fresh vision tower) runs on the same code as nano."""

from __future__ import annotations

import pytest
import torch

import andes_lib
from andes_lib.train.artifacts import get_artifact


@pytest.mark.slow
def test_smol_chain_trains_on_cpu_at_smoke_scale(tmp_path):
    """A few steps of the encoder stand-in and of alignment on the real SmolLM2: the frozen LLM stays untouched."""
    path = get_artifact("smol-pt1", tmp_path, scale=0.005, use_cache=False, progress=False)
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == ["smol-pt1", "smol-vision"]
    fresh = andes_lib.build_model("smol").state_dict()
    trained = andes_lib.AndesVLForConditionalGeneration.from_pretrained(str(path)).state_dict()
    llm = [k for k in fresh if ".language_model." in k or k.startswith("lm_head")]
    assert llm and all(torch.equal(fresh[k], trained[k]) for k in llm)
    assert not all(torch.equal(fresh[k], trained[k]) for k in fresh if ".projector." in k)
