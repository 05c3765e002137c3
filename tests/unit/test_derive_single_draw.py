"""evaluations/results/derive_single_draw.py: single-draw accuracy and the draws behind an adaptive minimum."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "evaluations" / "results"))
import derive_single_draw as dsd  # noqa: E402


def _cell(attack: str, correct: list[int], means: list[float], *, k: int = 3, eps: float = 0.02,
          protocol: str = "adaptive", defence: str = "tvm") -> dict[str, Any]:  # fmt: skip
    return {"protocol": protocol, "model": "wnll", "defence": defence, "attack": attack, "eps": eps,
            "accuracy": sum(correct) / len(correct), "per_image_correct": correct,
            "extra": {"tvm_draws": k, "per_image_draw_mean": means,
                      "accuracy_draw_mean": sum(means) / len(means)}}  # fmt: skip


def test_single_draw_accuracy_is_the_mean_over_draws_not_the_k_draw_rule() -> None:
    # 4 images, K = 3: draws correct 3/3, 2/3, 0/3, 1/3 -> K-draw accuracy 1/4, single draw (3+2+0+1)/12 = 1/2
    r = _cell("pgd", [1, 0, 0, 0], [1.0, 0.666667, 0.0, 0.333333])
    assert r["accuracy"] == 0.25
    assert dsd.single_draw_accuracy(r) == pytest.approx(0.5, abs=1e-6)


def test_single_draw_accuracy_of_a_deterministic_victim_is_its_accuracy() -> None:
    r = _cell("pgd", [1, 0, 1], [1.0, 0.0, 1.0], k=1, defence="none")
    assert dsd.single_draw_accuracy(r) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "correct, means, why",
    [([1, 0], [0.666667, 0.0], "correct under K = 3 with 2 of 3 draws"),
     ([0, 0], [1.0, 0.0], "all 3 draws correct but not counted"),
     ([0, 0], [0.5, 0.0], "0.5 is no multiple of 1/3"),
     ([0], [0.0, 0.0], "lengths differ")],
)  # fmt: skip
def test_single_draw_accuracy_refuses_an_inconsistent_record(
    correct: list[int], means: list[float], why: str
) -> None:
    with pytest.raises(ValueError):
        dsd.single_draw_accuracy(_cell("pgd", correct, means))


def test_single_draw_accuracy_refuses_a_record_without_draw_means() -> None:
    r = _cell("pgd", [1], [1.0])
    del r["extra"]["per_image_draw_mean"]
    with pytest.raises(ValueError, match="per_image_draw_mean"):
        dsd.single_draw_accuracy(r)


def _minimum() -> tuple[dict[str, Any], dict[dsd.Key, dict[str, Any]]]:
    clean = _cell("clean", [1, 1, 0], [1.0, 1.0, 0.333333], protocol="paper", eps=0.0)
    fgsm = _cell("fgsm", [1, 0, 0], [1.0, 0.333333, 0.0], protocol="paper")
    pgd = _cell("pgd_surrogate_eot", [0, 1, 0], [0.666667, 1.0, 0.0])
    cells = {("row", r["protocol"], "wnll", "tvm", r["attack"], r["eps"]): r for r in (clean, fgsm, pgd)}
    m = {"protocol": "adaptive", "model": "wnll", "defence": "tvm", "attack": "all", "eps": 0.02,
         "accuracy": 0.0, "per_image_correct": [0, 0, 0],
         "extra": {"component_accuracy": {"paper:clean": 2 / 3, "paper:fgsm": 1 / 3,
                                          "adaptive:pgd_surrogate_eot": 1 / 3}}}  # fmt: skip
    return m, cells


def test_draws_behind_counts_every_components_draws_and_checks_the_minimum() -> None:
    m, cells = _minimum()
    assert dsd.draws_behind(m, cells, "row") == (3, 9)
    cells["row", "paper", "wnll", "tvm", "fgsm", 0.02]["extra"]["tvm_draws"] = 1
    assert dsd.draws_behind(m, cells, "row") == (3, 7)
    m["per_image_correct"] = [1, 0, 0]  # not the minimum of its components
    with pytest.raises(ValueError, match="per-image minimum"):
        dsd.draws_behind(m, cells, "row")


def test_draws_behind_refuses_a_missing_component() -> None:
    m, cells = _minimum()
    del cells["row", "paper", "wnll", "tvm", "clean", 0.0]
    with pytest.raises(ValueError, match="no record"):
        dsd.draws_behind(m, cells, "row")


def test_strongest_skips_clean_and_takes_the_first_on_ties() -> None:
    m, _ = _minimum()
    assert dsd.strongest(m) == ("paper", "fgsm")
    m["extra"]["component_accuracy"]["paper:clean"] = 0.0
    assert dsd.strongest(m) == ("paper", "fgsm")


def test_load_cells_reads_only_the_table2_cells(tmp_path: Path) -> None:
    archive = tmp_path / "records.tgz"
    r = _cell("pgd", [1], [1.0])
    with tarfile.open(archive, "w:gz") as tar:
        for name in (f"{dsd.PREFIX}tvm/cells/a.json", f"{dsd.PREFIX}tvm/convergence/cells/b.json",
                     "results/gpu_tables/table1_exact/tvm/cells/c.json"):  # fmt: skip
            data = json.dumps(r).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert list(dsd.load_cells(archive)) == [("tvm", "adaptive", "wnll", "tvm", "pgd", 0.02)]


@pytest.mark.skipif(not dsd.ARCHIVE.exists(), reason="the committed records archive is absent")
def test_the_committed_records_give_the_numbers_the_documents_quote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert dsd.main([]) == 0
    out = capsys.readouterr().out
    # paper IFGSM on original-data WNLL + TVM at eps 0.02: 19.8 % under K = 3, 29.9 % for one draw
    assert "| original | wnll + tvm | ifgsm | 19.8 / 29.9 | 0.2 / 1.5 |" in out
    assert "- eps 0.02, every TVM victim: 16.6-62.0 / 28.7-75.1" in out
    assert "- eps 0.02: the single draw is 8.5-13.9 points above the K = 3 rule" in out
    assert "| tvm | wnll + tvm | 0.02 | 0.8 | 12 | 36 | pgd_surrogate_eot | 1.0 | 3.6 |" in out
    assert "- clean, every TVM victim: 78.0-81.8 / 86.6-88.6" in out
    assert "- wnll + tvm, eps 0.02: headline 0.6-0.8; pgd_surrogate_eot 1.0-1.4 / 2.9-3.6" in out


@pytest.mark.skipif(not dsd.ARCHIVE.exists(), reason="the committed records archive is absent")
def test_the_committed_output_is_what_the_script_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert dsd.main([]) == 0
    assert capsys.readouterr().out == (dsd.ARCHIVE.parent.parent / "single_draw_derived.txt").read_text()


def test_components_must_agree_with_the_listed_settings() -> None:
    m, _ = _minimum()
    m["settings"] = {"components": ["adaptive:pgd_surrogate_eot", "paper:clean", "paper:fgsm"]}
    assert dsd.components(m) == [
        ("paper", "clean", 0.0),
        ("paper", "fgsm", 0.02),
        ("adaptive", "pgd_surrogate_eot", 0.02),
    ]
    m["settings"]["components"].pop()
    with pytest.raises(ValueError, match="settings.components"):
        dsd.components(m)
