"""ART and Foolbox attacks on plain ``nn.Module`` views, as :class:`~wnll_art.attacks.Attack` subclasses.

I. Goodfellow et al. 2015 (FGSM); A. Kurakin et al. 2017 (BIM / IFGSM); A. Madry et al. 2018 (PGD);
N. Carlini, D. Wagner 2017 (C&W L2); F. Croce, M. Hein 2020 (AutoAttack, APGD-CE / APGD-DLR);
M. Andriushchenko et al. 2020 (Square).

Each class writes only :meth:`~wnll_art.attacks.Attack.run`; the base class's template method validates, seeds the
libraries' global RNGs for the call (restoring them afterwards), projects and checks the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from wnll_art.attacks import Attack

__all__ = ["ArtAPGD", "ArtAutoAttack", "ArtBIM", "ArtCarliniL2", "ArtFGSM", "ArtMomentumIterative", "ArtPGD",
           "ArtSquare", "FoolboxL2CW", "FoolboxLinfPGD"]  # fmt: skip


def _art(model: nn.Module) -> Any:
    from wnll_art.adapters.art_estimator import WNLLClassifier

    # the harness's batches are its recorded setting (the last one of a run may be short): no warning
    return WNLLClassifier(
        model, device_type="gpu" if next(model.parameters()).is_cuda else "cpu", warn_small_batches=False
    )


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


@dataclass(frozen=True)
class ArtFGSM(Attack):
    """ART ``FastGradientMethod`` (L-inf), one step of size eps."""

    name: ClassVar[str] = "fgsm"
    library: ClassVar[str] = "art"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        from art.attacks.evasion import FastGradientMethod

        attack = FastGradientMethod(_art(model), eps=eps, batch_size=len(x))
        return torch.from_numpy(attack.generate(_np(x), y=_np(y)))


@dataclass(frozen=True)
class ArtBIM(Attack):
    """ART ``BasicIterativeMethod`` (IFGSM): ``steps`` signed-gradient steps, projected onto the ball.

    Attributes:
        steps: Iterations (the paper: 10).
        step_fraction: Step size as a fraction of eps (the paper's text: 1.0; standard: 0.25).
        ball: Radius of the projection ball; ``None`` uses eps. The authors' code fixed it at 0.1.
    """

    name: ClassVar[str] = "bim"
    library: ClassVar[str] = "art"
    steps: int = 10
    step_fraction: float = 0.25
    ball: float | None = None

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        from art.attacks.evasion import BasicIterativeMethod

        radius = eps if self.ball is None else self.ball
        attack = BasicIterativeMethod(_art(model), eps=radius, eps_step=eps * self.step_fraction,
                                      max_iter=self.steps, batch_size=len(x), verbose=False)  # fmt: skip
        return torch.from_numpy(attack.generate(_np(x), y=_np(y)))


@dataclass(frozen=True)
class ArtCarliniL2(Attack):
    """ART ``CarliniL2Method`` (kappa = ``confidence``, c = ``initial_const``); the L2 result is then
    projected onto each L-inf eps ball. That is our choice, not the paper's: the paper does not say how its
    Table 2 turns C&W into a number per eps, and the authors' WNLL script scales the noise instead
    (``x + eps * (x_cw - x)``; see the README's deviations).

    ART adds a line search to every step: up to ``max_halving`` + ``max_doubling`` extra predictions, each on
    the subset of the batch whose loss it is still adjusting. ART's defaults (5 and 5) made 50 images take about
    19 minutes where Foolbox's C&W took 1; we default to 1 and 1 (ART's minimum). On a transductive WNLL those
    subset predictions see a smaller graph than the attacked batch: prefer :class:`FoolboxL2CW` there.
    """

    name: ClassVar[str] = "cw_l2"
    library: ClassVar[str] = "art"
    eps_independent: ClassVar[bool] = True
    confidence: float = 0.0
    initial_const: float = 10.0
    steps: int = 10
    binary_search_steps: int = 1
    learning_rate: float = 0.01
    max_halving: int = 1
    max_doubling: int = 1

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        from art.attacks.evasion import CarliniL2Method

        attack = CarliniL2Method(_art(model), confidence=self.confidence, initial_const=self.initial_const,
                                 max_iter=self.steps, binary_search_steps=self.binary_search_steps,
                                 learning_rate=self.learning_rate, max_halving=self.max_halving,
                                 max_doubling=self.max_doubling, batch_size=len(x), verbose=False)  # fmt: skip
        return torch.from_numpy(attack.generate(_np(x), y=_np(y)))


@dataclass(frozen=True)
class ArtAutoAttack(Attack):
    """ART ``AutoAttack`` with APGD-CE and APGD-DLR (L-inf); per image, the first successful one counts."""

    name: ClassVar[str] = "autoattack"
    library: ClassVar[str] = "art"
    steps: int = 20
    restarts: int = 1

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent

        clf = _art(model)
        apgd = [
            AutoProjectedGradientDescent(clf, eps=eps, eps_step=eps / 4, max_iter=self.steps, batch_size=len(x),
                                         loss_type=loss, nb_random_init=self.restarts, verbose=False)
            for loss in ("cross_entropy", "difference_logits_ratio")
        ]  # fmt: skip
        attack = AutoAttack(clf, eps=eps, eps_step=eps / 4, attacks=apgd, batch_size=len(x))
        return torch.from_numpy(attack.generate(_np(x), y=_np(y)))


@dataclass(frozen=True)
class ArtPGD(Attack):
    """ART ``ProjectedGradientDescent`` (Madry et al. 2018, L-inf) with a random start in the eps ball.

    Attributes:
        steps: Iterations.
        step_scale: Step size ``step_scale * eps / steps`` (Madry et al.: about 2.5), so the whole schedule
            can travel ``step_scale`` radii (the old IFGSM of ``steps`` x ``eps / steps`` travelled one).
        restarts: Random starts (ART keeps, per image, an adversarial one when any start succeeds).
    """

    name: ClassVar[str] = "pgd"
    library: ClassVar[str] = "art"
    steps: int = 20
    step_scale: float = 2.5
    restarts: int = 1

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        from art.attacks.evasion import ProjectedGradientDescent

        attack = ProjectedGradientDescent(_art(model), norm=np.inf, eps=eps, eps_step=self.step_scale * eps / self.steps,
                                          max_iter=self.steps, num_random_init=self.restarts, batch_size=len(x),
                                          verbose=False)  # fmt: skip
        return torch.from_numpy(attack.generate(_np(x), y=_np(y)))


@dataclass(frozen=True)
class ArtAPGD(Attack):
    """ART ``AutoProjectedGradientDescent`` (Croce & Hein 2020, L-inf): step-size schedule of its own.

    Attributes:
        loss: ``"cross_entropy"`` (APGD-CE) or ``"difference_logits_ratio"`` (APGD-DLR, scale invariant).
        steps: Iterations per restart.
        restarts: Random starts.
    """

    name: ClassVar[str] = "apgd"
    library: ClassVar[str] = "art"
    loss: str = "cross_entropy"
    steps: int = 20
    restarts: int = 1

    def __post_init__(self) -> None:
        if self.loss not in ("cross_entropy", "difference_logits_ratio"):
            raise ValueError(f"loss must be 'cross_entropy' or 'difference_logits_ratio', got {self.loss!r}")

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        from art.attacks.evasion import AutoProjectedGradientDescent

        attack = AutoProjectedGradientDescent(_art(model), norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=self.steps,
                                              nb_random_init=self.restarts, batch_size=len(x), loss_type=self.loss,
                                              verbose=False)  # fmt: skip
        return torch.from_numpy(attack.generate(_np(x), y=_np(y)))


@dataclass(frozen=True)
class ArtMomentumIterative(Attack):
    """ART ``MomentumIterativeMethod`` (Y. Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018;
    L-inf MI-FGSM): signed steps along an accumulated, L1-normalised gradient.

    Attributes:
        steps: Iterations.
        decay: Momentum decay (Dong et al.: 1.0).
        step_scale: Step size ``step_scale * eps / steps`` (as :class:`ArtPGD`).
    """

    name: ClassVar[str] = "mifgsm"
    library: ClassVar[str] = "art"
    steps: int = 20
    decay: float = 1.0
    step_scale: float = 2.5

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        from art.attacks.evasion import MomentumIterativeMethod

        attack = MomentumIterativeMethod(_art(model), norm=np.inf, eps=eps, eps_step=self.step_scale * eps / self.steps,
                                         decay=self.decay, max_iter=self.steps, batch_size=len(x), verbose=False)  # fmt: skip
        return torch.from_numpy(attack.generate(_np(x), y=_np(y)))


@dataclass(frozen=True)
class ArtSquare(Attack):
    """ART ``SquareAttack`` (Andriushchenko et al. 2020, L-inf): gradient-free, a masking check.

    Attributes:
        queries: Iterations (one model query per image each).
        restarts: Restarts (ART's initial square fraction ``p_init = 0.8`` is kept).
    """

    name: ClassVar[str] = "square"
    library: ClassVar[str] = "art"
    queries: int = 100
    restarts: int = 1

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        from art.attacks.evasion import SquareAttack

        attack = SquareAttack(_art(model), norm=np.inf, eps=eps, max_iter=self.queries, nb_restarts=self.restarts,
                              batch_size=len(x), verbose=False)  # fmt: skip
        return torch.from_numpy(attack.generate(_np(x), y=_np(y)).astype(np.float32))


def _foolbox(model: nn.Module) -> Any:
    from wnll_art.adapters.foolbox_model import to_foolbox

    # EOT, when wanted, is inside the attacker's view; batches are the harness's recorded setting: no warning
    return to_foolbox(model, eot_samples=1, warn_small_batches=False)


@dataclass(frozen=True)
class FoolboxLinfPGD(Attack):
    """Foolbox ``LinfPGD`` with a random start."""

    name: ClassVar[str] = "linf_pgd"
    library: ClassVar[str] = "foolbox"
    steps: int = 20
    rel_stepsize: float = 0.1

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        import foolbox as fb

        attack = fb.attacks.LinfPGD(steps=self.steps, rel_stepsize=self.rel_stepsize, random_start=True)
        _, clipped, _ = attack(_foolbox(model), x, y, epsilons=eps)
        return clipped


@dataclass(frozen=True)
class FoolboxL2CW(Attack):
    """Foolbox ``L2CarliniWagnerAttack``; the result is projected onto each L-inf eps ball (images the attack
    did not fool stay clean). The projection is our choice, not the paper's (see :class:`ArtCarliniL2`)."""

    name: ClassVar[str] = "fb_cw_l2"
    library: ClassVar[str] = "foolbox"
    eps_independent: ClassVar[bool] = True
    confidence: float = 0.0
    initial_const: float = 10.0
    steps: int = 10
    binary_search_steps: int = 1
    stepsize: float = 0.01

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        import foolbox as fb

        attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=self.binary_search_steps, steps=self.steps,
                                                  stepsize=self.stepsize, confidence=self.confidence,
                                                  initial_const=self.initial_const, abort_early=False)  # fmt: skip
        raw, _, _ = attack(_foolbox(model), x, y, epsilons=None)
        # Foolbox starts its best adversarials at zeros and keeps them for an image it never fooled (and then
        # reports success whenever the black image is misclassified); the eps projection would turn that into
        # "darken by eps". Such images keep the clean input, as ART's C&W returns them.
        never_found = (raw.flatten(1) == 0).all(1).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(never_found, x.to(raw.device), raw)
