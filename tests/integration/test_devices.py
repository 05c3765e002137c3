"""Device story of the adapters: the library never moves a caller's model unless asked (CPU-testable part)."""

from __future__ import annotations

import pytest
import torch

from wnll_art.adapters.art_estimator import WNLLClassifier
from wnll_art.models.resnet import resnet56


def test_estimator_leaves_a_cpu_model_on_the_cpu_when_cuda_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    """ART's estimator used to take "gpu" whenever CUDA was available and move the caller's model."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = resnet56().eval()
    clf = WNLLClassifier(model)
    assert clf.device.type == "cpu" and clf.device_type == "cpu"
    assert all(p.device.type == "cpu" for p in model.parameters())
    with pytest.raises(ValueError, match="device_type"):
        WNLLClassifier(model, device_type="tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_estimator_keeps_the_models_cuda_device() -> None:
    index = torch.cuda.device_count() - 1
    model = resnet56().eval().to(f"cuda:{index}")
    clf = WNLLClassifier(model)
    assert clf.device == torch.device(f"cuda:{index}")
    assert all(p.device == torch.device(f"cuda:{index}") for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_foolbox_accuracy_with_labels_on_the_cpu() -> None:
    from wnll_art.adapters.foolbox_model import foolbox_accuracy, to_foolbox

    model = resnet56().eval().cuda()
    x, y = torch.rand(4, 3, 32, 32, device="cuda"), torch.zeros(4, dtype=torch.long)
    assert 0.0 <= foolbox_accuracy(to_foolbox(model), x, y) <= 1.0
