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

The ablation of issue 19 (``evaluations/paper_numbers.py``): switches that turn a script back into our ``paper``
attack one step at a time, each defaulting to the script. Softmax victims: ``sign``, ``eps_space``,
``clamp_space``. WNLL victims: ``wnll_loss``, ``wnll_graph``, ``wnll_template``, ``wnll_ball`` (IFGSM),
``cw_output`` (C&W); ``evaluations/authors_scripts.md`` section 8 says what each one isolates and what it cannot.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from wnll_art._random import seed_generator
from wnll_art.attacks.authors import Scores, StandardCW, StandardFGSM, StandardIFGSM
from wnll_art.attacks.authors_wnll import (
    WNLLCW,
    WNLLFGSM,
    WNLLIFGSM,
    script_template,
    script_wnll_view,
    victim_wnll_view,
)
from wnll_art.attacks.base import Attack, project_linf
from wnll_art.wnll.model import WNLLNet

__all__ = ["AuthorsScript"]

_SOFTMAX = {"fgsm": StandardFGSM, "ifgsm": StandardIFGSM, "cw_l2": StandardCW}
_WNLL = {"fgsm": WNLLFGSM, "ifgsm": WNLLIFGSM, "cw_l2": WNLLCW}


@functools.lru_cache(maxsize=1)
def _training_set() -> tuple[torch.Tensor, torch.Tensor]:
    from wnll_art.data import load_cifar10  # the WNLL script's template pool ($WNLL_ART_DATA)

    return load_cifar10(None, split="train")


_WNLL_DEFAULTS = {"wnll_loss": "script", "wnll_graph": "script", "wnll_template": "script", "wnll_ball": "script",
                  "cw_output": "scaled"}  # fmt: skip
_CHOICES = {"eps_space": ("normalised", "pixel"), "clamp_space": ("normalised", "pixel"), "wnll_loss": ("script", "paper"),
            "wnll_graph": ("script", "victim"), "wnll_template": ("script", "victim"), "wnll_ball": ("script", "eps"),
            "cw_output": ("scaled", "raw", "projected")}  # fmt: skip
_GRAPH = {"wnll_loss", "wnll_graph", "wnll_template"}
_WNLL_SWITCHES = {"fgsm": _GRAPH, "ifgsm": _GRAPH | {"wnll_ball"}, "cw_l2": {"cw_output"}}


