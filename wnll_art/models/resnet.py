"""CIFAR ResNet-56 with option-A (parameter-free) shortcuts.

K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2.
State-dict compatible with the public checkpoint of akamaster/pytorch_resnet_cifar10 (BSD-2-Clause).
The model takes images in [0, 1]; its normalisation lives in (non-persistent) buffers, as in RobustBench.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wnll_art._checks import check_images, check_positive_int

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "BasicBlock", "CifarResNet", "resnet56"]

# The normalisation the public checkpoint was trained with (ImageNet statistics).
CIFAR_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
CIFAR_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INPUT_ATOL = 1e-5  # round-off slack accepted outside [0, 1]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (option-A: subsample + zero-pad) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.downsample:
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: stages of 16/32/64 channels, global pooling, linear head.

    Args:
        num_blocks: BasicBlocks per stage (9 for ResNet-56).
        num_classes: Output classes of the linear head.
        mean: Per-channel mean subtracted from the [0, 1] input.
        std: Per-channel standard deviation the input is divided by.
        check_inputs: Validate shape, dtype and range on every call (cheap; turn off inside
            training loops that already guarantee valid inputs).

    Shapes:
        ``forward(x)``: ``(N, 3, H, W)`` float in [0, 1] on the model's device -> ``(N, num_classes)``
        logits. ``features(x)``: same input -> ``(N, 64)`` penultimate features (after pooling).
    """

    feature_dim = 64
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        num_blocks: int = 9,
        num_classes: int = 10,
        *,
        mean: tuple[float, float, float] = CIFAR_MEAN,
        std: tuple[float, float, float] = CIFAR_STD,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        check_positive_int(num_blocks, "num_blocks")
        check_positive_int(num_classes, "num_classes")
        self.num_classes = num_classes
        self.check_inputs = check_inputs
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, num_blocks, stride=1)
        self.layer2 = self._stage(16, 32, num_blocks, stride=2)
        self.layer3 = self._stage(32, 64, num_blocks, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: ``(N, 3, H, W)`` in [0, 1] -> ``(N, 64)`` (same device/dtype)."""
        if self.check_inputs:
            check_images(x, "x", atol=INPUT_ATOL)
        out = (x - self.mean) / self.std
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # a mean over H, W, not adaptive_avg_pool2d: its CUDA backward has no deterministic kernel
        return out.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: ``(N, 3, H, W)`` in [0, 1] -> ``(N, num_classes)``."""
        return self.linear(self.features(x))


def resnet56(num_classes: int = 10, **kwargs: object) -> CifarResNet:
    """The CIFAR ResNet-56 (three stages of nine BasicBlocks), randomly initialised.

    Args:
        num_classes: Output classes of the linear head.
        **kwargs: Passed to :class:`CifarResNet` (``mean``, ``std``, ``check_inputs``).
    """
    return CifarResNet(9, num_classes, **kwargs)  # type: ignore[arg-type]
