"""TVM purification as an ``nn.Module`` and Expectation over Transformation as an ``nn.Module``.

C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
Transformations", ICLR 2018. A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense
of Security", ICML 2018 (BPDA and EOT).

The defence lives inside the module, so a model ``nn.Sequential(TVMPurifier(...), classifier)`` is
attacked by ART, Foolbox or plain PyTorch as one function. The algorithm itself is
:func:`wnll_art.tvm.solver.total_variation_minimize`; this file only holds its settings and generator.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import nn

from wnll_art.tvm.algorithm import total_variation_minimize

__all__ = ["EOTAverage", "TVMPurifier"]


class TVMPurifier(nn.Module):
    """Drops pixels with a Bernoulli mask and reconstructs the image by TV minimisation.

    Args:
        prob: Probability that a pixel is kept (ART's ``TotalVarMin`` convention).
        norm: Norm of ART's TV objective.
        lamb: TV weight.
        objective: ``"art"`` (ART ``TotalVarMin``'s objective) or ``"isotropic"`` (Guo et al.).
        preset: Iteration preset (``"art-default"`` or ``"converged"``).
        gradient: ``"bpda"`` (straight-through identity) or ``"unrolled"`` (through the iterations).
        seed: Seed of the mask generator (one generator per device, all seeded alike).

    Shapes:
        ``(N, 3, H, W)`` float in [0, 1] on any device -> same shape, in [0, 1].

    Attributes:
        randomised: ``True``: outputs depend on the random masks (adapters add EOT for attacks).
    """

    randomised = True

    def __init__(
        self,
        *,
        prob: float = 0.3,
        norm: int = 2,
        lamb: float = 0.5,
        objective: Literal["art", "isotropic"] = "art",
        preset: str = "art-default",
        gradient: Literal["bpda", "unrolled"] = "bpda",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if gradient not in ("bpda", "unrolled"):
            raise ValueError(f"gradient must be 'bpda' or 'unrolled', got {gradient!r}")
        self.prob, self.norm, self.lamb = prob, norm, lamb
        self.objective, self.preset, self.gradient = objective, preset, gradient
        # shared (by reference) with every with_gradient() view, so reseeding one reseeds all
        self._rng: dict[str, Any] = {"seed": seed, "generators": {}}

    @property
    def seed(self) -> int:
        """Seed the mask generators restart from."""
        return int(self._rng["seed"])

    def reseed(self, seed: int) -> None:
        """Restarts every mask generator (of this purifier and its views) from ``seed``."""
        self._rng["seed"] = seed
        self._rng["generators"].clear()

    def generator(self, device: torch.device) -> torch.Generator:
        """The mask generator for ``device`` (created and seeded on first use)."""
        generators: dict[str, torch.Generator] = self._rng["generators"]
        key = str(device)
        if key not in generators:
            generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return generators[key]

    def with_gradient(self, gradient: Literal["bpda", "unrolled"]) -> TVMPurifier:
        """A view with another gradient mode that shares this one's generators and seed."""
        view = copy.copy(self)
        view.gradient = gradient
        return view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return total_variation_minimize(
            x, prob=self.prob, norm=self.norm, lamb=self.lamb, objective=self.objective, preset=self.preset,
            gradient=self.gradient, generator=self.generator(x.device), clip_values=(0.0, 1.0),
        )  # fmt: skip

    def settings(self) -> dict[str, Any]:
        return {"prob": self.prob, "norm": self.norm, "lamb": self.lamb, "objective": self.objective,
                "preset": self.preset, "gradient": self.gradient, "seed": self.seed}  # fmt: skip

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings().items())


class EOTAverage(nn.Module):
    """Expectation over Transformation: the mean of ``samples`` calls of a randomised module.

    Averages the scores (as Foolbox's ``ExpectationOverTransformationWrapper`` does), so the gradient
    of any loss of the output is taken through the average of ``samples`` random draws.

    Args:
        inner: The randomised module.
        samples: Number of draws per call.
    """

    randomised = True

    def __init__(self, inner: nn.Module, *, samples: int) -> None:
        super().__init__()
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive int, got {samples!r}")
        self.inner, self.samples = inner, samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.inner(x) for _ in range(self.samples)]).mean(0)
