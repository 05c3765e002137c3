"""The whole networks trained on a GPU (``evaluations/gpu_train_zoo.py``) reproduce their records on the CPU.

Each record (``wnll_art/zoo_weights/index.json``) was measured on the device from the shipped file, in float32
without TF32. Here the deployed :class:`wnll_art.Defence` loads each model by name, offline (every weight is in
the package file), and runs the first 500 test images, plain and under TVM (seed 0, one WNLL batch): the same
masks as on the device, other kernels, so one image of 500 may flip (0.2 points, the issue's tolerance).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import wnll_art
from wnll_art.zoo_trained import trained_models

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FULL = ("resnet56-full-softmax", "resnet56-full-softmax-tvm", "resnet56-full-softmax-tvmaug", "resnet56-fgsmrs")


def _first500(defence: torch.nn.Module, test_set: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = test_set[0][:500].float() / 255, test_set[1][:500]
    with torch.no_grad():
        return float((defence(x).argmax(1) == y).double().mean())


@pytest.mark.parametrize("name", FULL)
def test_whole_network_reproduces_its_record(name: str, test_set: tuple[torch.Tensor, torch.Tensor]) -> None:
    entry = trained_models()[name]
    assert entry.base is None and entry.family in ("full", "adversarial")
    plain = _first500(wnll_art.load_defence(name), test_set)  # no weights= : nothing outside the package
    tvm = _first500(wnll_art.load_defence(name, tvm=True), test_set)
    assert abs(plain - entry.record["test_accuracy_first500"]) <= 0.002 + 1e-9, (plain, entry.record)
    assert abs(tvm - entry.record["test_accuracy_tvm_first500"]) <= 0.002 + 1e-9, (tvm, entry.record)


def test_adversarially_trained_baseline_resists_pgd(test_set: tuple[torch.Tensor, torch.Tensor]) -> None:
    """PGD-20 (eps 8/255, step 2/255, random start) on the first 100 test images, on the CPU: the FGSM-trained
    baseline keeps about a third of them (36 % on the device's 500), the softmax network of the same schedule
    none; the device's record is at least the issue's 35 %."""
    sys.path.insert(0, str(ROOT / "evaluations"))
    from gpu_zoo_measure import pgd

    x, y = test_set[0][:100].float() / 255, test_set[1][:100]
    results = {}
    for name in ("resnet56-fgsmrs", "resnet56-full-softmax"):
        model = wnll_art.load_defence(name)
        adv = pgd(model, x, y, generator=torch.Generator().manual_seed(0))
        assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6 and 0.0 <= float(adv.min()) <= float(adv.max()) <= 1.0
        with torch.no_grad():
            results[name] = float((model(adv).argmax(1) == y).double().mean())
    assert results["resnet56-fgsmrs"] >= 0.25, results
    assert results["resnet56-full-softmax"] <= 0.05, results
    assert trained_models()["resnet56-fgsmrs"].record["pgd20_softmax"]["accuracy"] >= 0.35
