"""Every notebook in notebooks/ executes without error in smoke mode (FLOWSCI_SMOKE=1).

The notebooks run in a kernel started from this interpreter (a private kernelspec in a temp
folder), so they see the same environment as the tests whatever kernels the user's Jupyter
knows, with the working directory notebooks/ and data in a temp folder. They are stored without
outputs, so that executing one never shows up as a diff.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
KERNEL = "flowsci-tests"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec that runs ``sys.executable`` (the test environment's Python)."""
    root = tmp_path_factory.mktemp("kernels")
    (root / KERNEL).mkdir()
    (root / KERNEL / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "flowsci tests", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(root)])


def _failure(path: Path, nb: nbformat.NotebookNode, exc: CellExecutionError) -> str:
    """The failing cell's number, source and traceback (without terminal colours)."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                trace = _ANSI.sub("", "\n".join(output.get("traceback", [])))
                return (f"{path.name}: cell {index} raised {output.get('ename')}: {output.get('evalue')}\n"
                        f"--- cell source ---\n{cell.source}\n--- traceback ---\n{trace}")
    return f"{path.name}: {_ANSI.sub('', str(exc))}"


def test_notebooks_exist() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "write_a_domain.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs or execution counts; clear them before "
                       "committing (Jupyter: Edit > Clear Outputs of All Cells, or "
                       f"`jupyter nbconvert --clear-output --inplace {path.relative_to(REPO)}`)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, kernel_specs: KernelSpecManager, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSCI_SMOKE", "1")
    monkeypatch.setenv("FLOWSCI_DATA", str(tmp_path / "data"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the notebooks' tempfile run folders
    monkeypatch.delenv("MPLBACKEND", raising=False)      # the kernel's inline backend, as in Jupyter
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, km=AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs),
        timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    failure = None
    try:
        client.execute()
    except CellExecutionError as exc:
        failure = _failure(path, nb, exc)
    if failure:  # outside the except block: no chained copy of the coloured traceback
        pytest.fail(failure, pytrace=False)
