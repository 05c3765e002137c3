"""``evaluations/paper_numbers.py run``: the jobs it starts, in stage order, with the plan each protocol names, and the
line it prints per finished cell (``wnll_art.evaluation.jobs.main.evaluate`` replaced: nothing is attacked)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from wnll_art.evaluation.jobs import main as jobs_main
from wnll_art.evaluation.protocols import WNLL_STEPS
from wnll_art.evaluation.records import CellRecord

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import evaluations.paper_numbers as paper_numbers  # noqa: E402


def test_run_starts_each_stage_across_rows_and_prints_each_cell(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_evaluate(cfg: Any, **kwargs: Any) -> None:
        calls.append({"cfg": cfg, **kwargs})
        record = CellRecord(model=cfg.models[0], defence=cfg.defences[0], attack="fgsm", eps=cfg.eps[0],
                            protocol=kwargs["protocol"], n=1, image_indices=[0], settings={}, accuracy=0.25,
                            per_image_correct=[False])  # fmt: skip
        kwargs["on_cell"](record)

    monkeypatch.setattr(jobs_main, "evaluate", fake_evaluate)
    paper_numbers.main(["run", "--rows", "original,tvm", "--stages", "7,0", "--n", "3"])
    folders = [(c["out_dir"].parent.name, c["out_dir"].name) for c in calls]
    assert folders == [("original", "authors_wnll_ablation"), ("tvm", "authors_wnll_ablation"),
                       ("original", "authors"), ("tvm", "authors")]  # fmt: skip
    assert [c["protocol"] for c in calls] == ["authors"] * 4
    assert calls[0]["attacks"] == list(WNLL_STEPS)
    assert "fgsm" in calls[2]["attacks"] and not set(WNLL_STEPS) & set(calls[2]["attacks"])
    assert all(c["cfg"].n == 3 and c["cfg"].wnll_batch_size == 3 for c in calls)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"original authors {calls[0]['cfg'].models[0]} tvm fgsm 0.02: 25.0%"
    assert len(lines) == 4
