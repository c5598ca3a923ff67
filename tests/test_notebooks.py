"""The notebook contract (see shared DESIGN.md), checked statically on every chapter in notebooks/.

nbmake executes the chapters themselves (`pytest notebooks --nbmake`); these checks catch, without a
kernel, what would make the batch runner or nbmake misbehave: a parameters cell that papermill cannot
read, smoke values for parameters that do not exist, outputs committed by mistake.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest

from andes_lib import runner

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob(runner.NOTEBOOK_GLOB))


def test_every_notebook_is_a_numbered_chapter() -> None:
    strays = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb") if p not in CHAPTERS)
    assert not strays, f"the runner only executes NN_topic.ipynb; rename or remove: {strays}"


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters', found {len(cells)}"
    return cells[0]


def declared(source: str) -> dict[str, object]:
    """Parameter name -> value, insisting on plain `NAME = literal` lines."""
    values = {}
    for stmt in ast.parse(source).body:
        target = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
        assert isinstance(stmt, ast.Assign | ast.AnnAssign) and len(target) == 1 and isinstance(
            target[0], ast.Name), f"parameters cell line {stmt.lineno}: only `NAME = literal` assignments"
        try:
            values[target[0].id] = ast.literal_eval(stmt.value)
        except ValueError:
            pytest.fail(f"parameters cell: {target[0].id} must be a plain literal, not {ast.unparse(stmt.value)}")
    return values


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_contract(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert nb.cells and nb.cells[0].cell_type == "markdown", "the first cell is the chapter's title and intro"
    assert nb.metadata.get("kernelspec", {}).get("name"), "kernelspec metadata is needed by papermill"

    cell = parameters_cell(nb)
    values = declared(cell.source)
    assert values.get("RUN_DIR") == "", 'the parameters cell declares RUN_DIR = ""'
    unread = sorted(set(values) - set(runner.load_notebook(path).parameters))
    assert not unread, f"papermill cannot parse {unread}: keep '=' out of the comment after a parameter"

    mock = cell.metadata.get("nbmake", {}).get("mock", {})
    unknown = sorted(set(mock) - set(values))
    assert not unknown, f"nbmake mock sets parameters the cell does not declare: {unknown}"
    json.dumps(mock, allow_nan=False)

    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"strip outputs before committing (cells {dirty})"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_cell_has_an_id(path: Path) -> None:
    """nbformat >= 4.5 cells carry an `id`; without one nbformat warns on every read. To add the missing ids
    (existing ids, sources, metadata and outputs are left as they are), from the repository root:

        .venv/bin/python -W ignore::FutureWarning -c 'import json, sys, nbformat
        for p in sys.argv[1:]: nbformat.write(nbformat.from_dict(nbformat.validator.normalize(
            json.load(open(p, encoding="utf-8")))[1]), p)' notebooks/*.ipynb
    """
    raw = json.loads(path.read_text(encoding="utf-8"))  # the file as committed: nbformat.read would fill ids in
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5), "save the notebook as nbformat 4.5 or newer"
    missing = [i for i, c in enumerate(raw["cells"]) if not c.get("id")]
    assert not missing, f"cells {missing} have no id: normalise the notebook (see this test's docstring)"
    ids = [c["id"] for c in raw["cells"]]
    assert len(set(ids)) == len(ids), "cell ids must be unique within a notebook"
