"""Metrics recording for the cookbook notebooks, and the run report that collects them.

A notebook records its headline numbers, tables and plotly figures::

    from andes_lib import report
    report.run_dir(RUN_DIR)                      # RUN_DIR comes from the parameters cell
    report.record("sft/accuracy", 0.83)
    report.record("sft/throughput", 141.2, unit="tok/s", note="bs1, 2 CPU threads")
    report.record_table("sft/per_domain", [{"domain": "ocr", "acc": 0.7}, {"domain": "math", "acc": 0.6}])
    report.record_figure("sft/loss_curve", fig)

Everything lands in the run directory: ``metrics/<notebook>.json`` (one document per notebook),
``figures/<notebook>--<name>.html`` (sharing one offline ``figures/plotly.min.js``), and, after
:func:`write_report`, ``report.md`` and ``report.html``. The batch runner (``andes-cookbook run``)
sets ``ANDES_RUN_DIR`` and ``ANDES_NOTEBOOK`` for each kernel and records each notebook's status in
``run.json``; run standalone, a notebook records into ``runs/interactive`` under the name
``interactive`` (or its Jupyter session's name).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENV_RUN_DIR = "ANDES_RUN_DIR"
ENV_NOTEBOOK = "ANDES_NOTEBOOK"
MANIFEST = "run.json"
METRICS_DIR = "metrics"
FIGURES_DIR = "figures"
MAX_TEXT = 200  # longest accepted name, unit or string value; notes may be longer
MAX_REPORT_ROWS = 100  # rows of a table shown in the report (the JSON keeps all of them)

Scalar = int | float | str | bool


# ----------------------------------------------------------------------------- locations
def repo_root() -> Path:
    """The source checkout holding this package, else the current directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def run_dir(RUN_DIR: str | os.PathLike[str] = "") -> Path:  # noqa: N803 (named like the notebook parameter)
    """Resolve (and create) the run directory: explicit argument > $ANDES_RUN_DIR > <repo>/runs/interactive.

    An explicit argument is also exported as ``$ANDES_RUN_DIR``, so later :func:`record` calls and child
    processes write into the same directory.
    """
    if RUN_DIR:
        path = Path(RUN_DIR).expanduser().resolve()
        os.environ[ENV_RUN_DIR] = str(path)
    elif os.environ.get(ENV_RUN_DIR):
        path = Path(os.environ[ENV_RUN_DIR]).expanduser().resolve()
    else:
        path = repo_root() / "runs" / "interactive"
    path.mkdir(parents=True, exist_ok=True)
    return path


def notebook_name() -> str:
    """Name of the notebook being recorded: $ANDES_NOTEBOOK > the Jupyter session's file stem > 'interactive'."""
    name = os.environ.get(ENV_NOTEBOOK) or Path(os.environ.get("JPY_SESSION_NAME", "")).stem
    return _safe_filename(name) if name else "interactive"


def metrics_path(run: Path, notebook: str) -> Path:
    """Where one notebook's metrics document lives inside a run directory."""
    return Path(run) / METRICS_DIR / f"{notebook}.json"


# ----------------------------------------------------------------------------- recording
def record(name: str, value: Any, unit: str | None = None, note: str | None = None) -> None:
    """Record one headline number (or short string) for the current notebook; a repeated name replaces it.

    ``value`` may be an int, a finite float, a bool, a string of at most 200 characters, or a one-element
    numpy/torch value (converted with ``.item()``).
    """
    entry: dict[str, Any] = {"name": _check_name(name, "metric name"), "value": _check_value(value, name)}
    entry["unit"] = _check_optional_text(unit, "unit", MAX_TEXT)
    entry["note"] = _check_optional_text(note, "note", None)
    entry["time"] = _now()
    _update("metrics", entry)


def record_table(name: str, rows: Sequence[Mapping[str, Any]] | Any) -> None:
    """Record a table: a list of dicts with str keys and scalar (or None) values, or a pandas DataFrame.

    A DataFrame's named index (a groupby result, say) becomes its first columns.
    """
    name = _check_name(name, "table name")
    if hasattr(rows, "to_dict") and not isinstance(rows, Mapping):
        if any(level is not None for level in rows.index.names):
            rows = rows.reset_index()
        rows = rows.to_dict(orient="records")
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise TypeError(f"record_table({name!r}): rows must be a list of dicts, got {type(rows).__name__}")
    clean: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"record_table({name!r}): row {i} must be a dict, got {type(row).__name__}")
        clean_row = {}
        for key, val in row.items():
            if not isinstance(key, str):
                raise TypeError(f"record_table({name!r}): row {i} has a non-string column name {key!r}")
            clean_row[key] = None if val is None else _check_value(val, f"{name}[{i}].{key}")
        clean.append(clean_row)
    _update("tables", {"name": name, "rows": clean, "time": _now()})


