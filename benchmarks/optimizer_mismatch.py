"""Post-training a Muon-trained model with AdamW (issue #12 item 4; chapter 05's header): what it costs.

`nano-sft`'s decoder was trained with Muon. This script fine-tunes it for a few steps on its *own* instruction data
(correct answers, every domain: a replay that should change nothing) once with AdamW and once with Muon (the
SFT stage's optimizer, `andes_lib.posttrain.common.posttrain_optimizer`), same learning rate, steps and data, and
compares both with the SFT model and with the SFT model plus random noise of the size of the update (a share
`--noise` of each parameter's norm). If AdamW loses points where Muon and the noise do not, the loss is the
optimizer mismatch, not the data.

    python benchmarks/optimizer_mismatch.py --run-dir runs/final2            # 100 test questions per domain
    python benchmarks/optimizer_mismatch.py --run-dir runs/final2 --eval-n 300

`nano-sft` comes from `--run-dir` or the artifact cache (it is trained first when neither has it).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from andes_lib.data import build_dataset
from andes_lib.eval import evaluate
from andes_lib.posttrain import get_artifact, load_checkpoint, run_thinking_sft, thinking_sft_data
from andes_lib.report import run_dir


def scores(model, processor, test, n: int) -> dict:
    """Per-domain accuracy and POPE accuracy (percent)."""
    result = evaluate(model, processor, test, n=n, batch_size=32, progress=False)
    return {**{d: round(100 * v, 1) for d, v in result.scores().items()},
            "pope": round(100 * (result.pope() or {}).get("accuracy", float("nan")), 1)}


@torch.no_grad()
def add_noise(model, share: float, seed: int) -> None:
    """Add Gaussian noise of norm `share` x the parameter's norm to every parameter."""
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        noise = torch.randn(p.shape, generator=generator)
        p.add_(share * p.norm() / noise.norm() * noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/optimizer_mismatch")
    parser.add_argument("--replay", type=int, default=80, help="instruction samples per domain")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--noise", type=float, default=0.01, help="noise norm as a share of each parameter's norm")
    parser.add_argument("--eval-n", type=int, default=100, help="test samples per domain")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames gradient_checkpointing
    run = run_dir(args.run_dir)
    sft_dir = get_artifact("nano-sft", run)
    model, processor = load_checkpoint(sft_dir)
    test = build_dataset("test", n_per_domain=args.eval_n, progress=False)
    print(json.dumps({"model": "SFT", **scores(model, processor, test, args.eval_n)}), flush=True)
    add_noise(model, args.noise, seed=0)
    print(json.dumps({"model": f"SFT + noise ({args.noise:g} of each norm)",
                      **scores(model, processor, test, args.eval_n)}), flush=True)
    data = thinking_sft_data(processor, n_thinking=0, n_replay=args.replay, seed=11)
    for optimizer in ("adamw", "muon"):
        start = time.perf_counter()
        out = Path(run) / "optimizer_mismatch" / optimizer
        res = run_thinking_sft(sft_dir, data, out, steps=args.steps, batch_size=args.batch, lr=args.lr, seed=0,
                               log_every=args.steps, optimizer=optimizer, lr_scheduler_type="constant_with_warmup",
                               warmup_steps=5)
        tuned, _ = load_checkpoint(res.path)
        print(json.dumps({"model": f"SFT replay, {optimizer}", "seconds": round(time.perf_counter() - start),
                          **scores(tuned, processor, test, args.eval_n)}), flush=True)


if __name__ == "__main__":
    main()
