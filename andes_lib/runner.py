"""Batch execution of the cookbook notebooks with papermill: discovery, parameters, run directory, status.

papermill and nbformat are imported inside the functions that need them (together about 4 s), so
``andes-cookbook report`` and ``--help`` stay fast.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from andes_lib import report

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
ENV_NOTEBOOKS_DIR = "ANDES_NOTEBOOKS_DIR"
RESERVED = ("RUN_DIR",)  # set by the runner itself (use --run-dir)
_SECTION_KEY = re.compile(r"^\d{2}(_\w+)?$")
# The kernel logs "Kernel is running over TCP without encryption..." at WARNING on every start (papermill talks to
# it over loopback TCP); its own log at ERROR keeps that off the console. Cell outputs are not affected.
KERNEL_ARGS = ("--IPKernelApp.log_level=ERROR",)


class UsageError(Exception):
    """A mistake in what the user asked for; the CLI prints the message and exits with code 2."""


@dataclass(frozen=True)
class Notebook:
    """One chapter: its file, its papermill parameters and its nbmake (smoke) test values."""

    path: Path
    parameters: dict[str, dict[str, str]]  # name -> papermill's {name, inferred_type_name, default, help}
    smoke: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def prefix(self) -> str:
        return self.name[:2]

    def matches(self, key: str) -> bool:
        """True for the number prefix ('03', or '3'), the stem ('03_sft') or the file name."""
        key = key.zfill(2) if key.isdigit() else key
        return key in (self.prefix, self.name, self.path.name)


# ----------------------------------------------------------------------------- discovery
def default_notebooks_dir() -> Path:
    """$ANDES_NOTEBOOKS_DIR, else the checkout's notebooks/ folder."""
    return Path(os.environ.get(ENV_NOTEBOOKS_DIR) or report.repo_root() / "notebooks")


def discover(notebooks_dir: Path) -> list[Notebook]:
    """All ``NN_topic.ipynb`` chapters in a folder, in order."""
    if not notebooks_dir.is_dir():
        raise UsageError(f"notebooks directory {notebooks_dir} does not exist")
    return [load_notebook(p) for p in sorted(notebooks_dir.glob(NOTEBOOK_GLOB))]


def load_notebook(path: Path) -> Notebook:
    """Read a notebook's parameters (papermill) and the nbmake mock values of its parameters cell."""
    import nbformat
    import papermill

    try:
        with _quiet_nbformat():
            nb = nbformat.read(path, as_version=4)
            parameters = papermill.inspect_notebook(path)
    except (OSError, ValueError) as err:  # nbformat and papermill raise ValueError subclasses on bad files
        raise UsageError(f"cannot read notebook {path}: {err}") from err
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    smoke = dict(cells[0].metadata.get("nbmake", {}).get("mock", {})) if cells else {}
    return Notebook(path=path, parameters=parameters, smoke=smoke)


def select(notebooks: Sequence[Notebook], only: Sequence[str] | None) -> list[Notebook]:
    """The notebooks named by ``--only`` (prefixes or stems), in discovery order; all when ``only`` is empty."""
    if not only:
        return list(notebooks)
    unknown = [key for key in only if not any(nb.matches(key) for nb in notebooks)]
    if unknown:
        raise UsageError(f"unknown notebook(s): {', '.join(unknown)}; available: {_names(notebooks)}")
    return [nb for nb in notebooks if any(nb.matches(key) for key in only)]


def _names(notebooks: Sequence[Notebook]) -> str:
    return ", ".join(nb.name for nb in notebooks) or "(none)"


