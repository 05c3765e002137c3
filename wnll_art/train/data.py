"""The CIFAR-10 data of a training run: the splits (optionally their first images) and the training pool
(original images, their TVM-purified copies, or both)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from wnll_art.data import load_cifar10
from wnll_art.train.caches import TVMFunction, tvm_images
from wnll_art.train.config import LoopConfig

__all__ = ["TrainingData", "load_splits", "training_data"]


def load_splits(
    data_root: str | os.PathLike[str] | None, *, train_subset: int | None, test_subset: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train_images, train_labels, test_images, test_labels)``: uint8 N x 3 x 32 x 32 and int64 labels.

    Args:
        data_root: CIFAR-10 root (``None``: the default root).
        train_subset: Keep only the first this many training images (``None``: all 50,000).
        test_subset: Keep only the first this many test images (``None``: all 10,000).

    Raises:
        ValueError: If a subset is larger than its split.
    """
    x, y = load_cifar10(data_root, split="train")
    xt, yt = load_cifar10(data_root, split="test")
    for name, size, total in (
        ("train_subset", train_subset, x.shape[0]),
        ("test_subset", test_subset, xt.shape[0]),
    ):
        if size is not None and size > total:
            raise ValueError(
                f"{name}={size} is larger than the {total} images of the split; use at most {total}"
            )
    if train_subset is not None:
        x, y = x[:train_subset], y[:train_subset]
    if test_subset is not None:
        xt, yt = xt[:test_subset], yt[:test_subset]
    return x, y, xt, yt


@dataclass(frozen=True)
class TrainingData:
    """The images of a run (all uint8 ``(·, 3, 32, 32)`` / int64 labels, CPU).

    Attributes:
        images: ``(N, 3, 32, 32)`` training pool (originals, TVM copies, or originals then TVM copies).
        labels: ``(N,)`` labels of the pool.
        source: ``(N,)`` index of the original image each pool row derives from (a TVM copy shares it).
        test_images: ``(T, 3, 32, 32)`` test images.
        test_labels: ``(T,)`` test labels.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def training_data(
    config: LoopConfig,
    *,
    data_root: str | os.PathLike[str] | None,
    cache_dir: Path,
    tvm_fn: TVMFunction | None,
    device: torch.device,
    progress: bool,
) -> TrainingData:
    """The splits of ``config`` and its training pool; TVM copies come from the cache (masks from
    ``config.seed``, computed on ``device`` if missing)."""
    images, labels, test_images, test_labels = load_splits(
        data_root, train_subset=config.train_subset, test_subset=config.test_subset
    )
    source = torch.arange(images.shape[0])
    if config.data != "original":
        tvm = tvm_images(images, settings=config.tvm, seed=config.seed, cache_dir=cache_dir, tvm_fn=tvm_fn,
                         device=device, progress=progress)  # fmt: skip
        if config.data == "tvm":
            images = tvm
        else:
            images, labels, source = torch.cat([images, tvm]), labels.repeat(2), source.repeat(2)
    return TrainingData(images, labels, source, test_images, test_labels)
