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


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Name an nbmake notebook's metrics after the notebook, as the batch runner does; take the whole CPU once
    the other half of `scripts/test.sh` has finished."""
    _take_free_cores()
    if item.path.suffix == ".ipynb":
        os.environ["ANDES_NOTEBOOK"] = item.path.stem


def _take_free_cores() -> None:
    """`scripts/test.sh` runs two pytest processes with one thread each; the one still running when the other has
    written its ANDES_TEST_DONE file gives its next tests (and the kernels they start) every core."""
    peer = os.environ.get("ANDES_TEST_PEER_DONE")
    if not peer or not os.path.exists(peer) or os.environ.get("OMP_NUM_THREADS") == str(os.cpu_count()):
        return
    import torch

    os.environ["OMP_NUM_THREADS"] = str(os.cpu_count())
    torch.set_num_threads(os.cpu_count() or 1)


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if item.path.suffix == ".ipynb":
        os.environ.pop("ANDES_NOTEBOOK", None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("ANDES_TEST_DONE"):
        Path(os.environ["ANDES_TEST_DONE"]).touch()
    if exitstatus == 0:
        shutil.rmtree(session.config.stash[_RUN_KEY], ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if exitstatus != 0:
        terminalreporter.write_line(f"ANDES_RUN_DIR kept for inspection: {config.stash[_RUN_KEY]}")

