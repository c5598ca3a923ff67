"""SFT mix variants from the same `nano-pt3` (issue #12 item 3): the margin over blind on the seven paper domains,
on the validation and test splits, for extra weight on some `domain/task` sources (or any other SFT recipe change).

Each variant is one `get_artifact("nano-sft", overrides=...)` (cached by fingerprint, so a variant trains once) and
the same evaluation as chapter 04 (`evaluate` with real and blank images), at `--n` questions per domain. The figures
in `recipes.SFT_MIX`'s comment and chapter 03, section 7, come from it, for example:

    python benchmarks/sft_mix.py --name none --sft '{"data": {"multi_image/same": 0, "multi_image/odd": 0}}'
    python benchmarks/sft_mix.py --name same --sft '{"data": {"multi_image/odd": 0}}'
    python benchmarks/sft_mix.py --name same_odd                       # the recipe as it is
    python benchmarks/sft_mix.py --name same_changed --sft '{"data": {"multi_image/odd": 0, "multi_image/changed": 1}}'

`--sft` holds recipe fields as JSON; its `data` entries are merged into the recipe's mix (a weight of 0 drops a source).
"""

from __future__ import annotations

import argparse
import json
import time

from andes_lib.data import DOMAINS, build_dataset
from andes_lib.eval import evaluate
from andes_lib.posttrain import load_checkpoint
from andes_lib.train import get_artifact
from andes_lib.train.recipes import get_recipe


def overrides(change: dict) -> dict:
    """SFT recipe overrides: `data` merged into the recipe's mix (0 removes a source), other fields replaced."""
    if not isinstance(change, dict):
        raise ValueError(f"--sft must be a JSON object of recipe fields, got {change!r}")
    data = {**get_recipe("sft").data, **change.get("data", {})}
    return {"sft": {**{k: v for k, v in change.items() if k != "data"}, "data": {k: w for k, w in data.items() if w}}}


def margins(model, processor, split: str, n: int) -> dict:
    """Per paper domain: accuracy with real minus blank images (points), their mean, and per-task accuracy."""
    data = build_dataset(split, DOMAINS, n_per_domain=n, progress=False)
    real, blind = (evaluate(model, processor, data, progress=False, blind=b) for b in (False, True))
    group_real, group_blind = real.scores("group"), blind.scores("group")
    per = {g: round(100 * (group_real[g] - group_blind[g]), 1) for g in group_real}
    return {"margin": round(sum(per.values()) / len(per), 2), "by_domain": per,
            "tasks": {k: round(100 * v, 1) for k, v in real.scores("task").items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the variant's run directory: runs/sft_mix/<name>")
    parser.add_argument("--sft", default="{}", help="SFT recipe changes as JSON (see the docstring)")
    parser.add_argument("--splits", nargs="+", default=["validation", "test"])
    parser.add_argument("--n", type=int, default=300, help="questions per domain")
    args = parser.parse_args()
    start = time.perf_counter()
    path = get_artifact("nano-sft", f"runs/sft_mix/{args.name}", overrides=overrides(json.loads(args.sft)),
                        progress=False)
    model, processor = load_checkpoint(path)
    print(f"{args.name}: nano-sft ready in {time.perf_counter() - start:.0f} s ({path})", flush=True)
    for split in args.splits:
        print(json.dumps({"variant": args.name, "split": split, "n": args.n, **margins(model, processor, split, args.n)}),
              flush=True)


if __name__ == "__main__":
    main()
