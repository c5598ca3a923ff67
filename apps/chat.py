"""Chat with the cookbook's model: images + a question in, a streamed answer out.

Start: `python apps/chat.py` or `andes-cookbook app chat` (http://127.0.0.1:7860). Embed: `build_app().launch()`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `apps` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr
import torch

from apps._engine import (MAX_UPLOAD_BYTES, RANDOM_NANO, RESCAN_S, SAMPLES_DIR, TRAINED, Engine, Settings,
                          build_trained, load_images, load_samples, scan_checkpoints, split_thinking)

MODES = ("Instruct", "Thinking")
QUEUE_SIZE = 64


def failed(history: list, message: str) -> tuple[list, str]:
    """Show `message` as a warning toast and as an error reply in the chat; returns (chat, stats)."""
    gr.Warning(message)
    return [*history, {"role": "assistant", "content": f"**Error:** {message}"}], f"**Error:** {message}"


def build_app(checkpoint: str | Path | None = None, run_dir: str | Path | None = None,
              samples_dir: str | Path = SAMPLES_DIR, engine: Engine | None = None) -> gr.Blocks:
    """The chat app. `checkpoint`: "nano", an artifact name or a save_pretrained folder; default: the best found."""
    engine = engine or Engine()
    extra = checkpoint if checkpoint is not None and Path(checkpoint).is_dir() else None
    found = scan_checkpoints(run_dir, extra)
    if checkpoint is None:
        fixed = None
    elif str(checkpoint) == "nano":
        fixed = RANDOM_NANO
    elif extra is not None:
        fixed = Path(extra).name
    elif str(checkpoint) in found.sources:
        fixed = str(checkpoint)
    else:
        raise ValueError(f"unknown checkpoint {checkpoint!r}: not a folder, and the run directory has only "
                         f"{', '.join(found.sources)}")
    samples = load_samples(samples_dir)
    build_lock = threading.Lock()
    gr.set_static_paths([Path(samples_dir).resolve()])  # serve the example images in place

    def rescan(current: str | None, shown_notice: str) -> tuple[dict, str, dict]:
        """Dropdown, notice and build button for the checkpoints now on disk. A page still on the random fallback
        (its notice shown) moves to the trained checkpoint once one exists; a user's choice is kept while it exists."""
        found = scan_checkpoints(run_dir, extra)
        fallback_over = fixed is None and current == RANDOM_NANO and bool(shown_notice) and found.default != RANDOM_NANO
        if current not in found.sources or fallback_over:
            current = fixed if fixed in found.sources else found.default
        return (gr.update(choices=list(found.sources), value=current), found.notice,
                gr.update(visible=TRAINED not in found.sources))

    def build(progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple[dict, str, dict]:  # noqa: ARG001
        """Fetch or train TRAINED (one build at a time; `progress` shows the training's tqdm bars), then select it."""
        with build_lock:
            build_trained(run_dir)
        return rescan(TRAINED, "")

    def load(label: str) -> Iterator[str]:
        source = scan_checkpoints(run_dir, extra).sources.get(label)
        if source is None:
            yield f"**Unknown checkpoint** {label!r}"
            return
        if not engine.is_loaded(source):
            yield f"Loading **{label}** …"
            engine.load(source)
        yield f"Ready: **{label}**"

    def respond(gallery: list | None, question: str, history: list | None, label: str, mode: str,
                max_new_tokens: int, temperature: float, top_k: int, top_p: float) -> Iterator[tuple[list, str]]:
        """Stream the answer into the chat; bad inputs become a warning and an error message in the chat."""
        history, question = list(history or []), (question or "").strip()
        paths = [item[0] if isinstance(item, (list, tuple)) else item for item in gallery or []]
        source = scan_checkpoints(run_dir, extra).sources.get(label)
        problem = ("Type a question first." if not question else
                   f"Unknown checkpoint {label!r}; press ↻ to rescan." if source is None else None)
        try:
            images = [] if problem else load_images(paths)
        except ValueError as err:
            problem = f"Could not use the upload: {err}"
        if problem:
            yield failed([*history, {"role": "user", "content": question or "(no question)"}], problem)
            return
        history += [{"role": "user", "content": [*({"path": p} for p in paths), question]}]
        if not engine.is_loaded(source):
            yield [*history, {"role": "assistant", "content": f"Loading {label} …"}], ""
        settings = Settings(int(max_new_tokens), float(temperature), int(top_k), float(top_p), mode == "Thinking")
        try:
            for text, stats in engine.stream(source, images, question, settings):
                thought, answer = split_thinking(text, settings.thinking)
                if not answer:
                    answer = "…" if stats is None else "(no answer after the thinking)" if thought else "(no answer)"
                reply = [{"role": "assistant", "content": answer}]
                if thought is not None:
                    status = "pending" if stats is None else "done"
                    reply.insert(0, {"role": "assistant", "content": thought or "…",
                                     "metadata": {"title": "Thinking", "status": status}})
                yield [*history, *reply], stats.markdown() if stats else "generating …"
        except ValueError as err:  # e.g. a prompt longer than the model takes
            yield failed(history, str(err))

    def pick(evt: gr.SelectData) -> tuple[list[str], str]:
        sample = samples[evt.index]
        return [str(p) for p in sample.images], sample.question

    with gr.Blocks(title="Andes Cookbook · chat") as demo:
        gr.Markdown("# Andes Cookbook · chat\nUpload images, ask in English or 中文, and watch the answer stream.")
        notice = gr.Markdown(found.notice)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                with gr.Row():
                    ckpt = gr.Dropdown(list(found.sources), value=fixed or found.default, label="Checkpoint",
                                       scale=5)
                    rescan_btn = gr.Button("↻", scale=1, min_width=40)
                build_btn = gr.Button(f"Get {TRAINED}", size="sm", visible=TRAINED not in found.sources)
                status = gr.Markdown("Loading the model …", elem_id="status")
                mode = gr.Radio(list(MODES), value="Instruct", label="Mode",
                                info="Thinking: the model reasons inside <think> first (shown collapsed)")
                with gr.Accordion("Generation settings", open=False):
                    max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens")
                    temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature", info="0 = greedy")
                    top_k = gr.Slider(0, 200, value=50, step=1, label="Top-k", info="0 = off")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
                images = gr.Gallery(label=f"Images (up to {MAX_UPLOAD_BYTES // 2**20} MB each)", type="filepath",
                                    file_types=["image"], interactive=True, columns=3, height=220,
                                    object_fit="contain")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Chat", height=440, elem_id="chat")
                question = gr.Textbox(placeholder="Ask about the images, e.g. What colour is the star? / 有几个圆?",
                                      label="Question", show_label=False, lines=1, max_lines=4,
                                      elem_id="question")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear = gr.Button("Clear chat")
                stats = gr.Markdown(label="Stats", elem_id="stats")
        if samples:
            examples = gr.Gallery([(str(s.images[0]), f"[{s.domain}] {s.question}") for s in samples],
                                  label="Examples from data_samples/ (click one, then Send)", columns=9,
                                  height=300, object_fit="contain", allow_preview=False, interactive=False,
                                  elem_id="examples")
            examples.select(pick, None, [images, question], api_visibility="private")
        else:
            gr.Markdown(f"*No example samples in `{samples_dir}` yet.*")

        inputs = [images, question, chatbot, ckpt, mode, max_new_tokens, temperature, top_k, top_p]
        send.click(respond, inputs, [chatbot, stats], api_name="chat")
        question.submit(respond, inputs, [chatbot, stats], api_visibility="private")
        clear.click(lambda: ([], ""), None, [chatbot, stats], api_visibility="private")
        demo.load(rescan, [ckpt, notice], [ckpt, notice, build_btn], api_visibility="private").then(
            load, ckpt, status, api_visibility="private")
        ckpt.change(load, ckpt, status, api_visibility="private")
        build_btn.click(build, None, [ckpt, notice, build_btn], api_visibility="private")
        rescan_btn.click(rescan, [ckpt, notice], [ckpt, notice, build_btn], api_visibility="private")
        gr.Timer(RESCAN_S).tick(rescan, [ckpt, notice], [ckpt, notice, build_btn], api_visibility="private",
                                queue=False, show_progress="hidden")
    return demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="andes-cookbook app chat", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default: %(default)s; 0.0.0.0 exposes the app to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--checkpoint", help='"nano" (random init), an artifact name, or a save_pretrained folder '
                                             "(default: the best checkpoint in the run directory)")
    parser.add_argument("--run-dir", type=Path,
                        help="run directory whose checkpoints to offer (default: the artifact cache's default)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="queue workers (default: %(default)s); generation itself runs one request at a time")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default: %(default)s; the nano model gains nothing from more, "
                             "and the server needs a core)")
    parser.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the chat app; returns when the server stops."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        demo = build_app(args.checkpoint, args.run_dir)
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=QUEUE_SIZE)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD_BYTES,
                show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
