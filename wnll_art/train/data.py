"""The CIFAR-10 splits a training run uses (optionally the first images only, for quick runs)."""

from __future__ import annotations

import os

import torch

from wnll_art.data import load_cifar10

__all__ = ["load_splits"]


def load_splits(
    data_root: str | os.PathLike[str] | None, *, train_subset: int | None, test_subset: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train_images, train_labels, test_images, test_labels)``: uint8 N x 3 x 32 x 32 and int64 labels.

    Args:
        data_root: CIFAR-10 root (``None``: the default root).
        train_subset: Keep only the first this many training images (``None``: all 50,000).
        test_subset: Keep only the first this many test images (``None``: all 10,000).
    """
    x, y = load_cifar10(data_root, split="train")
    xt, yt = load_cifar10(data_root, split="test")
    if train_subset is not None:
        x, y = x[:train_subset], y[:train_subset]
    if test_subset is not None:
        xt, yt = xt[:test_subset], yt[:test_subset]
    return x, y, xt, yt
