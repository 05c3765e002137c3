"""Fault injection into a `wnll-art evaluate` results folder (integration tier, real data, tiny run).

After each fault the re-run names the file, keeps it aside under ``rejected/``, recomputes only that cell,
and ``results.md`` is exactly the undamaged run's (so it never shows an unvalidated number).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.jobs.main import evaluate

pytestmark = pytest.mark.integration

CFG = EvalConfig(n=4, eps=(0.02,), models=("softmax",), defences=("none",), wnll_batch_size=4)
PLAN = {"attacks": ("fgsm",)}
CELL = "main__softmax__none__fgsm__eps0.0200.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cifar_root: Path, hub_dir: Path) -> dict[str, Path]:
    """The tiny run (after a failed first attempt in the same folder) and one with another seed."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(hub_dir))
    base = tmp_path_factory.mktemp("faults")
    try:
        with pytest.raises(FileNotFoundError, match="CIFAR-10 file missing"):
            evaluate(CFG, **PLAN, out_dir=base / "run", data_root=base / "no-data")
        assert not (base / "run").exists()  # a failed run writes nothing ...
        evaluate(CFG, **PLAN, out_dir=base / "run", data_root=cifar_root)  # ... so the corrected one is not refused
        evaluate(EvalConfig(**{**CFG.__dict__, "seed": 1}), **PLAN, out_dir=base / "other", data_root=cifar_root)
    finally:
        mp.undo()
    return {"run": base / "run", "other": base / "other"}


@pytest.mark.parametrize(
    "name", ["truncate", "empty", "nul_fill", "drop_field", "edit_accuracy", "other_run"]
)
def test_fault_named_kept_aside_recomputed(
    name: str, fault: Callable[[Path, str, Path], None], computed_cells: list[str], runs: dict[str, Path],
    tmp_path: Path, cifar_root: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    out = tmp_path / "run"
    shutil.copytree(runs["run"], out)
    cell = out / "cells" / CELL
    fault(cell, name, runs["other"] / "cells" / CELL)
    damaged = cell.read_bytes()
    with caplog.at_level(logging.WARNING, logger="wnll_art.evaluation"):
        evaluate(CFG, **PLAN, out_dir=out, data_root=cifar_root)
    assert computed_cells == ["softmax/fgsm"]  # only the damaged cell
    assert str(cell) in caplog.text and "moved to" in caplog.text and "recomputing" in caplog.text
    assert (out / "rejected" / CELL).read_bytes() == damaged  # kept, not deleted
    recomputed, reference = (json.loads(p.read_text()) for p in (cell, runs["run"] / "cells" / CELL))
    assert (recomputed["accuracy"], recomputed["per_image_correct"]) == (
        reference["accuracy"], reference["per_image_correct"]
    )  # fmt: skip
    assert (out / "results.md").read_text() == (runs["run"] / "results.md").read_text()


def test_other_settings_refused_naming_both_values(runs: dict[str, Path], cifar_root: Path) -> None:
    with pytest.raises(ValueError, match=r"recorded -> requested: run.seed: 0 -> 1\)"):
        evaluate(EvalConfig(**{**CFG.__dict__, "seed": 1}), **PLAN, out_dir=runs["run"], data_root=cifar_root)
