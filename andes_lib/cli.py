"""The ``andes-cookbook`` command line: run the notebooks as a batch, list them, render a run's report.

A subcommand is a function ``_add_<name>(subparsers)`` that builds its parser with :func:`_command`
(which binds the handler); list it in ``COMMANDS``. A handler returns the exit code and raises
:class:`~andes_lib.runner.UsageError` for mistakes in what was asked (printed with usage, exit code 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from andes_lib import report, runner
from andes_lib.runner import UsageError

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``andes-cookbook``; returns the exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as err:
        command_parser: argparse.ArgumentParser = args.command_parser
        command_parser.error(str(err))  # prints usage, exits with code 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="andes-cookbook", description="Run and report the Andes Cookbook notebooks.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def _command(subparsers: argparse._SubParsersAction, name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
    """Add a subcommand whose parser reports its own usage on errors."""
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler, command_parser=parser)
    return parser


def _add_notebooks_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebooks-dir", type=Path, default=None, metavar="DIR",
                        help=f"where the NN_topic.ipynb chapters are (default: ${runner.ENV_NOTEBOOKS_DIR} "
                             "or the checkout's notebooks/)")


def _discover(args: argparse.Namespace) -> list[runner.Notebook]:
    folder = args.notebooks_dir or runner.default_notebooks_dir()
    notebooks = runner.discover(folder)
    if not notebooks:
        raise UsageError(f"no notebooks named {runner.NOTEBOOK_GLOB} in {folder}")
    return notebooks


# ----------------------------------------------------------------------------- run
def _add_run(subparsers: argparse._SubParsersAction) -> None:
    p = _command(subparsers, "run", "execute the notebooks in order into a run directory, then write its report",
                 _run)
    p.add_argument("--only", nargs="+", action="extend", metavar="NN",
                   help="run only these notebooks (number prefixes such as 00 03, or names)")
    p.add_argument("-p", "--param", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                   help="override a parameter in every selected notebook that declares it; VALUE is read as YAML "
                        "(20 -> int, 1e-4 -> float, true -> bool, [a, b] -> list)")
    p.add_argument("--params", type=Path, metavar="FILE.yaml",
                   help='YAML of NAME: value pairs and/or per-notebook sections ("03": {NAME: value}); '
                        "-p wins over the file, a section over the file's globals")
    p.add_argument("--run-dir", type=Path, metavar="DIR",
                   help="run into this directory (default: runs/<YYYYmmdd-HHMMSS> beside the notebooks folder); "
                        "an existing run is updated, so a failed chapter can be re-run into it with --only")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: %(default)s)")
    p.add_argument("--smoke", action="store_true",
                   help="use each notebook's small test parameters (the nbmake mock of its parameters cell)")
    _add_notebooks_dir(p)


def _run(args: argparse.Namespace) -> int:
    notebooks = _discover(args)
    planned = runner.plan(notebooks, args.only, runner.parse_assignments(args.param), args.params, args.smoke)
    run = args.run_dir or runner.new_run_dir(notebooks[0].path.resolve().parent.parent / "runs")
    print(f"run directory: {run.resolve()}", file=sys.stderr)
    try:
        results = runner.execute(planned, run, kernel=args.kernel, smoke=args.smoke)
    except KeyboardInterrupt:
        print(f"interrupted; partial report: {report.write_report(run)}", file=sys.stderr)
        return 130
    failed = [r.name for r in results if r.status != "ok"]
    summary = f"{len(results)} notebook(s): {len(results) - len(failed)} ok, {len(failed)} failed"
    print(summary + (f" ({', '.join(failed)})" if failed else ""), file=sys.stderr)
    print(f"report: {report.write_report(run)}")
    return 1 if failed else 0


# ----------------------------------------------------------------------------- list
def _add_list(subparsers: argparse._SubParsersAction) -> None:
    p = _command(subparsers, "list", "list the notebooks with their parameters, defaults and smoke values", _list)
    _add_notebooks_dir(p)


def _list(args: argparse.Namespace) -> int:
    for nb in _discover(args):
        print(f"{nb.name}  ({nb.path})")
        rows = [(name, info["default"], repr(nb.smoke[name]) if name in nb.smoke else "", info["help"])
                for name, info in nb.parameters.items()]
        if not rows:
            print("    (no parameters cell)")
            continue
        widths = [max(len(r[i]) for r in [("NAME", "DEFAULT", "SMOKE", ""), *rows]) for i in range(3)]
        for row in [("NAME", "DEFAULT", "SMOKE", "HELP"), *rows]:
            print(("    " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + "  " + row[3]).rstrip())
    return 0


# ----------------------------------------------------------------------------- report
def _add_report(subparsers: argparse._SubParsersAction) -> None:
    p = _command(subparsers, "report", "re-render report.md and report.html of a run directory", _report)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")


def _report(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        raise UsageError(f"run directory {args.run_dir} does not exist")
    print(f"report: {report.write_report(args.run_dir)}")
    return 0


# ----------------------------------------------------------------------------- app
APPS_DIR = Path(__file__).resolve().parents[1] / "apps"


def _add_app(subparsers: argparse._SubParsersAction) -> None:
    p = _command(subparsers, "app", "start a Gradio demo from the checkout's apps/ (binds 127.0.0.1 by default)", _app)
    p.add_argument("name", choices=["chat"], help="which app")
    p.add_argument("app_args", nargs=argparse.REMAINDER, metavar="...",
                   help="the app's own options, e.g. --port 7860 --checkpoint nano (see: app chat --help)")


def _app(args: argparse.Namespace) -> int:
    if not (APPS_DIR / f"{args.name}.py").is_file():
        raise UsageError(f"the apps live in a source checkout: {APPS_DIR / args.name}.py not found")
    sys.path.insert(0, str(APPS_DIR.parent))
    return importlib.import_module(f"apps.{args.name}").main(args.app_args)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_run, _add_list, _add_report, _add_app]

if __name__ == "__main__":
    sys.exit(main())
