"""Class-balanced labelled templates for the WNLL activation (Wang et al. 2018, Sec. 3)."""

from __future__ import annotations

import torch

from wnll_art._checks import check_labels, check_positive_int

__all__ = ["balanced_template"]


def balanced_template(
    images: torch.Tensor,
    labels: torch.Tensor,
    per_class: int,
    *,
    generator: torch.Generator,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws ``per_class`` examples of every class, reproducibly.

    Args:
        images: ``(N, ...)`` tensor of any dtype (e.g. uint8 CIFAR-10 images), on any device.
        labels: ``(N,)`` int64 labels in ``[0, num_classes)``, same device as ``images``.
        per_class: Examples drawn (without replacement) from each class.
        generator: The only source of randomness (a CPU ``torch.Generator``); the same seed gives
            the same template.
        num_classes: Number of classes; inferred as ``labels.max() + 1`` when ``None``.

    Returns:
        ``(template_images, template_labels)``: new tensors of ``num_classes * per_class`` rows, ordered
        by class, then by draw; ``images`` and ``labels`` are not modified.

    Raises:
        TypeError: Non-tensor inputs, non-integer labels, or ``generator`` not a ``torch.Generator``.
        ValueError: Mismatched lengths, or a class with fewer than ``per_class`` examples (named).
    """
    check_labels(labels, "labels", num_classes=num_classes)
    check_positive_int(per_class, "per_class")
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images has {images.shape[0]} rows but labels has {labels.shape[0]}")
    if labels.numel() == 0:
        raise ValueError("labels is empty")
    n_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    counts = torch.bincount(labels.cpu(), minlength=n_classes)
    short = [c for c in range(n_classes) if int(counts[c]) < per_class]
    if short:
        raise ValueError(
            f"classes {short} have fewer than per_class={per_class} examples "
            f"(counts {[int(counts[c]) for c in short]})"
        )
    chosen = []
    labels_cpu = labels.cpu()
    for c in range(n_classes):
        idx = torch.nonzero(labels_cpu == c).flatten()
        chosen.append(idx[torch.randperm(idx.numel(), generator=generator)[:per_class]])
    index = torch.cat(chosen).to(labels.device)
    return images[index].clone(), labels[index].clone()
