"""Every notebook is stored executed (a figure and an accuracy in its outputs) and still runs top to bottom,
drawing its figures and printing accuracies (slow tier). ``notebooks/_build.py`` writes and executes them."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
ACCURACY = re.compile(r"\bacc(uracy)?\b", re.IGNORECASE)
PERCENT = re.compile(r"\d+\.\d%")


def _figures_and_text(nb: nbformat.NotebookNode) -> tuple[int, str]:
    """The number of PNG outputs and the printed (stdout) text of an executed notebook."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    pngs = sum("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    return pngs, text


def _shows_an_accuracy(text: str) -> bool:
    """A printed line naming an accuracy, with a percentage."""
    return any(PERCENT.search(line) and ACCURACY.search(line) for line in text.splitlines())


def test_notebooks_are_stored_executed() -> None:
    assert len(NOTEBOOKS) >= 2
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), (
            f"{path.name}: not executed (run notebooks/_build.py)"
        )
        pngs, text = _figures_and_text(nb)
        assert pngs >= 1, f"{path.name} stores no figure"
        assert _shows_an_accuracy(text), f"{path.name} stores no printed accuracy:\n{text[:500]}"
        for cell in code:  # stable re-runs: no timing metadata, no stderr (warnings with temporary paths)
            assert "execution" not in cell.metadata, f"{path.name}: timing metadata stored"
            assert not any(o.get("name") == "stderr" for o in cell.outputs), f"{path.name}: stderr stored"
        other = sum(len(str(v)) for c in code for o in c.outputs for k, v in o.get("data", {}).items()
                    if k != "image/png") + len(text)  # fmt: skip
        assert other < 20_000, f"{path.name}: {other} characters of outputs besides its figures"
        assert path.stat().st_size < 1_000_000, f"{path.name}: {path.stat().st_size} bytes stored"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, cifar_root: Path, hub_dir: Path, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("WNLL_ART_DATA", str(cifar_root))
    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # the stored outputs must not count: run from a clean copy
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(
        nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    pngs, text = _figures_and_text(nb)
    assert pngs, f"{path.name} produced no figure"
    assert _shows_an_accuracy(text), f"{path.name} printed no accuracy:\n{text[:500]}"
