"""Models as evaluated ("victims") and the attacker's views of them.

A victim is a :class:`wnll_art.defence.Defence` (classifier, softmax ResNet-56 or WNLLNet, plus an optional
TVM purifier) named by its table cell. Its *prediction module* is the defence itself: one random TVM draw
per image. An *attack view* (:meth:`Defence.view`) is what an attacker differentiates: exact or surrogate
WNLL gradient, TVM seen through BPDA (with EOT over its masks) or not seen at all (the paper's oblivious
setting). All views share parameters and buffers with the victim; nothing is copied. Draws are steered per
block by :meth:`Defence.drawing` on the module that is called (the view for an attack, the victim's module for
predictions); settings never change after the victim is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from wnll_art.defence import Defence
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet

__all__ = ["Victim", "build_victims"]

TVMView = Literal["bpda", "oblivious", "unrolled"]


@dataclass
class Victim:
    """One (model, defence) pair: a :class:`~wnll_art.defence.Defence` and the names of its cell.

    Attributes:
        model: ``"softmax"`` or ``"wnll"``.
        defence: ``"none"`` or ``"tvm"``.
        module: The defence module (purifier, if any, then classifier); the deployed model.
    """

    model: str
    defence: str
    module: Defence
    _views: dict[tuple[object, ...], Defence] = field(default_factory=dict, repr=False)

    @property
    def classifier(self) -> nn.Module:
        """Images in [0, 1] -> ``(N, C)`` scores, without the purifier."""
        return self.module.classifier

    @property
    def purifier(self) -> nn.Module | None:
        """The purifier (TVM or an ART preprocessor), or ``None``."""
        return self.module.purifier

    @property
    def predict_module(self) -> nn.Module:
        """The deployed model: purifier (one draw per call) then classifier."""
        return self.module

    def attack_view(
        self,
        *,
        gradient: Literal["exact", "surrogate"] = "exact",
        tvm: TVMView = "bpda",
        eot_samples: int = 1,
        score: Literal["log", "log64", "smooth"] = "log",
    ) -> Defence:
        """The module an attacker differentiates (cached per setting; shares all parameters).

        Args:
            gradient: WNLL gradient (ignored for softmax models).
            tvm: ``"bpda"``, ``"unrolled"`` or ``"oblivious"`` (TVM unseen). Ignored without a purifier.
            eot_samples: TVM draws averaged per gradient (:mod:`wnll_art.eot`).
            score: WNLL score (``"log"`` deployed, ``"log64"`` non-saturating; ignored for softmax models).
        """
        key = (gradient, tvm, eot_samples, score)
        if key not in self._views:
            self._views[key] = self.module.view(gradient=gradient, tvm=tvm, eot_samples=eot_samples, score=score)
        return self._views[key]

    def settings(self) -> dict[str, Any]:
        """The victim's names and its defence's settings (fixed once built: no draw changes them)."""
        return {"model": self.model, "defence": self.defence, **self.module.settings()}


def build_victims(
    softmax: nn.Module,
    wnll: WNLLNet | None,
    *,
    defences: tuple[str, ...],
    tvm: TVMSettings,
    seed: int,
) -> list[Victim]:
    """All (model, defence) victims: softmax / WNLL crossed with the requested defences.

    Args:
        softmax: The plain classifier (eval mode).
        wnll: The WNLL model built on the same backbone, or ``None`` to skip it.
        defences: Subset of ``("none", "tvm")``.
        tvm: The TVM settings of the ``"tvm"`` victims.
        seed: Seed of their mask generators.
    """
    unknown = set(defences) - {"none", "tvm"}
    if unknown:
        raise ValueError(f"unknown defences {sorted(unknown)}; choose from ['none', 'tvm']")
    models: list[tuple[str, nn.Module]] = [("softmax", softmax)]
    if wnll is not None:
        models.append(("wnll", wnll))
    victims = []
    for name, clf in models:
        for defence in defences:
            module = Defence(clf.eval(), tvm=tvm if defence == "tvm" else None, seed=seed)
            module.training = False  # never recurse: the classifier is shared and already in eval mode
            victims.append(Victim(name, defence, module))
    return victims


UNDECIDED = -1  # the label of an image whose scores are all equal: never a class, so always an error


@torch.no_grad()
def predict_labels(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Arg-max labels ``(N,)`` of ``module`` on ``x`` (one call: one WNLL batch).

    An image whose scores are all equal gets :data:`UNDECIDED` (-1), not the arg-max's class 0: the WNLL gives
    the uniform ``1/C`` to images with no graph path to the template (e.g. an all-zero batch far from every
    template image), and counting that as "airplane" would score it correct for every airplane.
    """
    scores = module(x)
    labels = scores.argmax(1)
    tied = scores.amax(1) == scores.amin(1)
    return torch.where(tied, torch.full_like(labels, UNDECIDED), labels)
