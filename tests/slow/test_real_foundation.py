"""Real CIFAR-10 and the real pretrained ResNet-56 (slow tier)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from wnll_art import load_cifar10

pytestmark = pytest.mark.slow


def test_all_six_batches(cifar_root: Path, test_set: tuple[torch.Tensor, torch.Tensor]) -> None:
    x_train, y_train = load_cifar10(cifar_root, split="train")
    x_test, y_test = test_set
    assert x_train.shape == (50000, 3, 32, 32) and x_train.dtype == torch.uint8
    assert x_test.shape == (10000, 3, 32, 32) and y_test.dtype == torch.int64
    assert torch.bincount(y_train, minlength=10).tolist() == [5000] * 10
    assert torch.bincount(y_test, minlength=10).tolist() == [1000] * 10
    # known values of the official files
    assert y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert x_train[0, :, 0, 0].tolist() == [59, 62, 63]
    assert x_test[0, :, 0, 0].tolist() == [158, 112, 49]
    assert x_test[9999, :, 31, 31].tolist() == [27, 26, 26]


def test_corrupt_copy_gives_md5_error(cifar_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    copy = folder / "test_batch"
    shutil.copyfile(cifar_root / "cifar-10-batches-py" / "test_batch", copy)
    copy.chmod(0o644)
    with copy.open("r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="40351d587109b95175f43aff81a1287e"):
        load_cifar10(tmp_path, split="test")


def test_pretrained_accuracy(
    pretrained_resnet56: torch.nn.Module, test_set: tuple[torch.Tensor, torch.Tensor], test_features: torch.Tensor
) -> None:
    x, y = test_set
    with torch.inference_mode():
        logits = pretrained_resnet56.linear(test_features)  # type: ignore[operator]
        forward = pretrained_resnet56(x[:500].float() / 255)  # the model's own forward on a slice agrees
    torch.testing.assert_close(forward, logits[:500], rtol=1e-4, atol=1e-4)
    accuracy = 100.0 * float((logits.argmax(1) == y).sum()) / len(x)
    assert abs(accuracy - 93.39) <= 0.02, accuracy
