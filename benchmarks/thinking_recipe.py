"""What the Thinking model's recipe buys on reasoning (report §2; issue #12 item 4): chapter 06's long-CoT SFT and
two-stage GRPO from `nano-sft` with a given amount of rationale data, steps, GRPO steps and count rationale, then
Instruct vs the Thinking model (thinking on and off) per reasoning task, with a paired bootstrap interval.

The validation-split table in 06's header comes from it:

    python benchmarks/thinking_recipe.py --run-dir <run> --think-n 300 --sft-steps 120 --grpo 15 15   # former default
    python benchmarks/thinking_recipe.py --run-dir <run> --think-n 300 --sft-steps 120 --grpo 80 80 --grade-n 128
    python benchmarks/thinking_recipe.py --run-dir <run> --think-n 300 --sft-steps 120 --grpo 15 15 --scan
    python benchmarks/thinking_recipe.py --run-dir <run> --think-n 1200 --sft-steps 480 --grpo 0 0
    python benchmarks/thinking_recipe.py --run-dir <run> --think-n 1200 --sft-steps 480 --grpo 0 0 --scan
    # the control: the Instruct model given the same rows as direct answers (no rationale, no thinking mode)
    python benchmarks/thinking_recipe.py --run-dir <run> --think-n 1200 --sft-steps 480 --grpo 0 0 --direct
    # chapter 06's defaults with another training seed, on the test split
    python benchmarks/thinking_recipe.py --run-dir <run> --split test --seed 1

`nano-sft` comes from `--run-dir` or the artifact cache (it is trained first when neither has it). Models are written
under <run-dir>/benchmarks/thinking_recipe/.
"""

from __future__ import annotations

import argparse
import time
import warnings

import datasets
import pandas as pd
from transformers import AutoModelForImageTextToText

from andes_lib.data import build_dataset
from andes_lib.eval import evaluate
from andes_lib.posttrain import (THINKING_DOMAINS, get_artifact, grade, load_checkpoint, run_grpo, run_thinking_sft,
                                 stage_indices, thinking_sft_data)
from andes_lib.posttrain.analysis import item_scores, paired_bootstrap
from andes_lib.report import run_dir

FREEZE = ("vision_tower", "projector")  # chapter 06's default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/thinking_recipe")
    parser.add_argument("--think-n", type=int, default=1200, help="rationale rows per thinking domain")
    parser.add_argument("--replay-n", type=int, default=30, help="plain instruction rows per domain")
    parser.add_argument("--sft-steps", type=int, default=480)
    parser.add_argument("--sft-lr", type=float, default=5e-4)
    parser.add_argument("--scan", action="store_true", help="count rationales that scan (`scan_rationale`)")
    parser.add_argument("--direct", action="store_true",
                        help="control: the thinking rows as direct answers, evaluated with thinking off")
    parser.add_argument("--grpo", type=int, nargs=2, default=[15, 15], help="GRPO steps of stage 1 and stage 2")
    parser.add_argument("--grpo-lr", type=float, default=1e-5)
    parser.add_argument("--grade-n", type=int, default=48, help="training prompts per thinking domain graded")
    parser.add_argument("--seed", type=int, default=0, help="training seed (data order, sampling)")
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--n", type=int, default=300, help="reasoning questions evaluated")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    run = run_dir(args.run_dir)
    out = run / "benchmarks" / "thinking_recipe"
    sft_dir = get_artifact("nano-sft", run)
    processor = load_checkpoint(sft_dir)[1]
    start = time.perf_counter()
    if args.direct:
        data = datasets.concatenate_datasets([
            thinking_sft_data(processor, 0, args.think_n, replay_domains=THINKING_DOMAINS, seed=3),
            thinking_sft_data(processor, 0, args.replay_n, seed=3)]).shuffle(seed=3)
    else:
        data = thinking_sft_data(processor, args.think_n, args.replay_n, seed=3, scan=args.scan)
    sft = run_thinking_sft(sft_dir, data, out / "think-sft", steps=args.sft_steps, batch_size=16, lr=args.sft_lr,
                           seed=args.seed, freeze=FREEZE)
    print(f"long-CoT SFT: {sft.seconds:.0f} s")
    init = sft.path
    if sum(args.grpo) and not args.direct:
        rows = build_dataset("train", list(THINKING_DOMAINS), args.grade_n, seed=5, progress=False)
        grades = grade(load_checkpoint(sft.path)[0], processor, rows, k=8, max_new_tokens=96, seed=args.seed,
                       batch_size=32)
        stages = stage_indices(grades, min_rows=4)
        for tag, idx, steps in zip(("stage1", "stage2"), stages, args.grpo, strict=True):
            if idx and steps:
                init = run_grpo(init, rows.select(idx), out / f"grpo-{tag}", steps=steps, prompts_per_step=4,
                                num_generations=4, max_completion_length=96, lr=args.grpo_lr, seed=args.seed, label=tag,
                                log_every=5, freeze=FREEZE).path
    test = build_dataset(args.split, ["reasoning"], n_per_domain=args.n, progress=False)
    thinking = not args.direct
    candidates = {"Instruct": (sft_dir, False), "trained, thinking off": (init, False)}
    if thinking:
        candidates["trained, thinking on"] = (init, True)
    results = {}
    for name, (path, on) in candidates.items():
        model = AutoModelForImageTextToText.from_pretrained(str(path))
        results[name] = evaluate(model, processor, test, n=args.n, batch_size=32, thinking=on,
                                 max_new_tokens=96 if on else 32, progress=False)
    print(pd.DataFrame({k: r.scores("task") for k, r in results.items()}).mul(100).round(1).to_string())
    base = item_scores(results["Instruct"])
    for name in list(candidates)[1:]:
        gain = paired_bootstrap(base.values, item_scores(results[name]).loc[base.index].values)
        print(f"{name} vs Instruct: {gain['delta']:+.1f} [{gain['lo']:+.1f}, {gain['hi']:+.1f}] (n={gain['n']})")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
