"""andes-cookbook run / list / report, end to end on three throwaway notebooks (one kernel start each)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from andes_lib import report, runner
from andes_lib.cli import main

ROOT = Path(__file__).resolve().parents[1]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

# Writes what the kernel saw (types included) where the test can read it, with the stdlib only.
SEEN = """import json, os, pathlib
pathlib.Path(os.environ["ANDES_RUN_DIR"], "seen-{name}.json").write_text(json.dumps(
    {{"params": {{k: [v, type(v).__name__] for k, v in {params}.items()}},
     "env_notebook": os.environ["ANDES_NOTEBOOK"], "cwd": os.getcwd()}}))
"""


def write_notebook(folder: Path, name: str, params: str, body: str, mock: dict | None = None) -> None:
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    if mock:
        cell.metadata["nbmake"] = {"mock": mock}
    nb = new_notebook(cells=[new_markdown_cell(f"# {name}"), cell, new_code_cell(body)],
                      metadata={"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    nbformat.write(nb, folder / f"{name}.ipynb")


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """00 records metrics through andes_lib.report, 01 raises, 02 reports the parameters it received."""
    folder = tmp_path_factory.mktemp("cookbook") / "notebooks"
    folder.mkdir()
    write_notebook(folder, "00_metrics", 'RUN_DIR = ""\nSTEPS = 50  # training steps\nLR = 0.1', (
        "from andes_lib import report\n"
        "report.run_dir(RUN_DIR)\n"
        "report.record('steps', STEPS, unit='steps')\n"
        "report.record('lr', LR)\n"
        "report.record_table('per_step', [{'step': i, 'loss': 1 / (i + 1)} for i in range(3)])\n"
    ))
    write_notebook(folder, "01_fails", 'RUN_DIR = ""\nSTEPS = 3', "raise RuntimeError(f'boom at {STEPS} steps')")
    write_notebook(folder, "02_params", 'RUN_DIR = ""\nSTEPS = 3\nTAG = "a"\nSEED = 0',
                   SEEN.format(name="02", params='{"STEPS": STEPS, "TAG": TAG, "SEED": SEED, "RUN_DIR": RUN_DIR}'),
                   mock={"STEPS": 1, "SEED": 99})
    return folder


def cli(notebooks: Path, *args: str) -> int:
    return main([args[0], "--notebooks-dir", str(notebooks), *args[1:]])


@pytest.fixture(scope="module")
def full_run(notebooks: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """All three notebooks with typed -p overrides: the failure in 01 must not stop 02."""
    run = tmp_path_factory.mktemp("full") / "run"
    code = cli(notebooks, "run", "--run-dir", str(run), "-p", "STEPS=7", "LR=1e-4")
    return code, run


def seen(run: Path, name: str) -> dict:
    return json.loads((run / f"seen-{name}.json").read_text())


# ----------------------------------------------------------------------------- run
def test_run_executes_all_in_order_and_keeps_going(full_run: tuple[int, Path]) -> None:
    code, run = full_run
    assert code == 1, "a failed notebook makes the batch exit non-zero"
    for name in ("00_metrics", "01_fails", "02_params"):
        assert (run / f"{name}.ipynb").is_file()
    manifest = report.read_manifest(run)
    entries = manifest["notebooks"]
    assert list(entries) == ["00_metrics", "01_fails", "02_params"]
    assert [entries[n]["status"] for n in entries] == ["ok", "failed", "ok"]
    assert entries["00_metrics"]["started"] <= entries["01_fails"]["started"] <= entries["02_params"]["started"]
    assert "RuntimeError: boom at 7 steps" in entries["01_fails"]["error"]
    assert all(e["duration_s"] > 0 for e in entries.values())


def test_run_passes_typed_overrides_only_where_declared(full_run: tuple[int, Path]) -> None:
    _, run = full_run
    metrics = {m["name"]: m["value"] for m in report.load_records(run)["00_metrics"]["metrics"]}
    assert metrics == {"steps": 7, "lr": 1e-4}
    assert type(metrics["steps"]) is int
    kernel = seen(run, "02")
    assert kernel["params"]["STEPS"] == [7, "int"]
    assert kernel["params"]["RUN_DIR"] == [str(run.resolve()), "str"]
    assert kernel["env_notebook"] == "02_params"
    assert Path(kernel["cwd"]).name == "notebooks", "kernels start in the notebook's folder"
    assert report.read_manifest(run)["notebooks"]["02_params"]["parameters"] == {"STEPS": 7}


def test_run_report_shows_metrics_links_and_failure(full_run: tuple[int, Path], capsys) -> None:
    _, run = full_run
    md = (run / "report.md").read_text()
    page = (run / "report.html").read_text()
    assert "[00_metrics](00_metrics.ipynb)" in md and "| steps | 7 | steps |" in md
    assert "| [01_fails](01_fails.ipynb) | failed |" in md and "RuntimeError: boom at 7 steps" in md
    assert "### per_step" in md
    assert '<a href="01_fails.ipynb">01_fails</a>' in page and '<td class="failed">failed</td>' in page

    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    assert (run / "report.md").read_text() == md


def test_run_subset_with_params_file_and_smoke(notebooks: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text('STEPS: 4\nLR: 1.0e-3\n"02": {STEPS: 5, TAG: section}\n')
    run = tmp_path / "run"
    code = cli(notebooks, "run", "--only", "02", "--smoke", "--params", str(params), "-p", "TAG=cli",
               "--run-dir", str(run))
    assert code == 0
    assert sorted(p.name for p in run.glob("*.ipynb")) == ["02_params.ipynb"]
    # smoke < file globals < file section < -p
    assert seen(run, "02")["params"] == {"STEPS": [5, "int"], "TAG": ["cli", "str"], "SEED": [99, "int"],
                                         "RUN_DIR": [str(run.resolve()), "str"]}
    assert report.read_manifest(run)["smoke"] is True


def test_default_run_dir_is_timestamped_beside_notebooks(notebooks: Path, capsys) -> None:
    assert cli(notebooks, "run", "--only", "2") == 0
    out = capsys.readouterr().out.strip()
    report_path = Path(out.removeprefix("report: "))
    assert report_path.parent.parent == notebooks.parent / "runs"
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", report_path.parent.name)


# ----------------------------------------------------------------------------- user errors
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--only", "00", "07"], "unknown notebook(s): 07; available: 00_metrics, 01_fails, 02_params"),
        (["run", "-p", "STEPZ=2"], "unknown parameter 'STEPZ': no selected notebook declares it. Valid: 00_metrics:"),
        (["run", "--only", "01", "-p", "LR=0.5"], "unknown parameter 'LR'"),
        (["run", "-p", "STEPS"], "-p expects NAME=VALUE, got 'STEPS'"),
        (["run", "-p", "STEPS=2o"], "parameter STEPS of 00_metrics expects int (default 50), got the string '2o'"),
        (["run", "-p", "RUN_DIR=/tmp/x"], "RUN_DIR is set by the runner; use --run-dir"),
        (["run", "--params", "missing.yaml"], "params file missing.yaml not found"),
    ],
)
def test_user_errors_exit_2_with_a_clear_message(notebooks: Path, args: list[str], message: str, capsys) -> None:
    runs = notebooks.parent / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    with pytest.raises(SystemExit) as exc:
        cli(notebooks, *args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert (set(runs.iterdir()) if runs.exists() else set()) == before, "no run directory is made"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("STEPS: [1, 2\n", "is not valid YAML"),
        ("- 1\n- 2\n", "must hold a mapping, got list"),
        ('"09": {STEPS: 1}\n', "unknown notebook '09'; available: 00_metrics"),
        ("01: {LR: 0.5}\n", "unknown parameter 'LR' for notebook 01_fails"),
        ("NOPE: 1\n", "unknown parameter 'NOPE': no notebook declares it"),
    ],
)
def test_params_file_errors(notebooks: Path, tmp_path: Path, text: str, message: str, capsys) -> None:
    params = tmp_path / "p.yaml"
    params.write_text(text)
    with pytest.raises(SystemExit) as exc:
        cli(notebooks, "run", "--params", str(params), "--run-dir", str(tmp_path / "run"))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists(), "validation happens before any run directory is made"


def test_console_error_has_no_traceback(notebooks: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "andes_lib.cli", "run", "--notebooks-dir", str(notebooks),
                           "--only", "42"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "andes-cookbook run: error: unknown notebook(s): 42" in proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- list, report
def test_list_shows_parameters_defaults_and_smoke_values(notebooks: Path, capsys) -> None:
    assert cli(notebooks, "list") == 0
    out = capsys.readouterr().out
    assert "00_metrics" in out and "01_fails" in out
    line = next(ln for ln in out.splitlines() if ln.split()[:1] == ["SEED"])
    assert line.split() == ["SEED", "0", "99"]
    assert "training steps" in out


def test_report_of_a_missing_dir_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "nope")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_empty_notebooks_dir_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["list", "--notebooks-dir", str(tmp_path)])
    assert "no notebooks named [0-9][0-9]_*.ipynb" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "value"),
    [("20", 20), ("1e-4", 1e-4), ("0.5", 0.5), ("true", True), ("yes", "yes"), ("null", None), ("", ""),
     ("[64, 128]", [64, 128]), ("{a: 1}", {"a": 1}), ("a: b", "a: b"), ("2026-01-01", "2026-01-01"), ('"7"', "7")],
)
def test_parameter_values_are_read_as_yaml_1_2(text: str, value: object) -> None:
    parsed = runner.parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_kernels_can_import_the_apps_package(tmp_path):
    """Chapters import `apps` (not installed) as well as `andes_lib`: the runner puts the repository root on the
    kernel's PYTHONPATH, as conftest.py does for nbmake."""
    env = runner.kernel_env(tmp_path, "09_okv")
    root = str(report.repo_root())
    assert env["PYTHONPATH"].split(os.pathsep)[0] == root and (Path(root) / "apps").is_dir()
    assert env[report.ENV_RUN_DIR] == str(tmp_path) and env[report.ENV_NOTEBOOK] == "09_okv"
