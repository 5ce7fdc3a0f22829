"""Every notebook in notebooks/ runs top to bottom at a small size.

The run is the one the documentation site shows: executed by the docs generator's
``executed_notebook`` (inline figures kept) and cached in ``build/docs-notebooks`` by the
notebook's content and the library's sources, so ``make docs`` after ``make test``'s slow suite
renders these runs instead of executing every notebook a second time. The cache holds only runs
that finished without an error.
"""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "docs" / "_gen"))
import reference  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    executed = json.loads(reference.executed_notebook(path, ROOT / "build" / "docs-notebooks"))
    code = [cell for cell in executed["cells"] if cell["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    errors = [
        output
        for cell in code
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    assert all(cell.get("execution_count") for cell in code if "".join(cell["source"]).strip())
