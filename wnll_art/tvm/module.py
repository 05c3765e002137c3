"""TVM purification as an ``nn.Module``: one :class:`~wnll_art.tvm.settings.TVMSettings`, one generator.

C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
Transformations", ICLR 2018. A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense
of Security", ICML 2018 (BPDA).

The algorithm is :func:`wnll_art.tvm.algorithm.total_variation_minimize`; this module holds its settings and
its mask generator. EOT is not here: it lives in :mod:`wnll_art.eot` and is applied by
:class:`wnll_art.defence.Defence`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import nn

from wnll_art.tvm.algorithm import total_variation_minimize
from wnll_art.tvm.settings import TVMSettings

__all__ = ["TVMPurifier"]


class TVMPurifier(nn.Module):
    """Drops pixels with a Bernoulli mask and reconstructs the image by TV minimisation.

    The masks come from one CPU ``torch.Generator`` seeded with ``seed`` (then moved to the images'
    device), so CPU and CUDA runs purify with the same masks, image by image.

    Args:
        settings: The TVM settings (default: Guo et al.'s, :class:`TVMSettings`).
        seed: Seed of the mask generator; successive calls draw new masks.

    Shapes:
        ``(N, 3, H, W)`` float in [0, 1] on any device -> same shape, dtype and device, in [0, 1].

    Attributes:
        randomised: ``True``: outputs depend on the random masks.
    """

    randomised = True

    def __init__(self, settings: TVMSettings | None = None, *, seed: int = 0) -> None:
        super().__init__()
        settings = TVMSettings() if settings is None else settings
        if not isinstance(settings, TVMSettings):
            raise TypeError(f"settings must be a TVMSettings, got {type(settings).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.tvm = settings
        # shared (by reference) with every with_gradient() view, so reseeding one reseeds all
        self._rng: dict[str, Any] = {"seed": seed, "generator": None}

    @property
    def seed(self) -> int:
        """Seed the mask generator restarts from."""
        return int(self._rng["seed"])

    def reseed(self, seed: int) -> None:
        """Restarts the mask generator (of this purifier and its views) from ``seed``."""
        self._rng["seed"], self._rng["generator"] = int(seed), None

    @property
    def generator(self) -> torch.Generator:
        """The CPU mask generator (created and seeded on first use)."""
        if self._rng["generator"] is None:
            self._rng["generator"] = torch.Generator().manual_seed(self.seed)
        gen: torch.Generator = self._rng["generator"]
        return gen

    def with_gradient(self, gradient: Literal["bpda", "unrolled"]) -> TVMPurifier:
        """A view with another gradient mode that shares this one's generator and seed."""
        view = copy.copy(self)
        view.tvm = self.tvm.replace(gradient=gradient)
        return view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return total_variation_minimize(
            x, **self.tvm.solver_kwargs(), generator=self.generator, clip_values=(0.0, 1.0)
        )

    def settings(self) -> dict[str, Any]:
        """The TVM settings (whole) and the seed."""
        return {**self.tvm.to_dict(), "seed": self.seed}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
