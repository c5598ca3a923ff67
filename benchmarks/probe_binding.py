"""In-context binding probe for the nano language model: the skill that general VQA and POPE need (issue #4).

Text only, no image: "The picture shows a red star and a blue circle. What colour is the star?". With one object
the answer is a copy; with two or three objects the model must *bind* the colour to the named shape, the same
lookup "What colour is the star?" or "Is there a star?" asks of the visual tokens. Each task trains the nano LLM
alone (from the `nano-llm` artifact, or a fresh one with --fresh), batch 16, AdamW, on freshly drawn items, and
prints held-out accuracy of the first answer token (200 items) every --every steps, beside the score of naming
one of the present colours at random.

    .venv/bin/python benchmarks/probe_binding.py --steps 1000 --run-dir runs/probe
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import AutoModelForImageTextToText

import andes_lib
from andes_lib.data.render import BASIC_SHAPES, COLOURS
from andes_lib.train import get_artifact
from andes_lib.train.collate import collate
from probe_lr import accuracy  # a sibling script: teacher-forced first-answer-token accuracy


def sample(rng: random.Random, objects: tuple[int, int]) -> dict:
    n = rng.randint(*objects)
    shapes, colours = rng.sample(BASIC_SHAPES, n), rng.sample(sorted(COLOURS), n)
    k = rng.randrange(n)
    scene = " and ".join(f"a {c} {s}" for c, s in zip(colours, shapes))
    question = f"The picture shows {scene}. What colour is the {shapes[k]}?"
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": question}]},
                         {"role": "assistant", "content": [{"type": "text", "text": colours[k]}]}], "n": n}


def probe(init: str | None, objects: tuple[int, int], steps: int, lr: float, every: int) -> list[tuple[int, float]]:
    torch.manual_seed(0)
    if init is None:
        model, processor = andes_lib.build_model("nano"), andes_lib.build_processor("nano")
    else:
        model = AutoModelForImageTextToText.from_pretrained(init)
        processor = andes_lib.AndesVLProcessor.from_pretrained(init)
    model.train()
    params = list(model.model.language_model.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98))
    rng, test = random.Random(0), [sample(random.Random(10**6 + i), objects) for i in range(200)]
    out = []
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, step / 20)
        batch = collate(processor, [sample(rng, objects) for _ in range(16)], "assistant")
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % every == 0:
            out.append((step, accuracy(model, processor, test)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--fresh", action="store_true", help="start from a random nano LLM, not nano-llm")
    parser.add_argument("--run-dir", default="")
    args = parser.parse_args()
    init = None if args.fresh else str(get_artifact("nano-llm", args.run_dir))
    tasks = {"copy (1 object)": (1, 1), "bind (2-3 objects)": (2, 3)}
    results = {}
    for name, objects in tasks.items():
        t0 = time.perf_counter()
        results[name] = probe(init, objects, args.steps, args.lr, args.every)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    # naming a present colour at random: 1/n, averaged over n drawn uniformly from the task's range
    chance = {name: sum(1 / n for n in range(lo, hi + 1)) / (hi - lo + 1) for name, (lo, hi) in tasks.items()}
    print(f"\nheld-out first-token accuracy (lr {args.lr:g}, batch 16, {'fresh' if init is None else 'nano-llm'})")
    print("step  " + "  ".join(f"{name:>20}" for name in tasks))
    for i, (step, _) in enumerate(results["copy (1 object)"]):
        print(f"{step:>4}  " + "  ".join(f"{results[name][i][1]:>20.2f}" for name in tasks))
    print("rand  " + "  ".join(f"{chance[name]:>20.2f}" for name in tasks))


if __name__ == "__main__":
    main()
