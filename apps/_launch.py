"""The command line shared by the run-directory explorers: `--run-dir`, `--host` (default 127.0.0.1), `--port`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any


def serve_run_dir_app(build_app: Callable[[str | None], Any], description: str, port: int,
                      argv: Sequence[str] | None = None) -> None:
    """Parse the explorer's arguments and launch `build_app(run_dir)` (bound to this machine unless --host)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    args = parser.parse_args(argv)
    build_app(args.run_dir).launch(server_name=args.host, server_port=args.port)
