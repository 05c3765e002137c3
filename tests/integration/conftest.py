"""Fixtures for the ART / Foolbox integration tier: a small real slice and the pretrained models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from wnll_art import load_cifar10
from wnll_art.evaluation import engine
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.template import balanced_template

N_IMAGES = 16


@pytest.fixture(scope="session")
def clean_slice(test_set: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 16 CIFAR-10 test images in [0, 1] and their labels."""
    x, y = test_set
    return x[:N_IMAGES].float() / 255, y[:N_IMAGES]


@pytest.fixture(scope="module")
def tiny_wnll() -> WNLLNet:
    """A random 4-class WNLLNet over a one-block CIFAR ResNet: template 40, transductive batches of 8 (one per
    test module: tests may change its mode)."""
    from wnll_art.models.resnet import CifarResNet

    torch.manual_seed(0)
    images = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return WNLLNet(
        CifarResNet(1, 4), images, torch.arange(40) % 4, k=6, sigma_neighbor=3, wnll_batch_size=8
    ).eval()


@pytest.fixture(scope="session")
def wnll_model(pretrained_resnet56: torch.nn.Module, cifar_root: Path) -> WNLLNet:
    """Pretrained ResNet-56 + WNLL, template 100 (10 per class, seed 0), transductive batches of 16."""
    images, labels = load_cifar10(cifar_root, split="train")
    template = balanced_template(images, labels, 10, generator=torch.Generator().manual_seed(0))
    return WNLLNet(pretrained_resnet56, *template, wnll_batch_size=N_IMAGES).eval()


@pytest.fixture
def computed_cells(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``"model/attack"`` of every cell the engine computes (not reads back) during the test."""
    calls: list[str] = []
    original: Callable[..., object] = engine._cell

    def counting(spec, victim, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(f"{victim.model}/{spec.name}")
        return original(spec, victim, *args, **kwargs)

    monkeypatch.setattr(engine, "_cell", counting)
    return calls
