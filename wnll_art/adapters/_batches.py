"""The adapters' one-time warning about a call whose batch is smaller than a transductive model's WNLL batch.

A transductive :class:`~wnll_art.WNLLNet` solves the images of one call together (in chunks of its
``wnll_batch_size``), so a call with fewer images is another model: ART's AutoAttack predicts on subsets of 1-8
images, HopSkipJump makes single-image calls, MAITE's ``evaluate`` defaults to batch size 1, each silently.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["SmallBatchWarner", "WarnSmallBatches", "find_setting"]


def find_setting(model: nn.Module, name: str) -> Any:
    """The first value of attribute ``name`` on ``model`` or its sub-modules (wrappers such as
    ``nn.Sequential(purifier, wnll)`` are searched), else ``None``."""
    for module in model.modules():
        value = getattr(module, name, None)
        if value is not None and not isinstance(value, (nn.Module, torch.Tensor)):
            return value
    return None


class SmallBatchWarner:
    """Warns once (per instance) when a call gives a transductive WNLL model fewer rows than its
    ``wnll_batch_size``.

    Args:
        model: The wrapped module (searched for ``coupling`` and ``wnll_batch_size`` at each call).
        enabled: ``False`` silences it (the evaluation harness, whose batches are its recorded setting).
        adapter: The adapter's name in the message (``"WNLLClassifier"``, ``"to_foolbox"``).
    """

    def __init__(self, model: nn.Module, *, enabled: bool, adapter: str) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"warn_small_batches must be a bool, got {type(enabled).__name__}")
        self.model, self.enabled, self.adapter = model, enabled, adapter
        self.warned = False

    def check(self, rows: int, *, call: str) -> None:
        """Warns (``UserWarning``, once) if ``0 < rows < wnll_batch_size`` for a transductive model."""
        if not self.enabled or self.warned or rows == 0:
            return
        if find_setting(self.model, "coupling") != "transductive":
            return
        size = find_setting(self.model, "wnll_batch_size")
        if not isinstance(size, int) or rows >= size:
            return
        self.warned = True
        warnings.warn(
            f"{self.adapter}: a {call} call gave the transductive WNLL model (coupling='transductive') {rows} "
            f"image(s), fewer than its wnll_batch_size={size}. Its images are solved together, so these scores "
            f"(and gradients) are not those of the model's declared batch: give attacks batch_size >= {size} and "
            f"calls at least {size} images, or use a model with coupling='inductive' (outputs independent of the "
            "batch). Shown once per adapter; warn_small_batches=False silences it.",
            UserWarning,
            stacklevel=3,
        )


class WarnSmallBatches(nn.Module):
    """``model`` with a :class:`SmallBatchWarner` on its calls (the outermost module ``to_foolbox`` hands
    Foolbox; the defence stays inside ``model``).

    Args:
        model: The wrapped module (images ``(N, 3, H, W)`` -> ``(N, C)`` scores).
        enabled: ``False`` silences the warning.
    """

    def __init__(self, model: nn.Module, *, enabled: bool) -> None:
        super().__init__()
        self.model = model
        self.small_batches = SmallBatchWarner(model, enabled=enabled, adapter="to_foolbox")
        self.training = model.training  # a container is born in train mode; never recurse into shared modules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``model(x)``, after the batch-size check."""
        self.small_batches.check(x.shape[0], call="model")
        return self.model(x)  # type: ignore[no-any-return]
