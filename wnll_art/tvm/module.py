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
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import nn

from wnll_art._random import drawing_from, seed_generator
from wnll_art.tvm.algorithm import bernoulli_mask, total_variation_minimize
from wnll_art.tvm.settings import TVMSettings

__all__ = ["TVMPurifier"]


class TVMPurifier(nn.Module):
    """Drops pixels with a Bernoulli mask and reconstructs the image by TV minimisation.

    The masks come from one CPU ``torch.Generator`` seeded with ``seed`` (then moved to the images'
    device), so CPU and CUDA runs purify with the same masks, image by image. Successive calls draw new
    masks; :meth:`drawing` draws them from another seed (or generator) for one block.

    With ``fixed_masks=True`` the purifier is a deterministic function (for decision-based attacks such as
    HopSkipJump, which assume that one input gives one output): every call draws one ``(1, C, H, W)`` mask from
    a fresh generator seeded with ``seed`` and applies it to every image of the batch, so an image is purified
    the same way in any call, batch size or batch position; :meth:`drawing` then changes nothing.

    Args:
        settings: The TVM settings (default: Guo et al.'s, :class:`TVMSettings`).
        seed: Seed of the mask generator (never changed afterwards).
        fixed_masks: One fixed mask (see above) instead of fresh draws per call.

    Shapes:
        ``(N, 3, H, W)`` float in [0, 1] on any device -> same shape, dtype and device, in [0, 1].

    Attributes:
        generator: The CPU mask generator calls draw from (replaced inside a :meth:`drawing` block).
    """

    def __init__(
        self, settings: TVMSettings | None = None, *, seed: int = 0, fixed_masks: bool = False
    ) -> None:
        super().__init__()
        settings = TVMSettings() if settings is None else settings
        if not isinstance(settings, TVMSettings):
            raise TypeError(f"settings must be a TVMSettings, got {type(settings).__name__}")
        if not isinstance(fixed_masks, bool):
            raise TypeError(f"fixed_masks must be a bool, got {type(fixed_masks).__name__}")
        self.tvm = settings
        self.generator: torch.Generator = seed_generator(seed)  # checks seed
        self._seed, self._fixed_masks = seed, fixed_masks

    @property
    def seed(self) -> int:
        """The base seed (read-only)."""
        return self._seed

    @property
    def fixed_masks(self) -> bool:
        """Whether every call applies the one mask drawn from :attr:`seed` (read-only)."""
        return self._fixed_masks

    @property
    def randomised(self) -> bool:
        """``True``: outputs depend on the random masks (``not fixed_masks``)."""
        return not self._fixed_masks

    def drawing(self, seed_or_generator: int | torch.Generator) -> AbstractContextManager[None]:
        """Inside the block, masks come from ``seed_or_generator`` (an int: a fresh generator seeded with it);
        the previous generator is back on exit. No effect with ``fixed_masks``.

        Raises:
            TypeError: ``seed_or_generator`` is neither an int nor a ``torch.Generator``.
        """
        return drawing_from(self, seed_or_generator)

    def with_gradient(self, gradient: Literal["bpda", "unrolled"]) -> TVMPurifier:
        """A copy with another gradient mode, the same seed and (until either enters :meth:`drawing`) the same
        generator object."""
        view = copy.copy(self)
        view.tvm = self.tvm.replace(gradient=gradient)
        return view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_masks:
            one = bernoulli_mask((1, *x.shape[1:]), float(self.tvm.prob), generator=seed_generator(self.seed),
                                 device=x.device)  # fmt: skip
            return total_variation_minimize(x, **self.tvm.solver_kwargs(), mask=one.expand_as(x).contiguous(),
                                            clip_values=(0.0, 1.0))  # fmt: skip
        return total_variation_minimize(
            x, **self.tvm.solver_kwargs(), generator=self.generator, clip_values=(0.0, 1.0)
        )

    def settings(self) -> dict[str, Any]:
        """The TVM settings (whole), the seed and, only when set, ``fixed_masks``."""
        return {
            **self.tvm.to_dict(),
            "seed": self.seed,
            **({"fixed_masks": True} if self.fixed_masks else {}),
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
