"""The 1+N LoRA explorer: finds the run's deployments, answers per adapter and setting, survives a broken adapter,
and serves on 127.0.0.1 through gradio_client."""

from __future__ import annotations

import socket

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import andes_lib
from andes_lib.adapters import AdapterRegistry, attach_adapters, lora_config
from andes_lib.quant import calibrate, save_encodings
from andes_lib.quant.deploy import find_deployments
from andes_lib.train.collate import collate
from apps.lora_explorer import answer, build_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, proc):
    """A run directory with a float base, two adapters (one then broken) and PTQ-only encodings."""
    root = tmp_path_factory.mktemp("run")
    base = andes_lib.build_model("nano").eval()
    base.save_pretrained(root / "base")
    proc.save_pretrained(root / "base")
    model = attach_adapters(base, ["ocr", "chart"], lora_config(r=2, alpha=4))
    for name in ("ocr", "chart"):
        AdapterRegistry(root / "adapters" / "fp").save(model, name, base=str(root / "base"), task=name)
    (root / "adapters" / "fp" / "chart" / "adapter_model.safetensors").write_bytes(b"broken")
    plain = andes_lib.build_model("nano").eval()
    msgs = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Colour?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    batch = collate(proc, [{"images": [Image.new("RGB", (32, 32), "red")], "messages": msgs}])
    batch.pop("labels")
    calibrate(plain, [batch], "w4a8")
    save_encodings(plain, root / "quant" / "w4a8" / "ptq-only")
    return root


def test_explorer_answers_and_reports_broken_adapters(run) -> None:
    deps = find_deployments(run)
    assert sorted(deps) == ["PTQ-only w4a8", "floating point"]
    image = Image.new("RGB", (48, 32), "blue")
    for setting in deps:
        text = answer(deps, setting, "ocr", image, "What does the sign say?", max_new_tokens=3)
        assert "**Answer:**" in text and "Unavailable adapters: chart" in text
    with pytest.raises(gr.Error, match="'chart' is not available .* corrupt"):
        answer(deps, "floating point", "chart", image, "hi")
    with pytest.raises(gr.Error, match="unknown setting"):
        answer(deps, "int1", "ocr", image, "hi")
    with pytest.raises(gr.Error, match="type a question"):
        answer(deps, "floating point", "ocr", image, "  ")


def test_explorer_serves_on_localhost(run, tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(run)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        path = tmp_path / "q.png"
        Image.new("RGB", (48, 32), "green").save(path)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        text = client.predict("floating point", "(base: no adapter)", handle_file(str(path)), "What colour?",
                              api_name="/answer")
        assert "adapter **none**" in text and "**Answer:**" in text
    finally:
        app.close()
