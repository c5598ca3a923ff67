"""Learning-rate probe for the from-scratch nano vision tower (the reason behind the recipes' small vision LRs).

Task: one shape (28 px) on a plain 96x96 background; "What colour is the shape?". Batch 16, AdamW, grad clip 1,
starting from the `nano-llm` artifact (built by its recipe when missing). Prints held-out accuracy of the first
answer token (64 items) every 10 steps for each (vision+projector LR, LLM LR) setting, side by side.

    .venv/bin/python benchmarks/probe_lr.py --steps 60 --run-dir runs/probe
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText

import andes_lib
from andes_lib.data.render import BACKGROUNDS, COLOURS, SHAPES, draw_shape
from andes_lib.train import get_artifact
from andes_lib.train.collate import IGNORE_INDEX, collate
from andes_lib.train.loop import apply_freeze, param_groups
from andes_lib.train.recipes import RECIPES


def sample(rng: random.Random) -> dict:
    image = Image.new("RGB", (96, 96), rng.choice(BACKGROUNDS))
    colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
    x, y = rng.randint(0, 66), rng.randint(0, 66)
    draw_shape(ImageDraw.Draw(image), shape, (x, y, x + 28, y + 28), COLOURS[colour])
    question = [{"type": "image"}, {"type": "text", "text": "What colour is the shape?"}]
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": [{"type": "text", "text": colour}]}], "images": [image]}


def accuracy(model, processor, rows) -> float:
    """Share of rows whose first answer token is the argmax (teacher-forced)."""
    batch = collate(processor, rows, "assistant")
    labels = batch.pop("labels")
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    model.train()
    first = (labels != IGNORE_INDEX).float().argmax(1)
    idx = torch.arange(len(rows))
    return float((logits[idx, first - 1].argmax(-1) == labels[idx, first]).float().mean())


def probe(init: str, lr_vision: float, lr_llm: float, steps: int) -> list[tuple[int, float, float]]:
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(init)
    processor = andes_lib.AndesVLProcessor.from_pretrained(init)
    lrs = {"vision_tower": lr_vision, "projector": lr_vision, "language_model": lr_llm}
    recipe = RECIPES["nano-sft"].replace(lr=lrs)
    model.train()
    apply_freeze(model, recipe)
    optimizer = torch.optim.AdamW(param_groups(model, recipe), betas=recipe.betas)
    rng, test = random.Random(0), [sample(random.Random(10**6 + i)) for i in range(64)]
    out = []
    for step in range(1, steps + 1):
        batch = collate(processor, [sample(rng) for _ in range(16)], "assistant")
        labels = batch.pop("labels")
        loss = model(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == steps:
            out.append((step, loss.item(), accuracy(model, processor, test)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--run-dir", default="runs/probe")
    parser.add_argument("--settings", default="3e-4:3e-4,1e-3:3e-4,3e-4:1e-3,1e-3:1e-3",
                        help="comma-separated vision_lr:llm_lr pairs")
    args = parser.parse_args()
    init = str(get_artifact("nano-llm", args.run_dir))
    for setting in args.settings.split(","):
        lr_v, lr_l = (float(x) for x in setting.split(":"))
        t0 = time.perf_counter()
        curve = probe(init, lr_v, lr_l, args.steps)
        print(f"vision/projector lr {lr_v:g}, LLM lr {lr_l:g} ({time.perf_counter() - t0:.0f} s): "
              + "  ".join(f"step {s}: {100 * a:.0f}%" for s, _, a in curve), flush=True)


if __name__ == "__main__":
    main()
