"""What teaching the `vision` stage to read costs its shapes: build `nano-vision` with a given data mix and steps, then
print held-out patch-label accuracy per domain (shape and colour on object patches, character on text patches).

    python benchmarks/vision_reading.py --run-dir runs/vr0                    # the recipe as committed (shapes only)
    python benchmarks/vision_reading.py --run-dir runs/vr1 --steps 1000 \\
        --data '{"general_vqa": 1, "hallucination": 2, "multi_image": 1, "text_rich": 1, "chart": 0.5, "reasoning": 0.5}'

Results are recorded in `03` section 7 (round 4). Writes JSON to <run-dir>/vision_reading.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from andes_lib.data import build_dataset  # noqa: E402
from andes_lib.train import get_artifact  # noqa: E402
from andes_lib.train.patch_labels import load_labeler, patch_label_accuracy  # noqa: E402

DOMAINS = ("general_vqa", "hallucination", "multi_image", "text_rich", "chart", "multilingual", "reasoning", "gui")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--data", type=json.loads, default=None, help="the vision stage's data mix (JSON); default: recipe")
    p.add_argument("--steps", type=int, default=0, help="the vision stage's steps (0: the recipe's)")
    p.add_argument("--n", type=int, default=30, help="held-out images per domain")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    changes = {**({"data": args.data} if args.data else {}), **({"steps": args.steps} if args.steps else {})}
    path = get_artifact("nano-vision", args.run_dir, overrides={"vision": changes} if changes else None)
    labeler, processor = load_labeler(path)
    out = {}
    for domain in DOMAINS:
        rows = list(build_dataset("test", [domain], args.n, progress=False).select_columns(["domain", "images", "scene"]))
        scores = patch_label_accuracy(labeler, processor, rows)
        out[domain] = {k: scores[k] for k in ("shape", "colour", "glyph")}
        print(f"{domain:14s} " + "  ".join(f"{k} {v:.3f}" for k, v in out[domain].items()))
    (args.run_dir / "vision_reading.json").write_text(json.dumps({"changes": changes, "accuracy": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