# ----------------------------------------------------------------------------- parameters
class _Loader(yaml.SafeLoader):
    """YAML read as YAML 1.2 would: ``1e-4`` is a float, only true/false are bools (not yes/no/on/off), no dates."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"), list("-+0123456789.")
)


def parse_value(text: str) -> Any:
    """A ``-p`` value as YAML (``20`` -> int, ``1e-4`` -> float, ``[a, b]`` -> list); otherwise the text itself."""
    if not text.strip():
        return text
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict) and not text.lstrip().startswith("{") else value


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["STEPS=20", "LR=1e-4"]`` -> ``{"STEPS": 20, "LR": 0.0001}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"-p expects NAME=VALUE, got {item!r}")
        out[key] = _check_json(parse_value(text), key, "-p")
    return out


def load_params_file(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A YAML file of global ``NAME: value`` pairs and per-notebook sections (``"03": {NAME: value}``)."""
    if not path.is_file():
        raise UsageError(f"params file {path} not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as err:
        raise UsageError(f"params file {path} is not valid YAML: {err}") from err
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise UsageError(f"params file {path} must hold a mapping, got {type(data).__name__}")
    global_params: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        section = f"{key:02d}" if isinstance(key, int) and 0 <= key <= 99 else key  # YAML reads 03 as 3
        if isinstance(section, str) and _SECTION_KEY.match(section):
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise UsageError(f"params file {path}: section {section!r} must map parameter names to values")
            sections[section] = {k: _check_json(v, k, str(path)) for k, v in value.items()}
        elif isinstance(key, str) and key.isidentifier():
            global_params[key] = _check_json(value, key, str(path))
        else:
            raise UsageError(f"params file {path}: {key!r} is neither a parameter name nor a notebook number")
    return global_params, sections


def _check_json(value: Any, key: str, origin: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{origin}: value of {key} must be a number, string, bool, null, list or mapping") from err
    return value


def _valid(notebooks: Sequence[Notebook]) -> str:
    return "; ".join(f"{nb.name}: {', '.join(nb.parameters) or '(none)'}" for nb in notebooks)


def plan(
    notebooks: Sequence[Notebook],
    only: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    params_file: Path | None = None,
    smoke: bool = False,
) -> list[tuple[Notebook, dict[str, Any]]]:
    """Select notebooks and resolve each one's parameters, checking every name before anything runs.

    Precedence (later wins): smoke values < params file globals < params file section < ``-p`` overrides.
    A ``-p`` name must be declared by a selected notebook, a params-file global by any notebook, and a
    section's names by that section's notebook; each value goes only to notebooks that declare it.
    """
    selected = select(notebooks, only)
    overrides = dict(overrides or {})
    file_globals, sections = load_params_file(params_file) if params_file else ({}, {})
    for key in [*overrides, *file_globals]:
        if key in RESERVED:
            raise UsageError(f"{key} is set by the runner; use --run-dir instead")
    for key in overrides:
        if not any(key in nb.parameters for nb in selected):
            raise UsageError(f"unknown parameter {key!r}: no selected notebook declares it. Valid: {_valid(selected)}")
    for key in file_globals:
        if not any(key in nb.parameters for nb in notebooks):
            raise UsageError(f"{params_file}: unknown parameter {key!r}: no notebook declares it. "
                             f"Valid: {_valid(notebooks)}")
    for section, values in sections.items():
        owners = [nb for nb in notebooks if nb.matches(section)]
        if not owners:
            raise UsageError(f"{params_file}: unknown notebook {section!r}; available: {_names(notebooks)}")
        for nb in owners:
            _check_names(nb, values, f"{params_file} section {section!r}")

    resolved = []
    for nb in selected:
        params: dict[str, Any] = {}
        if smoke:
            _check_names(nb, nb.smoke, "its nbmake mock metadata")
            params.update(nb.smoke)
        params.update({k: v for k, v in file_globals.items() if k in nb.parameters})
        for section, values in sections.items():
            if nb.matches(section):
                params.update(values)
        params.update({k: v for k, v in overrides.items() if k in nb.parameters})
        for key, value in params.items():
            _check_type(nb, key, value)
        resolved.append((nb, params))
    return resolved


def _check_names(nb: Notebook, values: Mapping[str, Any], origin: str) -> None:
    for key in values:
        if key in RESERVED:
            raise UsageError(f"{origin}: {key} is set by the runner; use --run-dir instead")
        if key not in nb.parameters:
            raise UsageError(f"unknown parameter {key!r} for notebook {nb.name} ({origin}). "
                             f"Valid: {', '.join(nb.parameters) or '(none)'}")


def _check_type(nb: Notebook, key: str, value: Any) -> None:
    """Refuse a string where the notebook's default is a number or a bool (a typo such as ``STEPS=2o``)."""
    try:
        default = ast.literal_eval(nb.parameters[key]["default"])
    except (ValueError, SyntaxError):
        return
    if isinstance(default, bool | int | float) and isinstance(value, str):
        raise UsageError(f"parameter {key} of {nb.name} expects {type(default).__name__} "
                         f"(default {default!r}), got the string {value!r}")


# ----------------------------------------------------------------------------- execution
@dataclass
class Result:
    """What happened to one notebook of a batch."""

    name: str
    status: str  # "ok" | "failed" | "interrupted"
    duration_s: float
    error: str | None = None


def new_run_dir(runs_root: Path) -> Path:
    """A fresh ``runs_root/<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3`` ... if that second is taken)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        path = runs_root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {runs_root}")


def execute(
    planned: Sequence[tuple[Notebook, dict[str, Any]]],
    run: Path,
    kernel: str = "python3",
    smoke: bool = False,
) -> list[Result]:
    """Run the notebooks one after another into ``run``; a failure is recorded and the batch goes on.

    ``run.json`` is rewritten before and after each notebook, so an interrupted batch still leaves an
    accurate status; a notebook that runs again first loses its earlier metrics and figures.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    run = run.resolve()
    run.mkdir(parents=True, exist_ok=True)
    for nb, _ in planned:
        if nb.path.resolve().parent == run:
            raise UsageError(f"the run directory {run} is the notebooks directory; executed copies would overwrite it")
    manifest = report.read_manifest(run)
    manifest.setdefault("started", _now())
    manifest.update(git=_git_version(planned[0][0].path.parent) if planned else None, kernel=kernel, smoke=smoke)
    entries = manifest.setdefault("notebooks", {})
    results = []
    for i, (nb, params) in enumerate(planned, 1):
        _log(f"[{i}/{len(planned)}] {nb.name}" + (f"  {_show(params)}" if params else ""))
        _forget_outputs(run, nb.name)
        entry: dict[str, Any] = {"input": str(nb.path.resolve()), "output": f"{nb.name}.ipynb",
                                 "parameters": params, "status": "running", "error": None,
                                 "duration_s": None, "started": _now()}
        entries[nb.name] = entry
        report.write_json_atomic(run / report.MANIFEST, manifest)
        t0 = time.perf_counter()
        try:
            with _environ(kernel_env(run, nb.name)), _quiet_nbformat():
                papermill.execute_notebook(nb.path, run / f"{nb.name}.ipynb", kernel_name=kernel,
                                           parameters={**params, "RUN_DIR": str(run)}, cwd=str(nb.path.parent),
                                           extra_arguments=list(KERNEL_ARGS))
            result = Result(nb.name, "ok", time.perf_counter() - t0)
        except PapermillExecutionError as err:
            where = f" (cell [{err.exec_count}])" if err.exec_count is not None else ""
            result = Result(nb.name, "failed", time.perf_counter() - t0, f"{err.ename}: {err.evalue}{where}")
        except KeyboardInterrupt:
            entry.update(status="interrupted", duration_s=round(time.perf_counter() - t0, 2), error="KeyboardInterrupt")
            report.write_json_atomic(run / report.MANIFEST, manifest)
            raise
        except Exception as err:  # kernel died, timeout, missing kernel: the batch goes on
            result = Result(nb.name, "failed", time.perf_counter() - t0, f"{type(err).__name__}: {err}")
        entry.update(status=result.status, duration_s=round(result.duration_s, 2), error=result.error)
        manifest["finished"] = _now()
        report.write_json_atomic(run / report.MANIFEST, manifest)
        _log(f"    {result.status} in {result.duration_s:.1f} s" + (f": {result.error}" if result.error else ""))
        results.append(result)
    return results


def _forget_outputs(run: Path, name: str) -> None:
    """Drop what an earlier execution of this notebook recorded in the same run directory."""
    report.metrics_path(run, name).unlink(missing_ok=True)
    for fig in (run / report.FIGURES_DIR).glob(f"{name}--*.html"):
        fig.unlink()


@contextlib.contextmanager
def _quiet_nbformat() -> Iterator[None]:
    """Hide nbformat's MissingIDFieldWarning (cells saved before nbformat 4.5 have no `id`; ours have one, see
    tests/test_notebooks.py), and only that warning, while the runner reads and executes notebooks."""
    from nbformat.warnings import MissingIDFieldWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=MissingIDFieldWarning)
        yield


def kernel_env(run: Path, name: str) -> dict[str, str]:
    """What a chapter's kernel gets: the run directory, its own name, and the repository root on PYTHONPATH (the
    kernel starts in notebooks/, and chapters import `apps` as well as `andes_lib`, as they do under nbmake)."""
    path = os.pathsep.join(filter(None, [str(report.repo_root()), os.environ.get("PYTHONPATH")]))
    return {report.ENV_RUN_DIR: str(run), report.ENV_NOTEBOOK: name, "PYTHONPATH": path}


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by the kernel papermill starts) and restore them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _git_version(folder: Path) -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _show(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in params.items())


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