def record_figure(name: str, fig: Any) -> Path:
    """Save a plotly figure as an offline HTML page in the run's figures/ and record it; returns the file."""
    name = _check_name(name, "figure name")
    try:
        from plotly.basedatatypes import BaseFigure
        from plotly.offline import get_plotlyjs
    except ImportError as err:  # pragma: no cover - plotly is a core dependency
        raise TypeError("record_figure needs plotly installed") from err
    if not isinstance(fig, BaseFigure):
        raise TypeError(f"record_figure({name!r}): expected a plotly figure, got {type(fig).__name__}")
    run, notebook = run_dir(), notebook_name()
    figures = run / FIGURES_DIR
    figures.mkdir(parents=True, exist_ok=True)
    bundle = figures / "plotly.min.js"
    if not bundle.is_file():
        _atomic_write_text(bundle, get_plotlyjs())
    path = figures / f"{notebook}--{_safe_filename(name)}.html"
    page = fig.to_html(include_plotlyjs="directory", full_html=True)
    _atomic_write_text(path, page.replace("<head>", f"<head><title>{html.escape(name)}</title>", 1))
    _update("figures", {"name": name, "path": path.relative_to(run).as_posix(), "time": _now()})
    return path


def load_records(run: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Every notebook's metrics document in a run directory, keyed by notebook name, sorted."""
    folder = Path(run) / METRICS_DIR
    return {p.stem: _read_json(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def read_manifest(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The runner's ``run.json`` (status per notebook), or an empty manifest for an interactive run."""
    path = Path(run) / MANIFEST
    return _read_json(path) if path.is_file() else {"notebooks": {}}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and ``os.replace`` so readers never see a half-written file."""
    _atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- validation helpers
def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}: {name!r}")
    if not name.strip() or len(name) > MAX_TEXT or any(c in name for c in "\r\n\t"):
        raise ValueError(f"{what} must be a non-empty single line of at most {MAX_TEXT} characters, got {name!r}")
    return name


def _check_optional_text(text: Any, what: str, limit: int | None) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str or None, got {type(text).__name__}: {text!r}")
    if limit is not None and len(text) > limit:
        raise ValueError(f"{what} is longer than {limit} characters: {text[:40]!r}...")
    return text


def _check_value(value: Any, name: str) -> Scalar:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalars
        size = value.numel() if callable(getattr(value, "numel", None)) else getattr(value, "size", 1)
        if size != 1:
            raise ValueError(f"value of {name!r} must be a single number, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"value of {name!r} must be finite, got {value}")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(
                f"value of {name!r} is a string longer than {MAX_TEXT} characters; put long text in note="
            )
        return value
    raise TypeError(f"value of {name!r} must be a number, bool or short str, got {type(value).__name__}")


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "unnamed"


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- storage
def _update(section: str, entry: dict[str, Any]) -> None:
    """Add ``entry`` to one section of the current notebook's document, replacing an entry of the same name."""
    run, notebook = run_dir(), notebook_name()
    path = metrics_path(run, notebook)
    doc: dict[str, Any] = _read_json(path) if path.is_file() else {"notebook": notebook}
    entries: list[dict[str, Any]] = doc.setdefault(section, [])
    names = [e["name"] for e in entries]
    if entry["name"] in names:
        entries[names.index(entry["name"])] = entry
    else:
        entries.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it or fix it by hand") from err


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- report
def write_report(run: str | os.PathLike[str]) -> Path:
    """Render ``report.md`` and ``report.html`` for a run directory; returns the HTML path."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist")
    manifest, records = read_manifest(run), load_records(run)
    rows = _status_rows(run, manifest.get("notebooks", {}), records)
    _atomic_write_text(run / "report.md", _render_md(run, manifest, rows, records))
    out = run / "report.html"
    _atomic_write_text(out, _render_html(run, manifest, rows, records))
    return out


def _status_rows(run: Path, runs: dict[str, Any], records: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per notebook seen in the manifest or the metrics, sorted by name."""
    rows = []
    for name in sorted(set(runs) | set(records)):
        info = runs.get(name, {})
        executed = run / f"{name}.ipynb"
        rows.append(
            {
                "name": name,
                "status": info.get("status", "unknown"),  # recorded outside the batch runner
                "duration": info.get("duration_s"),
                "error": info.get("error"),
                "link": executed.name if executed.is_file() else None,
                "n_metrics": len(records.get(name, {}).get("metrics", [])),
                "parameters": info.get("parameters", {}),
            }
        )
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.4g}"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _summary(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    parts = [f"{len(rows)} notebook(s)"] + [f"{n} {status}" for status, n in sorted(counts.items())]
    total = sum(r["duration"] or 0.0 for r in rows)
    meta = [f"total {_fmt_duration(total)}"] if total else []
    meta += [f"{k} {manifest[k]}" for k in ("started", "git", "kernel") if manifest.get(k)]
    if manifest.get("smoke"):
        meta.append("smoke parameters")
    return ", ".join(parts) + ("; " + ", ".join(meta) if meta else "")


def _md_cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], body: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in body]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def _render_md(run: Path, manifest: dict[str, Any], rows: list[dict[str, Any]], records: dict[str, Any]) -> str:
    out = [f"# Andes Cookbook run report: `{run.name}`", "", _summary(manifest, rows), ""]
    if not rows:
        return "\n".join([*out, "No notebooks ran and nothing was recorded.", ""])
    body = [
        [f"[{r['name']}]({r['link']})" if r["link"] else r["name"], r["status"], _fmt_duration(r["duration"]),
         r["n_metrics"], r["error"] or ""]
        for r in rows
    ]
    out += _md_table(["notebook", "status", "duration", "metrics", "error"], body)
    for row in rows:
        doc = records.get(row["name"], {})
        out += ["", f"## {row['name']}", ""]
        if row["parameters"]:
            out += ["Parameters: " + ", ".join(f"`{k}={v!r}`" for k, v in row["parameters"].items()), ""]
        metrics = doc.get("metrics", [])
        out += _md_table(["metric", "value", "unit", "note"],
                         [[m["name"], m["value"], m["unit"], m["note"]] for m in metrics]) if metrics else [
            "No metrics recorded."]
        for table in doc.get("tables", []):
            shown, cols = table["rows"][:MAX_REPORT_ROWS], _columns(table["rows"])
            out += ["", f"### {table['name']}", ""]
            out += _md_table(cols, [[r.get(c) for c in cols] for r in shown]) if cols else ["(empty table)"]
            if len(table["rows"]) > len(shown):
                out.append(f"\n({len(table['rows']) - len(shown)} more rows in metrics/{row['name']}.json)")
        if doc.get("figures"):
            out += ["", "Figures: " + ", ".join(f"[{f['name']}]({f['path']})" for f in doc["figures"])]
    return "\n".join(out) + "\n"


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17702f;font-weight:600}.failed,.running,.interrupted{color:#b00020;font-weight:600}
pre{white-space:pre-wrap;margin:0;font-size:.85em}code{background:#f3f3f3;padding:0 .2em}
iframe{width:100%;height:520px;border:1px solid #ddd}.muted{color:#777}
"""


def _td(value: Any) -> str:
    cls = ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
    return f"<td{cls}>{html.escape(_fmt(value))}</td>"


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>" + "".join(f"<tr>{''.join(r)}</tr>" for r in body) + "</table>"


def _render_html(run: Path, manifest: dict[str, Any], rows: list[dict[str, Any]], records: dict[str, Any]) -> str:
    esc = html.escape
    parts = [f"<h1>Andes Cookbook run report: <code>{esc(run.name)}</code></h1>",
             f"<p>{esc(_summary(manifest, rows))}</p>"]
    if not rows:
        parts.append("<p>No notebooks ran and nothing was recorded.</p>")
    else:
        body = []
        for r in rows:
            name = f'<a href="{esc(r["link"])}">{esc(r["name"])}</a>' if r["link"] else esc(r["name"])
            error = f"<pre>{esc(r['error'])}</pre>" if r["error"] else ""
            body.append([f'<td><a href="#{esc(r["name"])}">#</a> {name}</td>',
                         f'<td class="{esc(r["status"])}">{esc(r["status"])}</td>',
                         _td(_fmt_duration(r["duration"])), _td(r["n_metrics"]), f"<td>{error}</td>"])
        parts.append(_html_table(["notebook", "status", "duration", "metrics", "error"], body))
    for row in rows:
        doc = records.get(row["name"], {})
        parts.append(f'<h2 id="{esc(row["name"])}">{esc(row["name"])}</h2>')
        if row["parameters"]:
            params = ", ".join(f"<code>{esc(k)}={esc(repr(v))}</code>" for k, v in row["parameters"].items())
            parts.append(f"<p>Parameters: {params}</p>")
        metrics = doc.get("metrics", [])
        parts.append(_html_table(["metric", "value", "unit", "note"],
                                 [[_td(m["name"]), _td(m["value"]), _td(m["unit"]), _td(m["note"])]
                                  for m in metrics]) if metrics else '<p class="muted">No metrics recorded.</p>')
        for table in doc.get("tables", []):
            cols, shown = _columns(table["rows"]), table["rows"][:MAX_REPORT_ROWS]
            parts.append(f"<h3>{esc(table['name'])}</h3>")
            parts.append(_html_table(cols, [[_td(r.get(c)) for c in cols] for r in shown]) if cols
                         else '<p class="muted">(empty table)</p>')
            if len(table["rows"]) > len(shown):
                parts.append(f'<p class="muted">{len(table["rows"]) - len(shown)} more rows in '
                             f"metrics/{esc(row['name'])}.json</p>")
        for fig in doc.get("figures", []):
            src = esc(fig["path"])
            parts.append(f'<h3><a href="{src}">{esc(fig["name"])}</a></h3><iframe src="{src}" loading="lazy"></iframe>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Run {esc(run.name)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
