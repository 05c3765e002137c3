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


def _need_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        pytest.skip("needs CUDA: set WNLL_ART_TEST_DEVICE=cuda")


def test_estimator_keeps_the_models_cuda_device(device: torch.device) -> None:
    _need_cuda(device)
    index = torch.cuda.device_count() - 1
    model = resnet56().eval().to(f"cuda:{index}")
    clf = WNLLClassifier(model)
    assert clf.device == torch.device(f"cuda:{index}")
    assert all(p.device == torch.device(f"cuda:{index}") for p in model.parameters())


def test_foolbox_accuracy_with_labels_on_the_cpu(device: torch.device) -> None:
    _need_cuda(device)
    from wnll_art.adapters.foolbox_model import foolbox_accuracy, to_foolbox

    model = resnet56().eval().to(device)
    x, y = torch.rand(4, 3, 32, 32, device=device), torch.zeros(4, dtype=torch.long)
    assert 0.0 <= foolbox_accuracy(to_foolbox(model), x, y) <= 1.0


def test_estimator_predicts_and_differentiates_on_the_test_device(device: torch.device) -> None:
    """ART's estimator over a model on ``$WNLL_ART_TEST_DEVICE``: NumPy in and out, the model stays there."""
    import numpy as np

    torch.manual_seed(0)
    model = resnet56().eval().to(device)
    clf = WNLLClassifier(model)
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    preds, grads = clf.predict(x), clf.loss_gradient(x, np.eye(10, dtype=np.float32)[[0, 1, 2, 3]])
    assert preds.shape == (4, 10) and grads.shape == x.shape and np.isfinite(grads).all()
    assert clf.device.type == device.type and all(p.device.type == device.type for p in model.parameters())
