"""KV-cache eviction explorer (report §4, OKV): a long prompt, a policy and a ratio in; the answer and the kept
tokens highlighted out, next to the full-cache answer.

Start: `python apps/okv.py` (http://127.0.0.1:7862). Embed: `build_app().launch()`, or as a tab:
`with gr.Tab("OKV"): build_app().render()`. It uses the real SmolLM2-135M-Instruct (loaded once, on first use).
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `apps` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr
import torch

from andes_lib import kv
from andes_lib.kv.plots import kept_share
from andes_lib.kv.sweep import prepare

MAX_NEW_TOKENS = {**kv.tasks.ANSWER_TOKENS, "custom": 48}
MAX_PROMPT_CHARS = 12_000


@functools.lru_cache(maxsize=1)
def load_smol():
    from andes_lib.model.smol import load_smol_llm, load_smol_tokenizer

    return load_smol_llm().eval(), load_smol_tokenizer()


def example(task: str, seed: int) -> tuple[str, str, str]:
    """The document, question and answer start (empty when the task has none) of one generated sample."""
    sample = kv.make_samples(task, 1, seed=int(seed))[0]
    return sample.document, sample.question, sample.prime


def highlighted(pre: kv.Prefill, tokenizer, policy: str, ratio: float) -> list[tuple[str, str | None]]:
    """(token text, label) pairs: 'kept' when most layer x heads keep the token, 'evicted' otherwise."""
    share = kept_share(pre, policy, ratio)
    pieces = tokenizer.batch_decode(pre.input_ids[0, :-1].view(-1, 1))
    return [(p, "kept" if s >= 0.5 else "evicted") for p, s in zip(pieces, share.tolist(), strict=True)]


def explore(document: str, question: str, policy: str, ratio: float, task: str, model=None, tokenizer=None,
            prime: str = ""):
    """Answer with the full cache and with the evicted one; return both answers, the kept tokens and a note.

    `prime` starts the answer for the model, as the chapter does (the generated examples fill it in)."""
    if not document.strip() or not question.strip():
        raise gr.Error("give both a document and a question")
    if len(document) > MAX_PROMPT_CHARS:
        raise gr.Error(f"the document has {len(document)} characters; the explorer takes at most {MAX_PROMPT_CHARS}")
    try:
        kv.check_policy(policy)
        kv.check_ratio(float(ratio))
    except ValueError as err:
        raise gr.Error(str(err)) from err
    if model is None:
        model, tokenizer = load_smol()
    prime = prime.strip()
    if not prime and task == "multidoc" and question.startswith("In which city does ") and question.endswith(" live?"):
        prime = question.removeprefix("In which city does ").removesuffix(" live?") + " lives in"
    sample = kv.Sample(task, document, question, "", "rouge1", prime=prime)
    with torch.no_grad():
        pre = prepare(model, tokenizer, sample)
        new = MAX_NEW_TOKENS.get(task, 48)
        try:
            caches = [kv.evict(pre, "okv", 0.0)[0], kv.evict(pre, policy, float(ratio))[0]]
        except ValueError as err:
            raise gr.Error(str(err)) from err
        answers = [tokenizer.decode(kv.generate_evicted(model, pre, c, new)[0], skip_special_tokens=True)
                   for c in caches]
    sizes = [kv.cache_bytes(c) for c in caches]
    note = (f"{pre.layout.length} prompt tokens cached; {policy} at {float(ratio):.0%} keeps "
            f"{caches[1].layers[0].keys.shape[-2]} per layer and head: {sizes[1] / 2**20:.1f} MiB of KV "
            f"instead of {sizes[0] / 2**20:.1f} MiB")
    return prime + answers[0], prime + answers[1], highlighted(pre, tokenizer, policy, float(ratio)), note


def build_app(model=None, tokenizer=None) -> gr.Blocks:
    """The explorer. `model`/`tokenizer` default to SmolLM2-135M-Instruct, loaded on the first question."""
    lock = threading.Lock()

    def run(document, question, prime, policy, ratio, task):
        with lock:  # one generation at a time
            return explore(document, question, policy, ratio, task, model, tokenizer, prime)

    with gr.Blocks(title="Andes Cookbook · KV-cache eviction") as demo:
        gr.Markdown("## KV-cache eviction explorer\nPick a generated long prompt (or paste your own), a policy and the "
                    "share of prompt KV to evict. The prompt is prefilled once; the evicted cache then answers "
                    "through `generate`. OKV here is our re-creation of the paper's method.")
        with gr.Row():
            task = gr.Dropdown(list(kv.TASKS), value="recite", label="task")
            seed = gr.Number(0, precision=0, label="sample seed")
            load = gr.Button("Load example")
        document = gr.Textbox(lines=8, label="document", max_lines=16)
        question = gr.Textbox(label="question")
        prime = gr.Textbox(label="the answer starts with (optional)")
        with gr.Row():
            policy = gr.Radio(list(kv.POLICIES), value="okv", label="policy")
            ratio = gr.Slider(0.0, 0.9, value=0.5, step=0.05, label="share of prompt KV evicted")
            go_btn = gr.Button("Answer", variant="primary")
        with gr.Row():
            full = gr.Textbox(label="full cache answer")
            evicted = gr.Textbox(label="evicted cache answer")
        note = gr.Markdown()
        kept = gr.HighlightedText(label="kept tokens (most layers x heads keep them)",
                                  color_map={"kept": "green", "evicted": "lightgray"}, combine_adjacent=True)
        load.click(example, [task, seed], [document, question, prime], api_name="example")
        go_btn.click(run, [document, question, prime, policy, ratio, task], [full, evicted, kept, note],
                     api_name="answer")
        demo.load(example, [task, seed], [document, question, prime])
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    parser.add_argument("--port", type=int, default=7862)
    args = parser.parse_args(argv)
    build_app().queue(max_size=16).launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
