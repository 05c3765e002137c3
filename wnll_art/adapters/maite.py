"""MAITE adapters: the defence as a MAITE image-classification model, CIFAR-10 as a MAITE dataset.

MAITE (MIT Lincoln Laboratory, "Modular AI Trustworthy Engineering") defines its components as structural
protocols: a model is any object with a ``metadata`` dict (at least an ``"id"``) and a ``__call__`` from a batch
(a sequence of ``(C, H, W)`` arrays) to a sequence of per-image score arrays; a dataset has ``metadata``,
``__len__`` and ``__getitem__`` giving ``(image, target, datum metadata)``. HEART (IBM's hardened ART extension)
and ``maite.tasks.evaluate`` take such objects. Nothing here imports ``maite``: the protocols need no base class,
so these adapters work (and are tested) without it; MAITE 0.8.2 (HEART 0.7's) is what the examples run.

Thin by design: the defence lives in the ``nn.Module``. A transductive WNLL model solves the images of one
``__call__`` together, so the caller's batch size is the coupling: ``maite.tasks.evaluate`` defaults to
``batch_size=1`` (a one-image solve); pass ``batch_size >= model.wnll_batch_size``. The adapter warns once when
a call is smaller (``warn_small_batches=False`` silences it).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from wnll_art._checks import check_images, check_positive_int
from wnll_art.adapters._batches import SmallBatchWarner, find_setting
from wnll_art.data import CIFAR10_CLASSES, load_cifar10
from wnll_art.defence import score_view
from wnll_art.models.resnet import INPUT_ATOL
from wnll_art.wnll.score import Score

__all__ = ["Cifar10Dataset", "MaiteClassifier", "maite_cifar10", "to_maite"]

Target = Literal["one_hot", "label"]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the block; every sub-module's mode is restored after it."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _first_tensor(model: nn.Module) -> torch.Tensor | None:
    return next(iter((*model.parameters(), *model.buffers())), None)


def _as_batch(batch: object) -> torch.Tensor:
    """A MAITE input batch (a sequence of ``(C, H, W)`` arrays or tensors, or one ``(N, C, H, W)`` array) as
    one CPU tensor ``(N, C, H, W)``; its dtype kept (checked by the caller)."""
    if isinstance(batch, torch.Tensor):
        return batch.detach()
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(batch))
    if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
        raise TypeError(f"batch must be a sequence of (C, H, W) arrays, got {type(batch).__name__}")
    if len(batch) == 0:
        return torch.zeros(0, 0, 0, 0)
    items = [
        b.detach().cpu() if isinstance(b, torch.Tensor) else torch.from_numpy(np.array(b)) for b in batch
    ]
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"batch must hold (C, H, W) images of one shape, got shapes {sorted(shapes)}")
    return torch.stack(items)


class MaiteClassifier:
    """A MAITE image-classification model around an image ``nn.Module`` (built by :func:`to_maite`).

    Attributes:
        metadata: ``{"id": ..., "index2label": {0: "airplane", ...}}`` (MAITE's ``ModelMetadata``; no
            ``index2label`` for a model whose class count is not CIFAR-10's).
        model: The wrapped module (a score view of it when ``score`` was given).
        observed_batches: Number of calls by batch size (the coupling actually used).

    Call: ``model(batch)`` with ``batch`` a sequence of ``(3, H, W)`` float arrays (NumPy, tensors, anything
    ``np.array`` takes) in [0, 1], or one ``(N, 3, H, W)`` array, gives a list of ``N`` float arrays ``(C,)``:
    the module's scores (a WNLL model's log label functions, a softmax model's logits; arg-max is the class),
    computed in eval mode without gradients on the module's device and dtype. Integer images are refused
    (``TypeError``: divide uint8 images by 255), values outside [0, 1] and other shapes too (``ValueError``).
    """

    def __init__(self, model: nn.Module, *, model_id: str, index2label: Mapping[int, str] | None,
                 warn_small_batches: bool) -> None:  # fmt: skip
        self.model = model
        self.metadata: dict[str, Any] = {"id": model_id}
        if index2label is not None:
            self.metadata["index2label"] = dict(index2label)
        self.observed_batches: Counter[int] = Counter()
        self._small_batches = SmallBatchWarner(model, enabled=warn_small_batches, adapter="to_maite")

    def __call__(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """Scores of each image of ``batch`` (see the class docstring): a list of ``(C,)`` arrays."""
        x = _as_batch(batch)
        if x.shape[0] == 0:
            return []
        ref = _first_tensor(self.model)
        if not x.is_floating_point():
            raise TypeError(f"batch must hold floating-point images in [0, 1], got dtype {x.dtype} "
                            "(convert uint8 images with x.astype(np.float32) / 255)")  # fmt: skip
        if ref is not None and ref.is_floating_point():
            x = x.to(device=ref.device, dtype=ref.dtype)
        elif ref is not None:
            x = x.to(device=ref.device)
        check_images(x, "batch", atol=INPUT_ATOL)
        self._small_batches.check(x.shape[0], call="__call__")
        self.observed_batches[x.shape[0]] += 1
        with torch.no_grad(), _eval_mode(self.model):
            scores = self.model(x)
        return list(scores.detach().float().cpu().numpy())

    def __repr__(self) -> str:
        return f"MaiteClassifier(id={self.metadata['id']!r}, model={type(self.model).__name__})"


def to_maite(
    model: nn.Module,
    *,
    model_id: str | None = None,
    index2label: Mapping[int, str] | None = None,
    score: Score | None = None,
    warn_small_batches: bool = True,
) -> MaiteClassifier:
    """Wraps ``model`` (images ``(N, 3, H, W)`` in [0, 1] -> ``(N, C)`` scores) as a MAITE image classifier.

    The module is not moved, copied or put in another mode: each call runs it in eval mode and restores every
    sub-module's mode after. A :class:`wnll_art.Defence` with TVM purifies each call with one fresh draw (the
    deployed model; EOT only applies to gradients, which MAITE models do not give).

    Args:
        model: The defence (``wnll_art.load_defence(...)``) or any image ``nn.Module``.
        model_id: ``metadata["id"]``; default ``"wnll-art:<class name>"`` plus the classifier and TVM of a
            ``Defence`` (``"wnll-art:Defence(wnll, tvm)"``).
        index2label: Class names by index; default CIFAR-10's for a 10-class model, none otherwise.
        score: WNLL score: ``None`` (the model's own), ``"log"``, ``"log64"`` or ``"smooth"``
            (:func:`wnll_art.defence.score_view`; ``ValueError`` for a model without WNLL).
        warn_small_batches: Warn (``UserWarning``, once) when a call gives a transductive WNLL model fewer
            images than its ``wnll_batch_size``; ``False`` silences it.

    Returns:
        A :class:`MaiteClassifier` (MAITE's ``image_classification.Model`` protocol).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``model_id`` not a string.
        ValueError: An unknown ``score``, or an empty ``model_id``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model_id is not None and not isinstance(model_id, str):
        raise TypeError(f"model_id must be a str, got {type(model_id).__name__}")
    if model_id is not None and not model_id.strip():
        raise ValueError("model_id must not be empty")
    view = score_view(model, score)
    num_classes = find_setting(model, "num_classes")
    if index2label is None and num_classes == len(CIFAR10_CLASSES):
        index2label = dict(enumerate(CIFAR10_CLASSES))
    return MaiteClassifier(view, model_id=model_id or _default_id(model), index2label=index2label,
                           warn_small_batches=warn_small_batches)  # fmt: skip


def _default_id(model: nn.Module) -> str:
    settings = getattr(model, "settings", None)
    if type(model).__name__ == "Defence" and callable(settings):
        s = settings()
        parts = [str(s.get("classifier")), *(["tvm"] if s.get("tvm") is not None else [])]
        return f"wnll-art:Defence({', '.join(parts)})"
    return f"wnll-art:{type(model).__name__}"


class Cifar10Dataset:
    """A MAITE image-classification dataset over CIFAR-10 images (built by :func:`maite_cifar10`).

    Attributes:
        metadata: ``{"id": "cifar10-test[0:20]", "index2label": {0: "airplane", ...}}`` (MAITE's
            ``DatasetMetadata``).
        images: ``(N, 3, 32, 32)`` uint8 CPU tensor (the selected slice).
        labels: ``(N,)`` int64 CPU tensor.

    ``dataset[i]`` gives ``(image, target, {"id": index in the split})``: the image a ``(3, 32, 32)`` float32
    NumPy array in [0, 1]; the target a ``(10,)`` float32 one-hot array (``target="one_hot"``, MAITE's
    convention) or a 0-d int64 array with the label (``target="label"``, what HEART's ``HeartAccuracyMetric``
    and ART attacks take). ``i`` may be negative, as for a list; out of range raises ``IndexError``.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, *, name: str, start: int, target: Target
    ) -> None:
        self.images, self.labels = images, labels
        self.start, self.target = start, target
        self.metadata: dict[str, Any] = {"id": name, "index2label": dict(enumerate(CIFAR10_CLASSES))}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} images")
        image = self.images[i].numpy().astype(np.float32) / np.float32(255)
        label = int(self.labels[i])
        target = (np.eye(len(CIFAR10_CLASSES), dtype=np.float32)[label] if self.target == "one_hot"
                  else np.array(label, dtype=np.int64))  # fmt: skip
        return image, target, {"id": self.start + i}

    def __repr__(self) -> str:
        return f"Cifar10Dataset(id={self.metadata['id']!r}, n={len(self)}, target={self.target!r})"


def maite_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    split: Literal["train", "test"] = "test",
    n: int | None = None,
    start: int = 0,
    target: Target = "one_hot",
) -> Cifar10Dataset:
    """CIFAR-10 (through :func:`wnll_art.load_cifar10`, md5-checked) as a MAITE image-classification dataset.

    Args:
        root: CIFAR-10 root holding ``cifar-10-batches-py/`` (default ``$WNLL_ART_DATA``, else
            ``~/.cache/wnll_art``).
        split: ``"test"`` (10,000 images) or ``"train"`` (50,000).
        n: Number of images from ``start`` (default: to the end of the split).
        start: First image of the split.
        target: ``"one_hot"`` (``(10,)`` float32, MAITE's convention) or ``"label"`` (0-d int64: HEART's
            accuracy metric and ART attacks).

    Returns:
        A :class:`Cifar10Dataset`; its datum ids are indices into the split.

    Raises:
        ValueError: A bad ``split``, ``target``, ``start`` or ``n`` (past the end of the split), or a corrupt file.
        FileNotFoundError: Missing data (the message says how to get it).
    """
    if target not in ("one_hot", "label"):
        raise ValueError(f"target must be 'one_hot' or 'label', got {target!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an int >= 0, got {start!r}")
    if n is not None:
        check_positive_int(n, "n")
    images, labels = load_cifar10(root, split)
    stop = len(labels) if n is None else start + n
    if stop > len(labels) or start >= len(labels):
        raise ValueError(f"start={start}, n={n} go past the {len(labels)} images of the {split} split")
    return Cifar10Dataset(images[start:stop].clone(), labels[start:stop].clone(),
                          name=f"cifar10-{split}[{start}:{stop}]", start=start, target=target)  # fmt: skip
