"""Repository-wide pytest setup: offline, never writing into runs/, notebooks collected only from notebooks/.

`pytest tests notebooks --nbmake` runs the unit tests and each chapter (with the small values of its
parameters cell's nbmake mock). Kernels inherit this process's environment, so the variables set here
reach the notebooks too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# Executed notebook copies are not chapters (.venv is skipped by pytest's default norecursedirs).
collect_ignore = ["runs", "build"]
_RUN_KEY = pytest.StashKey[Path]()

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}.items():
    os.environ.setdefault(_key, _value)
# Kernels start in the notebook's folder: make the package importable there without an install.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def pytest_configure(config: pytest.Config) -> None:
    """Send every record()/artifact of this session to a temporary run directory."""
    run = Path(tempfile.mkdtemp(prefix="andes-test-run-"))
    config.stash[_RUN_KEY] = run
    os.environ["ANDES_RUN_DIR"] = str(run)


def pytest_report_header(config: pytest.Config) -> str:
    return f"ANDES_RUN_DIR: {config.stash[_RUN_KEY]} (kept only if the session fails)"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`TEST_WORKERS=2`, `--dist loadgroup`) the chapters are grouped to run on one worker, in
    order (a chapter reuses the artifacts its predecessors built). In one fresh-clone run 00 and 01 still landed on
    the unit-test worker and a kernel start hung, which is why the mode is opt-in."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.xdist_group("notebooks"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Name an nbmake notebook's metrics after the notebook, as the batch runner does."""
    if item.path.suffix == ".ipynb":
        os.environ["ANDES_NOTEBOOK"] = item.path.stem


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if item.path.suffix == ".ipynb":
        os.environ.pop("ANDES_NOTEBOOK", None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == 0:
        shutil.rmtree(session.config.stash[_RUN_KEY], ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if exitstatus != 0:
        terminalreporter.write_line(f"ANDES_RUN_DIR kept for inspection: {config.stash[_RUN_KEY]}")

