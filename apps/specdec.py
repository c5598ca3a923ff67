"""Speculative decoding, live: SmolLM2-135M answers with the EAGLE-style draft head; draft tokens are coloured.

Start: `python apps/specdec.py` (http://127.0.0.1:7861). The head comes from notebook 10's run
(`<run>/specdec/head`, `--head` to point elsewhere); without one the app drafts with an untrained head and says so
(the answer is the same, only slower). Before the head, each round looks up a continuation in the prompt and the
answer so far (notebook 10's lookup first, without its corpus), and SmolLM2 runs on oneDNN-prepacked linear layers
(bf16 where the CPU has AMX, with notebook 10's exact verification).
Embed: `build_app().launch()`, or `speculative_tab(...)` inside a Blocks.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `apps` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr
import torch

from andes_lib.profile.prepack import pack_dtype, prepack_available, prepack_linears
from andes_lib.report import run_dir as resolve_run_dir
from andes_lib.specdec import DraftHead, Target, chat_ids, speculative_stream
from andes_lib.specdec.invariant import exact_verify
from andes_lib.specdec.lookup import NgramLookup
from andes_lib.specdec.view import DRAFT_COLOUR, colour_tokens

MAX_PROMPT_CHARS = 4000
EXAMPLES = ["List 5 fruits.", "Write a Python function that reverses a string.",
            "Explain the water cycle in simple terms."]


class SpecEngine:
    """Target + head, loaded on first use (SmolLM2 and the run's head) unless given; one generation at a time."""

    def __init__(self, target: Target | None = None, tokenizer=None, head: DraftHead | None = None,
                 head_dir: str | Path | None = None):
        self.target, self.tokenizer, self.head = target, tokenizer, head
        self.head_dir = Path(head_dir) if head_dir else resolve_run_dir() / "specdec" / "head"
        self.notice = ""
        self.lookup = NgramLookup()  # no corpus: the prompt and the answer so far
        self.lock = threading.Lock()

    def ensure(self) -> None:
        if self.target is None:
            from andes_lib.model.smol import load_smol_llm, load_smol_tokenizer

            model = load_smol_llm()
            if prepack_available():  # a cheap verify pass (notebook 10, step 1)
                dtype = pack_dtype("auto")
                prepack_linears(model, dtype=dtype)
                if dtype == torch.bfloat16:
                    exact_verify(model)  # bf16 inputs: verify rows as decoding steps, so the answer stays greedy's
            self.target, self.tokenizer = Target(model), load_smol_tokenizer()
        if self.head is None:
            if (self.head_dir / "draft_head.safetensors").is_file():
                self.head = DraftHead.load(self.head_dir, self.target)
            else:
                self.head = DraftHead.from_target(self.target)
                self.notice = (f"No trained head in {self.head_dir} (run notebook 10): drafting with an untrained "
                               "head, so few tokens come from the draft. The answer itself is the same.")

    def stream(self, prompt: str, mode: str, max_new_tokens: int) -> Iterator[tuple[str, str]]:
        """(coloured answer HTML, stats markdown) after every verify round."""
        prompt = (prompt or "").strip()
        if not prompt:
            raise gr.Error("Type a prompt first.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise gr.Error(f"The prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}.")
        with self.lock:
            self.ensure()
            ids = chat_ids(self.tokenizer, prompt)
            tokens, drafted, rounds, t0 = [], [], 0, time.perf_counter()
            for step in speculative_stream(self.target, self.head, ids, int(max_new_tokens), mode=mode,
                                           lookup=self.lookup, lookup_min=1):
                tokens += step.tokens
                drafted += step.drafted
                rounds += 1
                seconds = time.perf_counter() - t0
                stats = (f"{len(tokens)} tokens in {seconds:.1f} s ({len(tokens) / seconds:.1f} tok/s), "
                         f"{rounds} target forwards, {sum(drafted)} tokens from the draft "
                         f"(<span style='background:{DRAFT_COLOUR}'>green</span>)")
                yield colour_tokens(self.tokenizer, tokens, drafted), stats + (f"\n\n{self.notice}" if self.notice else "")


def speculative_tab(engine: SpecEngine) -> None:
    """The tab's widgets and events, inside an open `gr.Blocks` / `gr.Tab` context."""
    prompt = gr.Textbox(label="Prompt", lines=3, value=EXAMPLES[0])
    with gr.Row():
        mode = gr.Radio(["tree", "chain"], value="tree", label="Drafting")
        max_new = gr.Slider(8, 256, value=96, step=8, label="Max new tokens")
    go_btn = gr.Button("Generate", variant="primary")
    answer = gr.HTML(label="Answer")
    stats = gr.Markdown()
    gr.Examples(EXAMPLES, inputs=prompt)
    go_btn.click(engine.stream, [prompt, mode, max_new], [answer, stats], api_name="speculate")


def build_app(engine: SpecEngine | None = None) -> gr.Blocks:
    engine = engine or SpecEngine()
    with gr.Blocks(title="Andes Cookbook: speculative decoding") as demo:
        with gr.Tab("Speculative decoding"):
            gr.Markdown("Greedy answers from SmolLM2-135M-Instruct with an EAGLE-style draft head: identical to "
                        "plain greedy decoding, with the tokens the target accepted from the draft in green.")
            speculative_tab(engine)
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apps/specdec.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7861, help="port (default: %(default)s)")
    parser.add_argument("--head", type=Path, help="a draft-head folder (default: <run>/specdec/head)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    demo = build_app(SpecEngine(head_dir=args.head))
    demo.queue(default_concurrency_limit=1, max_size=16)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
