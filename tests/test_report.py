"""andes_lib.report: recording (validation, atomic writes, run-dir resolution) and the rendered report."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from andes_lib import report


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run directory as the batch runner would set it up for notebook 03_demo."""
    monkeypatch.setenv(report.ENV_RUN_DIR, str(tmp_path / "run"))
    monkeypatch.setenv(report.ENV_NOTEBOOK, "03_demo")
    return tmp_path / "run"


def doc(run: Path, notebook: str = "03_demo") -> dict:
    return json.loads(report.metrics_path(run, notebook).read_text())


# ----------------------------------------------------------------------------- locations
def test_run_dir_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(report.ENV_RUN_DIR, raising=False)
    monkeypatch.setattr(report, "repo_root", lambda: tmp_path / "repo")
    assert report.run_dir() == tmp_path / "repo" / "runs" / "interactive"

    monkeypatch.setenv(report.ENV_RUN_DIR, str(tmp_path / "from_env"))
    assert report.run_dir("") == tmp_path / "from_env"

    explicit = report.run_dir(str(tmp_path / "explicit"))
    assert explicit == tmp_path / "explicit" and explicit.is_dir()
    assert os.environ[report.ENV_RUN_DIR] == str(explicit), "an explicit RUN_DIR is exported for record()"
    assert report.run_dir() == explicit


