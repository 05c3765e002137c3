"""WNLL on the real pretrained ResNet-56 and the full CIFAR-10 test set (slow tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wnll_art import load_cifar10, load_pretrained
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.template import balanced_template

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def template(cifar_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_cifar10(cifar_root, split="train")
    return balanced_template(images, labels, 50, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kernel", ["gaussian", "quartic"])
def test_clean_accuracy_transductive_500(
    kernel: str,
    pretrained_resnet56: torch.nn.Module,
    template: tuple[torch.Tensor, torch.Tensor],
    test_set: tuple[torch.Tensor, torch.Tensor],
    test_features: torch.Tensor,
) -> None:
    model = WNLLNet(
        pretrained_resnet56, *template, coupling="transductive", wnll_batch_size=500, kernel=kernel
    ).eval()  # type: ignore[arg-type]
    x, y = test_set
    with torch.inference_mode():  # WNLL batches of 500 on the shared features (one backbone pass for the tier)
        template_feats = model.template_features()
        u = torch.cat([model.interpolate(test_features[i : i + 500], template_feats) for i in range(0, len(x), 500)])
        first = model(x[:500].float() / 255)  # the model's own forward on the first batch agrees
    assert torch.equal(first.argmax(1), u[:500].argmax(1))
    accuracy = 100.0 * float((u.argmax(1) == y).sum()) / len(x)
    print(f"WNLL ({kernel}) clean accuracy on 10,000 test images: {accuracy:.2f}%")
    assert accuracy >= 93.0, accuracy


def test_from_pretrained_builds_balanced_template(
    cifar_root: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    model = WNLLNet.from_pretrained("resnet56", data_root=cifar_root, template_size=100, seed=3)
    assert torch.bincount(model.template_labels).tolist() == [10] * 10
    assert not model.training
    assert load_pretrained("resnet56").state_dict().keys() == model.backbone.state_dict().keys()
