"""The authors' attack scripts as :class:`~wnll_art.attacks.Attack` s, so the engine runs them as the ``authors``
protocol (:mod:`wnll_art.evaluation.protocols`): ``Fool_StandardDNN.py`` on a softmax victim, ``Fool_WNLLDNN.py``
on a WNLL one.

The replication itself is :mod:`wnll_art.attacks.authors` and :mod:`wnll_art.attacks.authors_wnll` (every step,
with the script line it mirrors, in ``evaluations/authors_scripts.md``). The scripts' threat model is not the eps
ball: ``Fool_StandardDNN.py`` steps and clamps in its normalised space, so a pixel moves by up to ``max(eps * std,
mean, 1 - mean - std)`` in its channel (about 0.5 at every eps); ``Fool_WNLLDNN.py``'s IFGSM projects onto a fixed
0.1 ball; both C&W have no bound. Each attack declares the bound (:meth:`AuthorsScript.max_linf`: the larger of the
two scripts'); the engine checks the adversarials against it and records it beside the measured radius.

Deviations, recorded in :meth:`AuthorsScript.settings`: the WNLL script attacks a batch made of a fresh random
500-image training template and the test images and scores them against that template; here the template is drawn
and attacked as in the script, but the harness scores the adversarial test images with the victim's own template.
The C&W iterates are clamped to [0, 1] before our models, which refuse other pixels (the scripts' were not).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from wnll_art._random import seed_generator
from wnll_art.attacks.authors import WNLLCW, WNLLFGSM, WNLLIFGSM, StandardCW, StandardFGSM, StandardIFGSM
from wnll_art.attacks.authors_wnll import script_template, script_wnll_view
from wnll_art.attacks.base import Attack
from wnll_art.wnll.model import WNLLNet

__all__ = ["AuthorsScript"]

_SOFTMAX = {"fgsm": StandardFGSM, "ifgsm": StandardIFGSM, "cw_l2": StandardCW}
_WNLL = {"fgsm": WNLLFGSM, "ifgsm": WNLLIFGSM, "cw_l2": WNLLCW}


@functools.lru_cache(maxsize=1)
def _training_set() -> tuple[torch.Tensor, torch.Tensor]:
    from wnll_art.data import load_cifar10  # the WNLL script's template pool ($WNLL_ART_DATA)

    return load_cifar10(None, split="train")


@dataclass(frozen=True)
class AuthorsScript(Attack):
    """``Fool_StandardDNN.py`` (softmax victim) or ``Fool_WNLLDNN.py`` (a victim with a WNLL head) ``-method
    fgsm|ifgsm|cwl2``, exactly as scripted (see :mod:`wnll_art.attacks.authors`).

    Attributes:
        method: ``"fgsm"``, ``"ifgsm"`` or ``"cw_l2"``.
        sign: Softmax FGSM's direction (``None``: the script's descent, -1; +1: the paper's ascent).
        eps_space: Softmax: where eps (and IFGSM's ball) is measured, ``"normalised"`` (the script) or ``"pixel"``.
        clamp_space: Softmax: what is clamped to [0, 1], ``"normalised"`` values (the script) or ``"pixel"`` s.
            The last three are the ablation switches of ``evaluations/paper_numbers.py`` (softmax FGSM / IFGSM).
        template_size: The WNLL script's per-batch template (its ``batchsize_train``).
    """

    name: ClassVar[str] = "authors_script"
    library: ClassVar[str] = "authors"
    method: Literal["fgsm", "ifgsm", "cw_l2"] = "fgsm"
    sign: Literal[-1, 1] | None = None
    eps_space: Literal["normalised", "pixel"] = "normalised"
    clamp_space: Literal["normalised", "pixel"] = "normalised"
    template_size: int = 500

    def __post_init__(self) -> None:
        if self.method not in _SOFTMAX:
            raise ValueError(f"method must be one of {sorted(_SOFTMAX)}, got {self.method!r}")
        switched = self.sign is not None or (self.eps_space, self.clamp_space) != ("normalised", "normalised")
        if self.method == "cw_l2" and switched or self.method == "ifgsm" and self.sign is not None:
            raise ValueError(f"{self.method}: these switches do not apply (the script's C&W has no eps or clamp)")

    @property
    def script(self) -> StandardFGSM | StandardIFGSM | StandardCW:
        """The softmax script (with the ablation switches)."""
        if self.method == "cw_l2":
            return StandardCW()
        switches: dict[str, Any] = {"eps_space": self.eps_space, "clamp_space": self.clamp_space}
        return StandardIFGSM(**switches) if self.method == "ifgsm" else StandardFGSM(sign=self.sign or -1, **switches)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        wnll = model if isinstance(model, WNLLNet) else getattr(model, "wnll", None)
        clamped = (lambda z: model(z.clamp(0.0, 1.0))) if self.method == "cw_l2" else model  # see settings
        if wnll is None:
            return self.script(clamped, x, y, eps=eps)
        if self.sign is not None or (self.eps_space, self.clamp_space) != ("normalised", "normalised"):
            raise ValueError("the ablation switches are the softmax script's; this victim has a WNLL head")
        images, labels = _training_set()
        # the template draw: from the global generator, which Attack.__call__ seeded with this batch's seed
        generator = seed_generator(int(torch.randint(2**31 - 1, (1,))))
        template, t_labels = script_template(images, labels, size=self.template_size, generator=generator)
        template, t_labels = template.to(x.device), t_labels.to(x.device)
        scores = script_wnll_view(wnll, t_labels)
        if self.method == "cw_l2":
            scores = (lambda s: lambda z: s(z.clamp(0.0, 1.0)))(scores)
        return _WNLL[self.method]()(scores, x, y, eps=eps, template=template, template_labels=t_labels)

    def max_linf(self, eps: float) -> float | None:
        """The larger of the two scripts' bounds at ``eps`` (the largest over the channels), ``None`` for C&W; with an
        ablation switch set (softmax victims only), the softmax script's own bound."""
        if self.sign is not None or (self.eps_space, self.clamp_space) != ("normalised", "normalised"):
            return max(self.script.max_linf(eps))  # type: ignore[arg-type]
        bounds = [b for b in (self.script.max_linf(eps), _WNLL[self.method]().max_linf(eps)) if b is not None]
        return max(max(b) for b in bounds) if len(bounds) == 2 else None

    def settings(self) -> dict[str, Any]:
        deviations = {"scoring": "the WNLL victim scores the adversarial test images with its own template, not the "
                      "script's per-batch draw", **({"model_input": "the C&W iterate clamped to [0, 1] before the "
                      "model (ours refuse other pixels; the scripts' took them; measured excess about 0.003)"}
                      if self.method == "cw_l2" else {})}  # fmt: skip
        return {**super().settings(), "script": self.script.settings(),
                "wnll_script": _WNLL[self.method]().settings(), "deviations": deviations}  # fmt: skip
