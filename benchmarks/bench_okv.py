"""OKV acceptance figures on the real SmolLM2-135M (report §4): quality per policy at the given eviction ratios
on one task, with the spread over prompts, and the measured KV-cache bytes. Prints one JSON line per answer, then
a summary. Chapter 09 runs the full sweep (all tasks, all ratios); this is the quick check of one cell of it.

For the Rouge tasks it also prints `facts`: the share of the reference's own words (those in fewer than half of the
document's paragraphs: names, cities, hobbies) that the answer states. The `restate` profiles share one sentence
pattern, so Rouge-1 rewards copying the pattern; `facts` says whether the asked paragraph was retrieved. The
`recite` notes share no pattern: the chapter's Rouge task.

    python benchmarks/bench_okv.py --task recite --prompts 30 --ratios 0 0.5 --threads 2   # the acceptance cell
    python benchmarks/bench_okv.py --task restate --prompts 30 --ratios 0 0.5               # the counter-example
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch

from andes_lib import kv
from andes_lib.kv.sweep import answer_rows, prepare
from andes_lib.kv.tasks import ANSWER_TOKENS, fact_recall, score
from andes_lib.model.smol import load_smol_llm, load_smol_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="recite", choices=kv.TASKS)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="document length (1.0: about 1k tokens)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_smol_llm().eval(), load_smol_tokenizer()
    rows, start = [], time.perf_counter()
    for i, sample in enumerate(kv.make_samples(args.task, args.prompts, seed=args.seed, scale=args.scale)):
        pre = prepare(model, tokenizer, sample)
        for ratio in args.ratios:
            for row in answer_rows(model, tokenizer, pre, list(kv.POLICIES), ratio, ANSWER_TOKENS[args.task]):
                row.update(prompt=i, tokens=int(pre.input_ids.shape[1]), score=score(row["answer"], sample),
                           facts=fact_recall(row["answer"], sample))
                rows.append(row)
                print(json.dumps(row), flush=True)
    df = pd.DataFrame(rows)
    print(df.pivot_table(index="policy", columns="ratio", values="score", aggfunc=["mean", "std"]).round(3))
    if kv.make_samples(args.task, 1, seed=args.seed)[0].metric == "rouge1":
        print("facts (share of the reference's own words in the answer):")
        print(df.pivot_table(index="policy", columns="ratio", values="facts", aggfunc="mean").round(3))
    full = df[df.ratio == 0].groupby("prompt")["kv_bytes"].first()
    for ratio in args.ratios:
        share = (df[df.ratio == ratio].groupby("prompt")["kv_bytes"].first() / full).mean() if len(full) else float("nan")
        print(f"ratio {ratio}: KV-cache bytes {share:.4f} of full (measured tensors)")
        at = df[df.ratio == ratio].pivot_table(index="prompt", columns="policy", values="score")
        if ratio > 0 and "okv" in at and len(at.columns) > 1:
            best = at.drop(columns="okv").mean().idxmax()
            gain = at["okv"] - at[best]
            full_score = df[df.ratio == 0].groupby("prompt")["score"].first().mean()
            print(f"ratio {ratio}: OKV {at['okv'].mean():.3f} ({at['okv'].mean() / full_score:.1%} of full "
                  f"{full_score:.3f}); best baseline {best} {at[best].mean():.3f}; margin {gain.mean():+.3f}, "
                  f"spread (std over prompts of the gain) {gain.std():.3f}")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
