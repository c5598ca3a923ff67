"""Build an artifact from the command line, on one CPU or under `accelerate launch` on several GPUs.

    python -m andes_lib.train nano-sft --run-dir runs/cpu
    accelerate launch --multi_gpu --num_processes 4 -m andes_lib.train nano-sft --run-dir runs/gpu
"""

from __future__ import annotations

import argparse
import json

from .artifacts import get_artifact
from .recipes import RECIPES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m andes_lib.train", description=__doc__.splitlines()[0])
    parser.add_argument("artifact", choices=sorted(RECIPES), help="the stage to build (its parents are built first)")
    parser.add_argument("--run-dir", default="", help="run directory (default: $ANDES_RUN_DIR or runs/interactive)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply steps and data pools (smoke tests)")
    parser.add_argument("--override", default="{}",
                        help='JSON per-stage changes, e.g. \'{"sft": {"steps": 200, "batch_size": 64}}\'')
    parser.add_argument("--rebuild", action="store_true", help="retrain the stage even if its artifact exists")
    parser.add_argument("--no-cache", action="store_true", help="do not use the cross-run artifact cache")
    args = parser.parse_args(argv)
    path = get_artifact(args.artifact, args.run_dir, scale=args.scale, overrides=json.loads(args.override),
                        rebuild=args.rebuild, use_cache=not args.no_cache)
    print(path)


if __name__ == "__main__":
    main()
