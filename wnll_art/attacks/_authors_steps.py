"""The steps both of the authors' attack scripts share, in one place for :mod:`wnll_art.attacks.authors` (softmax)
and :mod:`wnll_art.attacks.authors_wnll` (WNLL): the argument check, the gradient, PyTorch 0.3's Adam step, the
C&W options and the ``settings()`` record.

B. Wang et al., arXiv:1809.08516; code: github.com/BaoWangMath/DNN-DataDependentActivation
(``Fool_StandardDNN.py`` @ede8d50, ``Fool_WNLLDNN.py`` @67fe264, ``Cifar10-Robust/Attack_ResNet_WNLL_PGD.py``
@c56fd67). Each step's script lines are in ``evaluations/authors_scripts.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from wnll_art._checks import check_images, check_labels
from wnll_art.attacks._authors_choices import CHOICES

__all__ = ["CWOptions", "Scores", "Triple", "adam03_step", "attack_settings", "check_attack_inputs", "grad_of"]  # fmt: skip

Triple = tuple[float, float, float]
Scores = Callable[[Tensor], Tensor]
_ADAM = (0.9, 0.999, 1e-8)  # torch.optim.Adam defaults (the scripts pass only lr)


def check_attack_inputs(x: Tensor, y: Tensor, eps: float | None) -> None:
    """Raises ``TypeError`` / ``ValueError`` unless ``x`` are images, ``y`` their labels and eps (unless ``None``)
    finite ``>= 0``."""
    check_images(x, "x")
    check_labels(y, "y")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels for {x.shape[0]} images in x")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps)
                            or eps < 0):  # fmt: skip
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")


def grad_of(loss: Tensor, wrt: Tensor) -> Tensor:
    """``d loss / d wrt`` (``loss`` a scalar), without accumulating into ``wrt.grad``."""
    (g,) = torch.autograd.grad(loss, wrt)
    return g


def adam03_step(w: Tensor, g: Tensor, m: Tensor, v: Tensor, t: int, lr: float) -> None:
    """One Adam step in place, as torch 0.3 took it (the scripts' version: ``loss.data.cpu()[0]``,
    ``Fool_StandardDNN.py`` line 592): ``w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + 1e-8)``."""
    b1, b2, tiny = _ADAM
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    w.addcdiv_(m, v.sqrt().add_(tiny), value=-lr * math.sqrt(1 - b2**t) / (1 - b1**t))


def attack_settings(attack: Any, common: dict[str, str]) -> dict[str, Any]:
    """An attack's record: its class name, script, fields, the script family's ``common`` choices and its own."""
    name = type(attack).__name__
    return {"name": name, "script": attack.script, **asdict(attack), **common, **CHOICES[name]}


@dataclass(frozen=True, kw_only=True)
class CWOptions:
    """The fields :class:`~wnll_art.attacks.authors.StandardCW` and :class:`~wnll_art.attacks.authors_wnll.WNLLCW`
    share, in this order (documented there)."""

    steps: int = 10
    learning_rate: float = 0.01
    c: float = 10.0
    kappa: float = 0.0
    l2_penalty: bool = False
    clip: bool = True
