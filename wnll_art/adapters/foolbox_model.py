"""Foolbox 3 adapter: a WNLL (or any [0, 1] image) model as a ``foolbox.PyTorchModel``.

J. Rauber, R. Zimmermann, M. Bethge, W. Brendel, "Foolbox Native: Fast adversarial attacks to benchmark
the robustness of machine learning models in PyTorch, TensorFlow, and JAX", JOSS 5 (2020).
A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018 (EOT).

Thin by design: the defence (WNLL, TVM) lives in the ``nn.Module``; this module only sets bounds,
freezes parameters for eagerpy and adds :mod:`wnll_art.eot`'s EOT to a randomised module without it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wnll_art.adapters._batches import WarnSmallBatches
from wnll_art.defence import Defence, score_view
from wnll_art.eot import EOT
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.score import Score

__all__ = ["foolbox_accuracy", "to_foolbox"]


def _needs_eot(model: nn.Module) -> bool:
    """A randomised module (``randomised = True``) that does not average its own draws."""
    if isinstance(model, (Defence, EOT)):
        return False
    return any(getattr(m, "randomised", False) for m in model.modules())


def to_foolbox(
    model: nn.Module,
    *,
    device: str | torch.device | None = None,
    eot_samples: int | None = None,
    score: Score | None = None,
    warn_small_batches: bool = True,
) -> Any:
    """Wraps ``model`` (images ``(N, 3, H, W)`` in [0, 1] -> ``(N, C)`` scores) for Foolbox 3.

    The model is put in eval mode and its parameters get ``requires_grad_(False)`` **in place** (Foolbox's
    eagerpy would otherwise build parameter gradients on every call; call ``model.requires_grad_(True)``
    to train it again). The model is not moved: inputs must be on ``device``.

    EOT is :mod:`wnll_art.eot`'s, the one every path uses: a :class:`wnll_art.defence.Defence` averages its
    TVM draws itself when differentiated; any other randomised module (one holding a module with
    ``randomised = True``) is wrapped in :class:`wnll_art.eot.EOT`.

    Args:
        model: The model; defence logic inside it.
        device: Device for the inputs; default: the model's parameter device (CPU if none).
        eot_samples: EOT draws for a randomised module without its own EOT; ``None``: the default TVM
            settings' ``eot_samples``.
        score: WNLL score the attack sees: ``None`` (the model's own, the deployed ``"log"`` by default, which
            saturates at ``log(1e-6)``: Foolbox's C&W finds nothing on it), ``"log"``, ``"log64"`` (float64
            solve, no saturation, same arg-max) or ``"smooth"``; a view sharing every parameter
            (:func:`wnll_art.defence.score_view`; ``ValueError`` for a bad value or a model without WNLL).
        warn_small_batches: Warn (``UserWarning``, once per returned model) when a call gives a transductive WNLL
            model fewer images than its ``wnll_batch_size`` (its scores are then another batch's); ``False`` for
            callers whose small batches are deliberate and recorded (the evaluation harness).

    Returns:
        A ``foolbox.PyTorchModel`` with ``bounds=(0, 1)``.
    """
    import foolbox as fb

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if eot_samples is not None and (isinstance(eot_samples, bool) or not isinstance(eot_samples, int)
                                    or eot_samples < 1):  # fmt: skip
        raise ValueError(f"eot_samples must be a positive int, got {eot_samples!r}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    model.eval().requires_grad_(False)
    model = score_view(model, score)
    if _needs_eot(model):
        model = EOT(model, samples=eot_samples or TVMSettings().eot_samples).eval()
    return fb.PyTorchModel(
        WarnSmallBatches(model, enabled=warn_small_batches), bounds=(0.0, 1.0), device=device
    )


def foolbox_accuracy(
    fmodel: Any, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 500
) -> float:
    """Top-1 accuracy of a Foolbox model over ``images`` in batches.

    Args:
        fmodel: A Foolbox model.
        images: ``(N, 3, H, W)`` float in [0, 1] on the model's device.
        labels: ``(N,)`` int64.
        batch_size: Images per call; for a transductive WNLL model this is also its coupling.

    Returns:
        Accuracy in [0, 1].
    """
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(
            f"need matching non-empty images/labels, got {images.shape[0]} and {labels.shape[0]}"
        )
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        logits = fmodel(images[i : i + batch_size])
        correct += int((logits.argmax(1) == labels[i : i + batch_size].to(logits.device)).sum())
    return correct / images.shape[0]
