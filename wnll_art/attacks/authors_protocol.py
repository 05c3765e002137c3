"""The authors' softmax attack scripts as :class:`~wnll_art.attacks.Attack` s, so the engine runs them as the
``authors`` protocol (:mod:`wnll_art.evaluation.protocols`).

The replication itself is :mod:`wnll_art.attacks.authors` (every step, with the script line it mirrors, in
``evaluations/authors_scripts.md``). The scripts' threat model is not the eps ball: ``Fool_StandardDNN.py`` steps
and clamps in its normalised space, so a pixel moves by up to ``max(eps * std, mean, 1 - mean - std)`` in its
channel (about 0.5 at every eps), and its C&W has no bound at all. Each attack declares that bound
(:meth:`max_linf`); the engine checks the adversarials against it and records it beside the measured radius.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from wnll_art.attacks.authors import StandardCW, StandardFGSM, StandardIFGSM
from wnll_art.attacks.base import Attack

__all__ = ["AuthorsSoftmax"]

_SCRIPTS = {"fgsm": StandardFGSM, "ifgsm": StandardIFGSM, "cw_l2": StandardCW}


@dataclass(frozen=True)
class AuthorsSoftmax(Attack):
    """``Fool_StandardDNN.py -method fgsm|ifgsm|cwl2`` on a softmax model, exactly as scripted (descent FGSM,
    IFGSM of 10 unit steps in the normalised eps ball, C&W without a distance term; see
    :class:`~wnll_art.attacks.authors.StandardFGSM` and the others).

    Attributes:
        method: ``"fgsm"``, ``"ifgsm"`` or ``"cw_l2"``.
        sign: FGSM's direction (``None``: the script's descent, -1; +1: the paper's ascent).
        eps_space: Where eps (and IFGSM's ball) is measured: ``"normalised"`` (the script) or ``"pixel"``.
        clamp_space: What is clamped to [0, 1]: ``"normalised"`` values (the script) or ``"pixel"`` s.
            The last three are the ablation switches of ``evaluations/paper_numbers.py`` (FGSM / IFGSM only).
    """

    name: ClassVar[str] = "authors_softmax"
    library: ClassVar[str] = "authors"
    method: Literal["fgsm", "ifgsm", "cw_l2"] = "fgsm"
    sign: Literal[-1, 1] | None = None
    eps_space: Literal["normalised", "pixel"] = "normalised"
    clamp_space: Literal["normalised", "pixel"] = "normalised"

    def __post_init__(self) -> None:
        if self.method not in _SCRIPTS:
            raise ValueError(f"method must be one of {sorted(_SCRIPTS)}, got {self.method!r}")
        switched = self.sign is not None or (self.eps_space, self.clamp_space) != ("normalised", "normalised")
        if self.method == "cw_l2" and switched or self.method == "ifgsm" and self.sign is not None:
            raise ValueError(f"{self.method}: these switches do not apply (the script's C&W has no eps or clamp)")

    @property
    def script(self) -> StandardFGSM | StandardIFGSM | StandardCW:
        if self.method == "cw_l2":
            return StandardCW()
        switches: dict[str, Any] = {"eps_space": self.eps_space, "clamp_space": self.clamp_space}
        return StandardIFGSM(**switches) if self.method == "ifgsm" else StandardFGSM(sign=self.sign or -1, **switches)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        if self.method == "cw_l2":  # the script's C&W iterate leaves [0, 1], which our models refuse: see settings
            return self.script(lambda z: model(z.clamp(0.0, 1.0)), x, y, eps=eps)
        return self.script(model, x, y, eps=eps)

    def max_linf(self, eps: float) -> float | None:
        """The script's own bound (the largest over the channels), or ``None`` for its unbounded C&W."""
        bound = self.script.max_linf(eps)
        return None if bound is None else max(bound)

    def settings(self) -> dict[str, Any]:
        deviation = {"model_input": "the C&W iterate clamped to [0, 1] before the model (our models refuse other "
                     "pixels; the script's normalising model took them; measured excess about 0.003)"}  # fmt: skip
        return {**super().settings(), "script": self.script.settings(), **(deviation if self.method == "cw_l2" else {})}
