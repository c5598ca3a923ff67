"""What a Thinking model's rationales say about the image, step by step, read against each reasoning test scene
(chapter 06's header; issue #12 item 4): are the transcribed digits right, the stated dot counts, the stated count,
and does the final answer follow the rationale?

    python benchmarks/probe_thinking.py runs/<run>/posttrain/thinking/think-sft            # 300 per task mix
    python benchmarks/probe_thinking.py runs/<run>/posttrain/thinking/grpo-stage2 --n 100

Prints one line per task: the share of answers right and of each rationale step right (regular expressions over the
generators' rationale templates in `andes_lib.data.reasoning`; a rationale that does not follow the template counts as
wrong), then a few rationales.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter

from andes_lib.data import build_dataset
from andes_lib.eval import evaluate
from andes_lib.posttrain import load_checkpoint

EXPRESSION = re.compile(r"shows (\d) ([+-]) (\d)")
COUNT = re.compile(r"[Tt]here (?:is|are) (\d+)")
SIDES = re.compile(r"left side has (\d+) dots and the right side has (\d+)")


def steps(task: str, scene: dict, output: str) -> dict[str, bool]:
    """Which rationale steps match the scene."""
    if task == "arithmetic":
        a, op, b = scene["text"].split()
        m = EXPRESSION.search(output)
        got = m.groups() if m else (None, None, None)
        return {"first digit": got[0] == a, "operator": got[1] == op, "second digit": got[2] == b,
                "expression": got == (a, op, b)}
    if task == "count":
        found = COUNT.findall(output)
        return {"stated count": bool(found) and found[-1] == scene["answer"]}
    left = sum((o["box"][0] + o["box"][2]) / 2 < scene["divider"] for o in scene["objects"])
    right = len(scene["objects"]) - left
    m = SIDES.search(output)
    if not m:
        return {"left count": False, "right count": False, "order of the counts": False}
    said_left, said_right = int(m.group(1)), int(m.group(2))
    return {"left count": said_left == left, "right count": said_right == right,
            "order of the counts": (said_left > said_right) == (left > right)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a Thinking model's folder (chapter 06 saves them under posttrain/thinking)")
    parser.add_argument("--n", type=int, default=300, help="reasoning test questions")
    parser.add_argument("--shown", type=int, default=6, help="rationales printed")
    args = parser.parse_args()
    model, processor = load_checkpoint(args.checkpoint)
    test = build_dataset("test", ["reasoning"], n_per_domain=args.n, progress=False)
    result = evaluate(model, processor, test, n=args.n, batch_size=32, thinking=True, max_new_tokens=96, progress=False)
    scenes = {r["id"]: {**json.loads(r["scene"]), "answer": r["answer"]} for r in test}
    totals, right = Counter(), Counter()
    for rec in result.records:
        task = rec["task"]
        totals[task] += 1
        right[(task, "answer")] += rec["score"]
        for step, ok in steps(task, scenes[rec["id"]], rec["output"]).items():
            right[(task, step)] += ok
    for task in sorted(totals):
        shares = {step: round(100 * v / totals[task], 1) for (t, step), v in right.items() if t == task}
        print(f"{task} ({totals[task]}): {shares}")
    for rec in result.records[: args.shown]:
        print(f"[{rec['task']}, answer {rec['answer']}] {rec['output'][:160]!r}")


if __name__ == "__main__":
    main()
