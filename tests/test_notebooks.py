"""Every notebooks/*.ipynb runs top to bottom (nbclient, kernel python3, cwd notebooks/, 300 s a notebook).

The notebooks are found by glob, so a new one is tested as soon as it is added; none is skipped. If the
folder holds no notebook, the one parameter is reported as skipped with that reason (pytest -ra shows it).
"""

import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the dev extra: pip install -e '.[dev]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the dev extra: pip install -e '.[dev]'")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TIMEOUT = 300  # seconds for a whole notebook
# the notebooks' own size knobs, smaller here: every cell still runs, on fewer steps (the kernel inherits them)
SMALLER = {"MAKEMORE_NB_STEPS": "1000", "MAKEMORE_NB_DIAG_STEPS": "100", "EMB_NB_EPOCHS": "1",
           "EMB_NB_RNN_EPOCHS": "1", "EMB_NB_CHARS": "48000", "EMB_NB_VALID_CHARS": "12000"}


def execute(path_or_nb, timeout: float = TIMEOUT, cwd: Path | None = None) -> float:
    """Run a notebook in a fresh python3 kernel whose working directory is the notebook's folder."""
    nb = nbformat.read(path_or_nb, as_version=4) if isinstance(path_or_nb, Path) else path_or_nb
    cwd = cwd or (path_or_nb.parent if isinstance(path_or_nb, Path) else NOTEBOOK_DIR)
    deadline = time.monotonic() + timeout
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=int(timeout),
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),  # the budget is per notebook
        resources={"metadata": {"path": str(cwd)}})
    t0 = time.monotonic()
    client.execute()
    return time.monotonic() - t0


@pytest.mark.parametrize(
    "path", NOTEBOOKS or [pytest.param(None, marks=pytest.mark.skip(reason=f"no notebooks in {NOTEBOOK_DIR}"))],
    ids=lambda p: p.name if p is not None else "none")
def test_notebook_runs(path, monkeypatch):
    for name, value in SMALLER.items():
        monkeypatch.setenv(name, value)
    seconds = execute(path)
    assert seconds < TIMEOUT


def test_the_runner_uses_this_environment_and_reports_failures(tmp_path):
    """A two-cell notebook: the kernel is this venv's Python (jaxlearn importable), and an error fails."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, jaxlearn\nprint(sys.executable)"),
                nbformat.v4.new_code_cell("1 / 0")]
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="ZeroDivisionError"):
        execute(nb, timeout=120, cwd=tmp_path)
    printed = Path(nb.cells[0].outputs[0]["text"].strip())
    assert printed.parent == Path(sys.executable).parent, f"kernel python {printed}, tests run {sys.executable}"
