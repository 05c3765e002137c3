"""The CIFAR-10 data of a training run: the splits (optionally their first images) and the training pool
(original images, their TVM-purified copies, or both)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from wnll_art.data import CIFAR10_CLASSES, load_cifar10
from wnll_art.train.caches import TVMFunction, tvm_images
from wnll_art.train.config import LoopConfig

__all__ = ["TrainingData", "check_templates_fit", "load_splits", "training_data", "training_pool"]


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


def check_templates_fit(config: LoopConfig, labels: torch.Tensor) -> None:
    """Raises ``ValueError`` unless every class of the training ``labels`` can fill both templates.

    Args:
        config: The run's settings (``train_template_size``, ``eval_template_size``, ``train_subset``).
        labels: ``(N,)`` int64 CIFAR-10 labels of the training images (originals, before TVM copies).
    """
    num_classes = len(CIFAR10_CLASSES)
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    fewest = int(counts.min())
    cls = int(counts.argmin())
    for name in ("train_template_size", "eval_template_size"):
        size = getattr(config, name)
        if fewest < size // num_classes:
            images = (
                "the training set" if config.train_subset is None else f"train_subset={config.train_subset}"
            )
            raise ValueError(
                f"{name}={size} needs {size // num_classes} training images of every class, but {images} has "
                f"only {fewest} of class {cls} ({CIFAR10_CLASSES[cls]}); use a larger train_subset "
                "(--train-subset) or a smaller template"
            )


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
    check_templates_fit(config, labels)  # before the TVM cache (or anything else) is written
    tvm = None
    if config.data != "original":
        tvm = tvm_images(images, settings=config.tvm, seed=config.seed, cache_dir=cache_dir, tvm_fn=tvm_fn,
                         device=device, progress=progress)  # fmt: skip
    images, labels, source = training_pool(config.data, images, tvm, labels)
    return TrainingData(images, labels, source, test_images, test_labels)


def training_pool(
    data: str, images: torch.Tensor, tvm: torch.Tensor | None, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, labels, source)`` of a training-data mode: the originals, their TVM copies, or both (originals
    first); ``source`` is the index of each row's original image (a TVM copy shares it).

    Args:
        data: ``"original"``, ``"tvm"`` or ``"original+tvm"``.
        images: ``(N, ...)`` original images.
        tvm: ``(N, ...)`` their TVM copies (unused, may be ``None``, for ``"original"``).
        labels: ``(N,)`` labels.

    Raises:
        ValueError: An unknown mode, or a TVM mode without ``tvm``.
    """
    source = torch.arange(images.shape[0])
    if data == "original":
        return images, labels, source
    if data not in ("tvm", "original+tvm") or tvm is None:
        raise ValueError(f"data must be 'original', 'tvm' or 'original+tvm' (the TVM modes need tvm), got {data!r}")
    if data == "tvm":
        return tvm, labels, source
    return torch.cat([images, tvm]), labels.repeat(2), source.repeat(2)
