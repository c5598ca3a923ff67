"""What MPO's preference pairs teach `nano-sft` (report §2, post-training; issue #12 item 4): per-domain test
deltas over SFT for one pair mix, loss weighting, learning rate and set of frozen module groups, one MPO run per seed.

Chapter 05 runs the default recipe over three seeds; this script varies what the chapter keeps fixed. The figures
in 05's header come from it, for example:

    # hallucination pairs alone, about 4 epochs (60 steps of 16 over ~250 pairs), MPO and the SFT term alone
    python benchmarks/mpo_pairs.py --domains hallucination --sampled 256 --answer-space 64 --steps 60 --batch 16 \
        --pair-seed 11
    python benchmarks/mpo_pairs.py --domains hallucination --sampled 256 --answer-space 64 --steps 60 --batch 16 \
        --pair-seed 11 --weights 0 0 1
    # ... with the vision tower and projector frozen
    python benchmarks/mpo_pairs.py --domains hallucination --sampled 256 --answer-space 64 --steps 60 --batch 16 \
        --pair-seed 11 --freeze vision_tower projector
    # one epoch of fresh answer-space pairs, SFT term alone
    python benchmarks/mpo_pairs.py --domains hallucination --sampled 0 --answer-space 960 --steps 60 --batch 16 \
        --pair-seed 11 --weights 0 0 1 --seeds 0
    # the chapter's pairs with AdamW instead of the SFT model's own optimizer (Muon), and the SFT term alone
    python benchmarks/mpo_pairs.py --optimizer adamw --seeds 0 --eval-n 300
    python benchmarks/mpo_pairs.py --optimizer adamw --weights 0 0 1 --seeds 0 --eval-n 300
    # pairs sought where the model errs: 8x the hallucination prompts, yes/no pairs balanced or not
    python benchmarks/mpo_pairs.py --sampled-hallucination 256 --seeds 0 --eval-n 300
    python benchmarks/mpo_pairs.py --sampled-hallucination 256 --no-balance --seeds 0 --eval-n 300
    # 240 more hallucination answer-space pairs, then also the vision tower and projector frozen (05's defaults)
    python benchmarks/mpo_pairs.py --answer-space-hallucination 240 --seeds 0 --eval-n 300
    python benchmarks/mpo_pairs.py --answer-space-hallucination 240 --freeze vision_tower projector --seeds 0 \
        --eval-n 300
    # the chosen side from the model's own right answers (05's default since 2026-12-05), on the validation split
    python benchmarks/mpo_pairs.py --answer-space-hallucination 240 --freeze vision_tower projector --seeds 0 \
        --eval-n 300 --split validation --steps 80 --batch 8 --lr 6e-5 --chosen sampled
    # 64 more multilingual answer-space pairs (05's default since round 9 of `03` section 7), validation split
    python benchmarks/mpo_pairs.py --answer-space-hallucination 240 --answer-space-multilingual 64 \
        --freeze vision_tower projector --seeds 0 --eval-n 300 --split validation --steps 80 --batch 16 --lr 6e-5 \
        --chosen sampled

`nano-sft` comes from `--run-dir` or the artifact cache (it is trained first when neither has it).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import Counter
from pathlib import Path

from datasets import concatenate_datasets
from transformers import AutoModelForImageTextToText

from andes_lib.data import DOMAINS, build_dataset
from andes_lib.eval import evaluate
from andes_lib.posttrain import build_mpo_pairs, get_artifact, load_checkpoint, run_mpo
from andes_lib.report import run_dir


def summary(result) -> dict:
    """Per-domain scores, hallucination and multilingual by task, POPE metrics (percent)."""
    tasks = result.scores("task")
    pope = {k: (round(v, 3) if k == "yes_ratio" else round(100 * v, 1)) for k, v in (result.pope() or {}).items()}
    return {"domains": {k: round(100 * v, 1) for k, v in result.scores().items()},
            **{f"{d}_tasks": {k: round(100 * v, 1) for k, v in tasks.items() if k.startswith(f"{d}/")}
               for d in ("hallucination", "multilingual")}, "pope": pope}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/mpo_pairs")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS, help="domains of the pairs")
    parser.add_argument("--sampled", type=int, default=32, help="training prompts per domain the SFT model answers")
    parser.add_argument("--sampled-hallucination", type=int, default=0,
                        help="extra hallucination training prompts answered for pairs (0: none)")
    parser.add_argument("--answer-space-hallucination", type=int, default=0,
                        help="extra hallucination answer-space pairs (fresh train scenes, the flipped yes/no)")
    parser.add_argument("--answer-space-multilingual", type=int, default=0,
                        help="extra multilingual answer-space pairs (05's MULTILINGUAL_PAIRS)")
    parser.add_argument("--no-balance", action="store_true", help="keep yes/no pairs as sampled")
    parser.add_argument("--optimizer", default=None, choices=["muon", "adamw"],
                        help="default: the one nano-sft was trained with")
    parser.add_argument("--answer-space", type=int, default=16, help="answer-space pairs per domain")
    parser.add_argument("--pair-seed", type=int, default=2, help="seed of the training prompts and the sampling")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--weights", type=float, nargs=3, default=[0.8, 0.2, 1.0],
                        help="preference (DPO), quality (BCO), generation (SFT)")
    parser.add_argument("--freeze", nargs="*", default=[], help="module groups kept fixed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--eval-n", type=int, default=100, help="evaluation samples per domain")
    parser.add_argument("--chosen", default="reference", choices=["reference", "sampled"],
                        help="the sampled pairs' chosen side: the generator's answer or a right sampled answer (05)")
    parser.add_argument("--split", default="test", choices=["validation", "test"],
                        help="the split the deltas are measured on (validation: for choosing a recipe)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames gradient_checkpointing
    run = run_dir(args.run_dir)
    sft_dir = get_artifact("nano-sft", run)
    model, processor = load_checkpoint(sft_dir)
    start = time.perf_counter()
    pairs, stats = build_mpo_pairs(model, processor, args.domains, n_sampled=args.sampled,
                                   n_answer_space=args.answer_space, k=4, seed=args.pair_seed, batch_size=32,
                                   balance=not args.no_balance,
                                   extra_answer_space={"hallucination": args.answer_space_hallucination,
                                                       "multilingual": args.answer_space_multilingual},
                                   chosen=args.chosen)
    print(stats.to_string())
    if args.sampled_hallucination:
        extra, extra_stats = build_mpo_pairs(model, processor, ["hallucination"], n_sampled=args.sampled_hallucination,
                                             n_answer_space=0, k=4, seed=args.pair_seed + 10, batch_size=32,
                                             balance=not args.no_balance, chosen=args.chosen)
        print(extra_stats.to_string())
        pairs = concatenate_datasets([pairs, extra]).shuffle(seed=args.pair_seed)
    print(f"{len(pairs)} pairs in {time.perf_counter() - start:.0f} s: {dict(Counter(pairs['domain']))}")
    test = build_dataset(args.split, n_per_domain=args.eval_n, progress=False)
    sft = summary(evaluate(model, processor, test, n=args.eval_n, batch_size=32, progress=False))
    print(json.dumps({"model": "SFT", **sft}))
    for seed in args.seeds:
        start = time.perf_counter()
        out = Path(run) / "mpo_pairs" / f"seed{seed}"
        res = run_mpo(sft_dir, pairs, out, steps=args.steps, batch_size=args.batch, lr=args.lr, beta=args.beta,
                      weights=tuple(args.weights), seed=seed, freeze=tuple(args.freeze), optimizer=args.optimizer)
        tuned = AutoModelForImageTextToText.from_pretrained(str(res.path))
        got = summary(evaluate(tuned, processor, test, n=args.eval_n, batch_size=32, progress=False))
        delta = {d: round(v - sft["domains"][d], 1) for d, v in got["domains"].items()}
        print(json.dumps({"model": f"MPO seed {seed}", "seconds": round(time.perf_counter() - start), **got,
                          "delta_over_sft": delta}))


if __name__ == "__main__":
    main()