@dataclass(frozen=True)
class AuthorsScript(Attack):
    """``Fool_StandardDNN.py`` (softmax victim) or ``Fool_WNLLDNN.py`` (a victim with a WNLL head) ``-method
    fgsm|ifgsm|cwl2``, exactly as scripted (see :mod:`wnll_art.attacks.authors` and
    :mod:`wnll_art.attacks.authors_wnll`), unless an ablation switch is set.

    Attributes:
        method: ``"fgsm"``, ``"ifgsm"`` or ``"cw_l2"``.
        sign: Softmax FGSM's direction (``None``: the script's descent, -1; +1: the paper's ascent).
        eps_space: Softmax: where eps (and IFGSM's ball) is measured, ``"normalised"`` (the script) or ``"pixel"``.
        clamp_space: Softmax: what is clamped to [0, 1], ``"normalised"`` values (the script) or ``"pixel"`` s.
            The last three are the ablation switches of ``evaluations/paper_numbers.py`` (softmax FGSM / IFGSM).
        template_size: The WNLL script's per-batch template (its ``batchsize_train``).
        wnll_loss: WNLL FGSM / IFGSM: cross-entropy of the raw WNLL values with the linear head's gradient
            (``"script"``, lines 243, 313-314) or of ``log(u + 1e-6)`` with the log-softmax straight-through
            gradient (``"paper"``: the ``paper`` protocol's surrogate view).
        wnll_graph: WNLL FGSM / IFGSM: the script's graph (``"script"``: template rows in the attacked batch, moved
            with it by IFGSM; quartic weights, 15 / 8 neighbours, gamma ``(M + N) // M``) or the victim's own WNLL
            (``"victim"``: its template outside the batch, never moved; its graph and coupling). Needs
            ``wnll_template="victim"``.
        wnll_template: WNLL FGSM / IFGSM: a fresh random augmented training draw per batch (``"script"``, lines
            353-354, 376-380, 500-502) or the victim's stored template (``"victim"``).
        wnll_ball: WNLL IFGSM: the script's fixed ball (``"script"``: 0.1, line 546) or eps (``"eps"``).
        cw_output: WNLL C&W: ``x + eps (x_cw - x)`` (``"scaled"``, lines 757-758), ``x_cw`` itself (``"raw"``, no
            bound) or ``x_cw`` projected onto the eps ball (``"projected"``: the ``paper`` protocol's rule).
    """

    name: ClassVar[str] = "authors_script"
    library: ClassVar[str] = "authors"
    method: Literal["fgsm", "ifgsm", "cw_l2"] = "fgsm"
    sign: Literal[-1, 1] | None = None
    eps_space: Literal["normalised", "pixel"] = "normalised"
    clamp_space: Literal["normalised", "pixel"] = "normalised"
    template_size: int = 500
    wnll_loss: Literal["script", "paper"] = "script"
    wnll_graph: Literal["script", "victim"] = "script"
    wnll_template: Literal["script", "victim"] = "script"
    wnll_ball: Literal["script", "eps"] = "script"
    cw_output: Literal["scaled", "raw", "projected"] = "scaled"

    def __post_init__(self) -> None:
        if self.method not in _SOFTMAX:
            raise ValueError(f"method must be one of {sorted(_SOFTMAX)}, got {self.method!r}")
        for field, allowed in _CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")
        switched = self._softmax_switched
        if self.method == "cw_l2" and switched or self.method == "ifgsm" and self.sign is not None:
            raise ValueError(f"{self.method}: these switches do not apply (the script's C&W has no eps or clamp)")
        wnll = {k for k, v in _WNLL_DEFAULTS.items() if getattr(self, k) != v}
        wrong = sorted(wnll - _WNLL_SWITCHES[self.method])
        if wrong:  # C&W: its target rule needs the script's template in the batch (authors_scripts.md, 8)
            raise ValueError(f"{self.method}: the switches {wrong} do not apply")
        if switched and wnll:
            raise ValueError("the softmax script's switches and the WNLL script's are never set together")
        if self.wnll_graph == "victim" and self.wnll_template != "victim":
            raise ValueError("wnll_graph='victim' needs wnll_template='victim' (the victim's own template)")

    @property
    def _softmax_switched(self) -> bool:
        return self.sign is not None or (self.eps_space, self.clamp_space) != ("normalised", "normalised")

    @property
    def _wnll_switched(self) -> bool:
        return any(getattr(self, k) != v for k, v in _WNLL_DEFAULTS.items())

    @property
    def script(self) -> StandardFGSM | StandardIFGSM | StandardCW:
        """The softmax script (with the ablation switches)."""
        if self.method == "cw_l2":
            return StandardCW()
        switches: dict[str, Any] = {"eps_space": self.eps_space, "clamp_space": self.clamp_space}
        return StandardIFGSM(**switches) if self.method == "ifgsm" else StandardFGSM(sign=self.sign or -1, **switches)

    @property
    def wnll_script(self) -> WNLLFGSM | WNLLIFGSM | WNLLCW:
        """The WNLL script (its IFGSM ball switched; ``None``: eps)."""
        eps_ball = self.method == "ifgsm" and self.wnll_ball == "eps"
        return WNLLIFGSM(ball=None) if eps_ball else _WNLL[self.method]()

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        wnll = model if isinstance(model, WNLLNet) else getattr(model, "wnll", None)
        clamped = (lambda z: model(z.clamp(0.0, 1.0))) if self.method == "cw_l2" else model  # see settings
        if wnll is None:
            if self._wnll_switched:
                raise ValueError("the WNLL ablation switches are the WNLL script's; this victim has no WNLL")
            return self.script(clamped, x, y, eps=eps)
        if self._softmax_switched:
            raise ValueError("the ablation switches are the softmax script's; this victim has a WNLL head")
        scores, template, t_labels = self.attacked(wnll, x.device)
        if self.method == "cw_l2":
            scores = (lambda s: lambda z: s(z.clamp(0.0, 1.0)))(scores)
        return self.attack_wnll(scores, x, y, eps=eps, template=template, template_labels=t_labels)

    def attacked(self, wnll: WNLLNet, device: torch.device) -> tuple[Scores, torch.Tensor, torch.Tensor]:
        """What the WNLL script differentiates (``wnll_graph``, ``wnll_loss``) and the template rows of its batch
        (``wnll_template``; none with the victim's graph, which solves against the victim's stored template)."""
        template, t_labels = self._template(wnll, device)
        if self.wnll_graph == "victim":
            return victim_wnll_view(wnll, loss=self.wnll_loss), template[:0], t_labels[:0]
        return script_wnll_view(wnll, t_labels, loss=self.wnll_loss), template, t_labels

    def attack_wnll(self, scores: Scores, x: torch.Tensor, y: torch.Tensor, *, eps: float, template: torch.Tensor,
                    template_labels: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """The WNLL script (``wnll_ball``) on ``scores``; C&W's output per ``cw_output``."""
        if self.method != "cw_l2" or self.cw_output == "scaled":
            return self.wnll_script(scores, x, y, eps=eps, template=template, template_labels=template_labels)
        # noise scale 1: x + 1 * (x_cw - x), x_cw itself up to rounding
        x_cw = self.wnll_script(scores, x, y, eps=1.0, template=template, template_labels=template_labels)
        return project_linf(x_cw, x, eps) if self.cw_output == "projected" else x_cw

    def _template(self, wnll: WNLLNet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The template: the victim's stored one, or the script's draw (lines 353-354, 376-380, 500-502)."""
        if self.wnll_template == "victim":
            return wnll.template_images.to(device), wnll.template_labels.to(device)
        images, labels = _training_set()
        # the template draw: from the global generator, which Attack.__call__ seeded with this batch's seed
        generator = seed_generator(int(torch.randint(2**31 - 1, (1,))))
        template, t_labels = script_template(images, labels, size=self.template_size, generator=generator)
        return template.to(device), t_labels.to(device)

    def max_linf(self, eps: float) -> float | None:
        """The larger of the two scripts' bounds at ``eps`` (the largest over the channels), ``None`` for C&W; with an
        ablation switch set, the switched script's own bound (WNLL C&W: eps when projected, else ``None``)."""
        if self._softmax_switched:
            return max(self.script.max_linf(eps))  # type: ignore[arg-type]
        if self._wnll_switched:
            if self.method == "cw_l2":
                return eps if self.cw_output == "projected" else None
            return max(self.wnll_script.max_linf(eps))  # type: ignore[arg-type]
        bounds = [b for b in (self.script.max_linf(eps), _WNLL[self.method]().max_linf(eps)) if b is not None]
        return max(max(b) for b in bounds) if len(bounds) == 2 else None

    def settings(self) -> dict[str, Any]:
        deviations = {"scoring": "the WNLL victim scores the adversarial test images with its own template, not the "
                      "script's per-batch draw", **({"model_input": "the C&W iterate clamped to [0, 1] before the "
                      "model (ours refuse other pixels; the scripts' took them; measured excess about 0.003)"}
                      if self.method == "cw_l2" else {})}  # fmt: skip
        return {**super().settings(), "script": self.script.settings(),
                "wnll_script": self.wnll_script.settings(), "deviations": deviations}  # fmt: skip