def test_notebook_name_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(report.ENV_NOTEBOOK, raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert report.notebook_name() == "interactive"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/notebooks/05_posttrain.ipynb")
    assert report.notebook_name() == "05_posttrain"
    monkeypatch.setenv(report.ENV_NOTEBOOK, "02_data")
    assert report.notebook_name() == "02_data"


# ----------------------------------------------------------------------------- record
def test_record_appends_replaces_and_converts(run: Path) -> None:
    report.record("sft/accuracy", 0.5)
    report.record("sft/throughput", np.float32(141.5), unit="tok/s", note="bs1")
    report.record("sft/steps", np.int64(20))
    report.record("model", "nano")
    report.record("sft/accuracy", 0.83)  # recorded again: replaces, keeps its place

    metrics = doc(run)["metrics"]
    assert [m["name"] for m in metrics] == ["sft/accuracy", "sft/throughput", "sft/steps", "model"]
    values = {m["name"]: m["value"] for m in metrics}
    assert values == {"sft/accuracy": 0.83, "sft/throughput": 141.5, "sft/steps": 20, "model": "nano"}
    assert type(values["sft/steps"]) is int
    assert metrics[1]["unit"] == "tok/s" and metrics[1]["note"] == "bs1"


@pytest.mark.parametrize(
    ("name", "value", "kwargs", "error", "match"),
    [
        (3, 1.0, {}, TypeError, "metric name must be a str, got int"),
        ("", 1.0, {}, ValueError, "non-empty"),
        ("a\nb", 1.0, {}, ValueError, "single line"),
        ("loss", math.nan, {}, ValueError, "'loss' must be finite, got nan"),
        ("loss", -math.inf, {}, ValueError, "must be finite"),
        ("loss", [1.0], {}, TypeError, "'loss' must be a number, bool or short str, got list"),
        ("loss", None, {}, TypeError, "got NoneType"),
        ("loss", np.array([1.0, 2.0]), {}, ValueError, r"single number, got shape \(2,\)"),
        ("answer", "x" * 201, {}, ValueError, "longer than 200"),
        ("loss", 1.0, {"unit": 5}, TypeError, "unit must be a str or None"),
        ("loss", 1.0, {"note": b"n"}, TypeError, "note must be a str or None"),
    ],
)
def test_record_rejects_bad_input(run: Path, name, value, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        report.record(name, value, **kwargs)
    assert not report.metrics_path(run, "03_demo").exists()


def test_record_accepts_torch_scalar(run: Path) -> None:
    torch = pytest.importorskip("torch")
    report.record("loss", torch.tensor(0.25))
    assert doc(run)["metrics"][0]["value"] == 0.25
    with pytest.raises(ValueError, match="single number"):
        report.record("loss", torch.ones(3))


def test_failed_write_leaves_previous_file_intact(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report.record("kept", 1)
    path = report.metrics_path(run, "03_demo")
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(report.os, "fsync", disk_full)  # fails after the new text reached the temp file
    with pytest.raises(OSError, match="No space left"):
        report.record("lost", 2)
    monkeypatch.undo()

    def broken_dumps(*args, **kwargs) -> str:
        raise RuntimeError("serializer crashed")

    monkeypatch.setattr(report.json, "dumps", broken_dumps)
    with pytest.raises(RuntimeError):
        report.record("lost", 3)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary files left behind"


def test_corrupt_metrics_file_is_reported(run: Path) -> None:
    path = report.metrics_path(run, "03_demo")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"03_demo\.json is not valid JSON"):
        report.record("x", 1)


# ----------------------------------------------------------------------------- tables and figures
def test_record_table_validates_and_accepts_dataframes(run: Path) -> None:
    pd = pytest.importorskip("pandas")
    report.record_table("per_domain", [{"domain": "ocr", "acc": 0.7}, {"domain": "math", "acc": None}])
    frame = pd.DataFrame({"domain": ["ocr", "ocr", "math"], "acc": [0.5, 0.25, 1.0]})
    report.record_table("frame", frame)
    report.record_table("grouped", frame.groupby("domain").mean())
    tables = {t["name"]: t["rows"] for t in doc(run)["tables"]}
    assert tables["per_domain"][1] == {"domain": "math", "acc": None}
    assert tables["frame"][0] == {"domain": "ocr", "acc": 0.5}
    assert tables["grouped"] == [{"domain": "math", "acc": 1.0}, {"domain": "ocr", "acc": 0.375}]

    with pytest.raises(TypeError, match="rows must be a list of dicts, got dict"):
        report.record_table("t", {"a": 1})
    with pytest.raises(TypeError, match="row 1 must be a dict, got int"):
        report.record_table("t", [{"a": 1}, 2])
    with pytest.raises(TypeError, match="non-string column name 0"):
        report.record_table("t", [{0: 1}])
    with pytest.raises(ValueError, match=r"'t\[0\].acc' must be finite"):
        report.record_table("t", [{"acc": math.nan}])


def test_record_figure_writes_offline_html(run: Path) -> None:
    fig = go.Figure(go.Scatter(y=[1, 3, 2]))
    first = report.record_figure("sft/loss curve", fig)
    second = report.record_figure("sft/lr", fig)
    assert first == run / "figures" / "03_demo--sft_loss_curve.html"
    page = first.read_text()
    assert 'src="plotly.min.js"' in page and "cdn.plot.ly" not in page
    assert first.stat().st_size < 50_000, "the plotly bundle is shared, not inlined"
    assert (run / "figures" / "plotly.min.js").stat().st_size > 1_000_000
    assert second.is_file()
    assert doc(run)["figures"][0]["path"] == "figures/03_demo--sft_loss_curve.html"
    with pytest.raises(TypeError, match="expected a plotly figure, got dict"):
        report.record_figure("bad", {"data": []})


# ----------------------------------------------------------------------------- report
def test_report_of_an_empty_run(tmp_path: Path) -> None:
    html_path = report.write_report(tmp_path)
    assert html_path == tmp_path / "report.html"
    assert "nothing was recorded" in html_path.read_text()
    assert "nothing was recorded" in (tmp_path / "report.md").read_text()
    with pytest.raises(FileNotFoundError):
        report.write_report(tmp_path / "missing")


def test_report_collects_metrics_status_and_links(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report.record("acc", 0.8312, note="a <b> | c")
    report.record("params", 1234567)
    report.record_table("rows", [{"x": i} for i in range(report.MAX_REPORT_ROWS + 5)])
    report.record_figure("curve", go.Figure())
    monkeypatch.setenv(report.ENV_NOTEBOOK, "04_other")
    report.record("other/loss", 2.5e-5)
    (run / "03_demo.ipynb").write_text("{}")
    report.write_json_atomic(run / report.MANIFEST, {"started": "2026-01-01T00:00:00", "notebooks": {
        "03_demo": {"status": "ok", "duration_s": 3.25, "error": None, "parameters": {"STEPS": 2}},
        "05_broken": {"status": "failed", "duration_s": 1.0, "error": "ZeroDivisionError: division by zero (cell [3])",
                      "parameters": {}},
    }})

    html_path = report.write_report(run)
    md = (run / "report.md").read_text()
    page = html_path.read_text()
    for text in (md, page):
        assert "3 notebook(s), 1 failed, 1 ok, 1 unknown" in text
        assert "0.8312" in text and "1,234,567" in text and "2.500e-05" in text
        assert "ZeroDivisionError: division by zero (cell [3])" in text
        assert "figures/03_demo--curve.html" in text
        assert "5 more rows" in text
    assert "[03_demo](03_demo.ipynb)" in md and "| 05_broken | failed |" in md
    assert "a <b> \\| c" in md
    assert '<a href="03_demo.ipynb">03_demo</a>' in page and '<td class="failed">failed</td>' in page
    assert "a &lt;b&gt; | c" in page and "<b>" not in page
    assert "<code>STEPS=2</code>" in page
