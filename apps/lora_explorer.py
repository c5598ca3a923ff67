"""Explore 1+N LoRA under deployment settings (chapters 07-08): pick an adapter and a quantization setting, ask.

Start: `python apps/lora_explorer.py [--run-dir runs/<timestamp>]` (http://127.0.0.1:7863). It lists what chapters
07 and 08 wrote in the run directory: the floating-point base with its adapters, the PTQ-only base, and the QALFT
base with its own adapters (`andes_lib.quant.deploy`). Broken adapter files are reported and the rest still serve.
"""

from __future__ import annotations

import sys
import time
from functools import lru_cache
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `apps` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr
from PIL import Image

from andes_lib.adapters import TASKS, generate_mixed
from andes_lib.quant.deploy import Deployment, find_deployments, load_deployment
from andes_lib.report import run_dir
from apps._launch import serve_run_dir_app

NO_ADAPTER = "(base: no adapter)"


@lru_cache(maxsize=2)
def _loaded(dep: Deployment):
    return load_deployment(dep)


def answer(deployments: dict[str, Deployment], setting: str, adapter: str, image: Image.Image | None,
           question: str, max_new_tokens: int = 24) -> str:
    """Markdown: the answer of `adapter` (or the bare base) under `setting` to `question` about `image`."""
    if setting not in deployments:
        raise gr.Error(f"unknown setting {setting!r}; available: {sorted(deployments)}")
    if not isinstance(question, str) or not question.strip():
        raise gr.Error("type a question first")
    model, processor, failures = _loaded(deployments[setting])
    served = sorted(getattr(model, "peft_config", {}))
    name = None if adapter in (None, "", NO_ADAPTER) else adapter
    if name is not None and name not in served:
        why = failures.get(name, "not in this setting's registry")
        raise gr.Error(f"adapter {name!r} is not available under {setting}: {why}")
    images = [image.convert("RGB")] if image is not None else []
    t0 = time.perf_counter()
    reply = generate_mixed(model, processor, [{"images": images, "question": question.strip(), "adapter": name}],
                           max_new_tokens=max_new_tokens)[0]
    skill = TASKS[name].description if name in TASKS else "the shared base"
    note = f"\n\n_Unavailable adapters: {', '.join(sorted(failures))}_" if failures else ""
    return (f"**{setting}**, adapter **{name or 'none'}** ({skill}), {time.perf_counter() - t0:.2f} s\n\n"
            f"**Answer:** {reply}{note}")


def build_app(run: str | Path | None = None) -> gr.Blocks:
    """The explorer over one run directory (default: $ANDES_RUN_DIR or runs/interactive)."""
    run = Path(run) if run else run_dir()
    deployments = find_deployments(run)
    adapters = [NO_ADAPTER] + list(TASKS)
    with gr.Blocks(title="Andes Cookbook · 1+N LoRA explorer") as app:
        gr.Markdown("# 1+N LoRA explorer\nAdapters and quantized bases written by chapters 07-08 in "
                    f"`{run}`" + ("" if deployments else ": **none found, run notebooks 07 and 08 first**."))
        with gr.Row():
            setting = gr.Dropdown(list(deployments), value=next(iter(deployments), None), label="setting")
            adapter = gr.Dropdown(adapters, value=adapters[1], label="adapter")
        image = gr.Image(type="pil", label="image")
        question = gr.Textbox("Describe the objects in the image.", label="question")
        go = gr.Button("Answer", variant="primary")
        out = gr.Markdown()
        go.click(lambda s, a, i, q: answer(deployments, s, a, i, q), [setting, adapter, image, question], out,
                 api_name="answer")
    return app


def main(argv: list[str] | None = None) -> None:
    serve_run_dir_app(build_app, __doc__.splitlines()[0], 7863, argv)


if __name__ == "__main__":
    main()
