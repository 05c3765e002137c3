"""Fixtures of the slow tier: one pass of the pretrained ResNet-56 over the 10,000 test images, shared."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def test_features(pretrained_resnet56: torch.nn.Module, test_set: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Penultimate features ``(10000, 64)`` of the test images under the pretrained ResNet-56 (computed once;
    the tests that use them also check the model's own forward on a slice against them)."""
    x, _ = test_set
    with torch.inference_mode():
        return torch.cat([pretrained_resnet56.features(x[i : i + 500].float() / 255) for i in range(0, len(x), 500)])
