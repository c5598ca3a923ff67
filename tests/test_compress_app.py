"""The sub-2-bit explorer: lists packed files by bpw, reports size/quality, answers, refuses bad files."""

from __future__ import annotations

import json

import gradio as gr
import pytest

import andes_lib
from andes_lib.compress import save_packed
from apps.compress_explorer import build_app, describe, find_packed


def test_explorer_lists_describes_and_refuses(tmp_path) -> None:
    folder = tmp_path / "compress" / "nano"
    pf = save_packed(andes_lib.build_model("nano").eval(), folder / "plain-int2-g64.safetensors", {},
                     default="int2-g64")
    (folder / "broken.safetensors").write_bytes(b"not a model")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "11_compression.json").write_text(json.dumps({"tables": [{
        "name": "compress/sweep", "rows": [{"label": "plain-int2-g64", "perplexity": 12.5, "agreement": 0.5}]}]}))
    files = find_packed(tmp_path)
    assert list(files.values()) == [pf.path]  # the unreadable file is skipped
    text = describe(pf.path, "What colour is the circle?", tmp_path, max_new_tokens=3)
    assert f"{pf.bpw:.3f} bits per weight" in text and "perplexity **12.50**" in text and "**Answer:**" in text
    with pytest.raises(gr.Error, match="cannot load"):
        describe(folder / "broken.safetensors", "hi", tmp_path)
    assert isinstance(build_app(tmp_path), gr.Blocks)
