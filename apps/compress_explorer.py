"""Explore the packed models of chapter 11: pick a bits-per-weight point, see its size, quality and an answer.

Start: `python apps/compress_explorer.py [--run-dir runs/<timestamp>]` (http://127.0.0.1:7862). It lists the packed
files chapter 11 wrote under `<run>/compress/<model>/`, reads their perplexity/agreement from the run's metrics, and
answers a question with the chosen file (loaded from disk, unpacked).
"""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `apps` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr

from andes_lib.compress import answer, file_bpw, load_language_model, load_packed
from andes_lib.report import METRICS_DIR, run_dir
from apps._launch import serve_run_dir_app


def find_packed(run: str | Path) -> dict[str, Path]:
    """'<model>/<label> (x.xx bpw)' -> packed file, sorted by bits per weight (unreadable files are skipped)."""
    found = []
    for path in sorted(Path(run).glob("compress/*/*.safetensors")):
        try:
            found.append((file_bpw(path), f"{path.parent.name}/{path.stem} ({file_bpw(path):.2f} bpw)", path))
        except ValueError:
            continue
    return {label: path for _, label, path in sorted(found)}


def sweep_scores(run: str | Path) -> dict[str, dict]:
    """Label -> row of the `compress/sweep` table recorded in the run's metrics (empty if none)."""
    rows: dict[str, dict] = {}
    for doc in sorted(Path(run, METRICS_DIR).glob("*.json")):
        for table in json.loads(doc.read_text(encoding="utf-8")).get("tables", []):
            if table.get("name") == "compress/sweep":
                rows.update({r["label"]: r for r in table["rows"]})
    return rows


@lru_cache(maxsize=2)
def _tokenizer(model_name: str):
    return load_language_model(model_name)[1]


def describe(path: str | Path, question: str, run: str | Path, max_new_tokens: int = 32) -> str:
    """Markdown: size on disk, bpw from the file, recorded perplexity/agreement, and the model's answer."""
    path = Path(path)
    if not question.strip():
        raise gr.Error("type a question first")
    try:
        bpw = file_bpw(path)
        model = load_packed(path)
    except (ValueError, FileNotFoundError) as e:
        raise gr.Error(f"cannot load {path.name}: {e}") from e
    score = sweep_scores(run).get(path.stem)
    quality = (f"perplexity **{score['perplexity']:.2f}**, top-1 agreement with fp32 **{score['agreement']:.3f}**"
               if score else "quality not recorded in this run")
    reply = answer(model, _tokenizer(path.parent.name), question, max_new_tokens)
    return (f"**{path.stem}**: {os.path.getsize(path) / 2**20:.1f} MiB on disk, **{bpw:.3f} bits per weight** "
            f"(counted from the file); {quality}.\n\n**Answer:** {reply}")


def build_app(run: str | Path | None = None) -> gr.Blocks:
    """The explorer over one run directory (default: $ANDES_RUN_DIR or runs/interactive)."""
    run = Path(run) if run else run_dir()
    files = find_packed(run)
    with gr.Blocks(title="Andes Cookbook · sub-2-bit explorer") as app:
        gr.Markdown("# Sub-2-bit explorer\nPacked models written by chapter 11 in "
                    f"`{run}`" + ("" if files else ": **none found, run notebook 11 first**."))
        choice = gr.Dropdown(list(files), label="packed model (by bits per weight)",
                             value=next(iter(files), None))
        question = gr.Textbox("What is the capital of France?", label="question")
        go = gr.Button("Load and answer", variant="primary")
        out = gr.Markdown()
        go.click(lambda c, q: describe(files[c], q, run) if c in files else "no packed model selected",
                 [choice, question], out, api_name="answer")
    return app


def main(argv: list[str] | None = None) -> None:
    serve_run_dir_app(build_app, __doc__.splitlines()[0], 7862, argv)


if __name__ == "__main__":
    main()
