"""The attack interface of the evaluation: one ``@final`` template method around a library's attack.

Each attack is a small frozen dataclass in the Foolbox 3 style: :meth:`Attack.__call__` is the one ``@final``
template method (validation, the libraries' global RNGs seeded for the call and restored after it, projection,
output checks) and subclasses write only :meth:`Attack.run`. Every attack sees a batch exactly as the engine
passes it (one WNLL batch), so the transductive coupling is the run's named setting, never a library default.
The ART and Foolbox attacks are in :mod:`wnll_art.adapters.attacks`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, final

import torch
from torch import nn

from wnll_art._checks import check_images, check_labels
from wnll_art._random import seeded_globals

__all__ = ["Attack", "project_linf"]


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projects ``x_adv`` onto the L-inf ball of radius ``eps`` around ``x``, intersected with [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Attack(ABC):
    """Base class. Subclasses are frozen dataclasses of their hyper-parameters and write :meth:`run`.

    Class attributes:
        name: Short name used in records.
        library: ``"art"`` or ``"foolbox"``.
        eps_independent: The raw attack ignores ``eps`` (C&W): the engine runs it once per batch and
            projects the result onto each eps ball.

    An attack whose threat model is not the eps ball (a replicated script, :mod:`wnll_art.attacks.authors`,
    :mod:`wnll_art.attacks.authors_wnll`) says so in :meth:`max_linf`; the engine checks and records its outputs
    against that bound.
    """

    name: ClassVar[str]
    library: ClassVar[str]
    eps_independent: ClassVar[bool] = False

    @final
    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int
    ) -> torch.Tensor:
        """Attacks one batch.

        Args:
            model: The attacker's view (images in [0, 1] -> ``(N, C)`` scores), defence inside.
            x: ``(N, 3, H, W)`` float in [0, 1], on the model's device.
            y: ``(N,)`` int64 true labels.
            eps: L-inf radius; every output lies in the ball of radius :meth:`max_linf` around ``x`` (``eps``
                unless the attack declares otherwise) and in [0, 1].
            seed: Seed of the global RNGs (Python, NumPy, torch) during :meth:`run`
                (:func:`wnll_art._random.seeded_globals`: their states are restored afterwards).

        Returns:
            Adversarial images, same shape/dtype/device as ``x``; ``x`` is not modified.
        """
        check_images(x, "x")
        check_labels(y, "y")
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1], got {eps}")
        was_training = model.training
        model.eval()
        # ART and Foolbox draw random starts from the global RNGs: seeded per batch (runs reproducible and
        # identical across process shardings), and given back as they were
        try:
            with seeded_globals(seed):
                x_adv = self.run(model, x.detach().clone(), y, eps=eps)
        finally:
            model.train(was_training)
        x_adv = x_adv.to(device=x.device, dtype=x.dtype)
        if not bool(torch.isfinite(x_adv).all()):
            raise RuntimeError(f"{self.name} returned non-finite images")
        bound = self.max_linf(eps)
        return x_adv.clamp(0.0, 1.0) if bound is None else project_linf(x_adv, x, bound)

    def max_linf(self, eps: float) -> float | None:
        """The L-inf radius this attack's outputs keep to at ``eps``: ``eps`` (the threat model of every attack
        but a replicated script's, which may declare a wider one, or ``None``: no bound, measured only)."""
        return eps

    @abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        """Returns adversarial examples of ``x`` (projection onto the eps ball is done by the caller)."""

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "library": self.library, **asdict(self)}
