"""Length-sorted micro-batches and packed rows against one padded batch: the same rows, the same gradient, less padding.

For each stage, the stage's first `--steps` batches (its own data stream, from its parent artifact) run forward and
backward once as one padded batch, split into 2 and 4 micro-batches of rows sorted by length, and as 2 micro-batches
whose samples are packed into rows of `max_seq_len` tokens (`collate.pack_rows`), side by side in one process;
printed: seconds per step, tokens (padding included) against real ones, and the largest difference between the
gradients (the loop normalises the loss over the whole step, so it is float rounding only).

    python benchmarks/bench_microbatch.py --run-dir runs/bench          # pt2, pt3 and SFT of the nano chain

Builds the parents through the artifact cache when they are missing (the nano chain up to pt3 on a first run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from andes_lib.train import get_artifact  # noqa: E402
from andes_lib.train.collate import collate  # noqa: E402
from andes_lib.train.loop import apply_freeze, load_start  # noqa: E402
from andes_lib.train.loss import label_weights, lm_loss_sum  # noqa: E402
from andes_lib.train.recipes import get_recipe  # noqa: E402
from andes_lib.train.stream import DataStream, build_pools, length_sorted_split  # noqa: E402


def step_gradient(model, processor, recipe, rows, lengths, parts: int,
                  pack: int = 0) -> tuple[float, int, list[torch.Tensor]]:
    """(seconds, tokens with padding, gradients) of one step's forward and backward over `parts` micro-batches."""
    micro = [collate(processor, part, recipe.loss_on, pack=pack) for part in length_sorted_split(rows, lengths, parts)]
    total = sum(float(label_weights(b, recipe.loss_weighting).sum()) for b in micro)
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for batch in micro:
        (lm_loss_sum(model, batch, recipe.loss_weighting) / total).backward()
    seconds = time.perf_counter() - t0
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return seconds, sum(b["input_ids"].numel() for b in micro), grads


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--stages", nargs="+", default=["pt2", "pt3", "sft"])
    p.add_argument("--steps", type=int, default=4, help="batches timed per setting")
    args = p.parse_args(argv)
    out = {}
    for stage in args.stages:
        recipe = get_recipe(stage)
        model, processor = load_start(recipe, get_artifact(f"nano-{recipe.parent}", args.run_dir))
        model.train()
        apply_freeze(model, recipe)
        stream = DataStream(recipe, build_pools(recipe, processor, progress=False))
        out[stage] = {}
        reference: list[torch.Tensor] = []  # the first step's gradients as one batch
        for setting in ("1", "2", "4", "2 packed"):
            parts, pack = int(setting[0]), recipe.max_seq_len if "packed" in setting else 0
            seconds, padded, real, diff = 0.0, 0, 0, 0.0
            for step in range(1, args.steps + 1):
                rows, lengths = stream.batch(step), stream.lengths(step)
                s, n, grads = step_gradient(model, processor, recipe, rows, lengths, parts, pack)
                seconds, padded, real = seconds + s, padded + n, real + sum(lengths)
                if step == 1:
                    reference = reference or grads
                    diff = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
                               for a, b in zip(grads, reference, strict=True))
            out[stage][setting] = {"seconds_per_step": seconds / args.steps, "padded_tokens": padded,
                                   "real_tokens": real, "max_relative_gradient_difference": diff}
            print(f"{stage:4s} {setting} micro-batch(es): {seconds / args.steps:.3f} s/step, {padded} tokens for "
                  f"{real} real, gradient differs by {diff:.1e} (relative to its largest entry)", flush=True)
    (args.run_dir / "bench_microbatch.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
