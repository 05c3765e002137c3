"""Models as evaluated ("victims") and the attacker's views of them.

A victim is a classifier (softmax ResNet-56 or WNLLNet) plus an optional input purifier (TVM). Its
*prediction module* is what is deployed: purifier then classifier, one random TVM draw per image. An
*attack view* is the module an attacker differentiates: exact or surrogate WNLL gradient, TVM seen
through BPDA (and EOT over its masks) or not seen at all (the paper's oblivious setting).
All views share parameters and buffers with the victim; nothing is copied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from wnll_art.wnll.model import WNLLNet

if TYPE_CHECKING:
    from wnll_art.tvm.module import TVMPurifier

__all__ = ["Victim", "build_victims"]

TVMView = Literal["bpda", "oblivious", "unrolled"]


@dataclass
class Victim:
    """One (model, defence) pair.

    Attributes:
        model: ``"softmax"`` or ``"wnll"``.
        defence: ``"none"`` or ``"tvm"``.
        classifier: Images in [0, 1] -> ``(N, C)`` scores, without the purifier.
        purifier: The TVM purifier, or ``None``.
    """

    model: str
    defence: str
    classifier: nn.Module
    purifier: TVMPurifier | None = None
    _views: dict[tuple[object, ...], nn.Module] = field(default_factory=dict, repr=False)

    @property
    def predict_module(self) -> nn.Module:
        """The deployed model: purifier (BPDA gradient, one draw) then classifier."""
        return self.attack_view()

    def reseed(self, seed: int) -> None:
        """Reseeds the purifier's generator (the harness does it per batch, for reproducibility)."""
        if self.purifier is not None:
            self.purifier.reseed(seed)

    def attack_view(
        self,
        *,
        gradient: Literal["exact", "surrogate"] = "exact",
        tvm: TVMView = "bpda",
        eot_samples: int = 1,
    ) -> nn.Module:
        """The module an attacker differentiates (cached per setting; shares all parameters).

        Args:
            gradient: WNLL gradient (ignored for softmax models).
            tvm: ``"bpda"`` (straight-through), ``"unrolled"`` (through the solver iterations) or
                ``"oblivious"`` (the attacker does not see TVM). Ignored without a purifier.
            eot_samples: Expectation over that many TVM draws (scores averaged, as Foolbox's EOT).
        """
        key = (gradient, tvm, eot_samples)
        if key not in self._views:
            clf = self.classifier
            if isinstance(clf, WNLLNet) and clf.gradient != gradient:
                clf = copy.copy(clf)  # shallow: shares modules, parameters, buffers and settings
                clf.gradient = gradient
            if self.purifier is None or tvm == "oblivious":
                view: nn.Module = clf
            else:
                purifier = (
                    self.purifier if tvm == self.purifier.gradient else self.purifier.with_gradient(tvm)
                )
                view = nn.Sequential(purifier, clf)
                if eot_samples > 1:
                    from wnll_art.tvm.module import EOTAverage

                    view = EOTAverage(view, samples=eot_samples)
            # containers are born in train mode: a view must never put the shared backbone's BatchNorm in train mode
            self._views[key] = view.eval()
        return self._views[key]

    def settings(self) -> dict[str, Any]:
        clf = self.classifier.settings() if isinstance(self.classifier, WNLLNet) else {}
        tvm = self.purifier.settings() if self.purifier is not None else None
        return {"model": self.model, "defence": self.defence, "wnll": clf, "tvm": tvm}


def build_victims(
    softmax: nn.Module,
    wnll: WNLLNet | None,
    *,
    defences: tuple[str, ...],
    tvm_options: dict[str, Any],
) -> list[Victim]:
    """All (model, defence) victims: softmax / WNLL crossed with the requested defences.

    Args:
        softmax: The plain classifier (eval mode).
        wnll: The WNLL model built on the same backbone, or ``None`` to skip it.
        defences: Subset of ``("none", "tvm")``.
        tvm_options: Keyword arguments of :class:`~wnll_art.tvm.module.TVMPurifier`.
    """
    unknown = set(defences) - {"none", "tvm"}
    if unknown:
        raise ValueError(f"unknown defences {sorted(unknown)}; choose from ['none', 'tvm']")
    models: list[tuple[str, nn.Module]] = [("softmax", softmax)]
    if wnll is not None:
        models.append(("wnll", wnll))
    victims = []
    if "tvm" in defences:
        from wnll_art.tvm.module import TVMPurifier
    for name, clf in models:
        for defence in defences:
            purifier = TVMPurifier(**tvm_options) if defence == "tvm" else None
            victims.append(Victim(name, defence, clf.eval(), purifier))
    return victims


@torch.no_grad()
def predict_labels(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Arg-max labels ``(N,)`` of ``module`` on ``x`` (one call: one WNLL batch)."""
    return module(x).argmax(1)
