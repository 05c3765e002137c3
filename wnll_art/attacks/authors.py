"""The authors' softmax attack script, replicated step by step and expressed in our pixel space.

B. Wang et al., arXiv:1809.08516; code: github.com/BaoWangMath/DNN-DataDependentActivation, read whole:
``Fool_StandardDNN.py`` (@ede8d50, softmax ResNet) is replicated here; ``Fool_WNLLDNN.py`` (@67fe264, WNLL
ResNet) and ``Cifar10-Robust/Attack_ResNet_WNLL_PGD.py`` (@c56fd67) are in :mod:`wnll_art.attacks.authors_wnll`;
the steps both scripts share (argument check, gradient, Adam step, C&W options, ``settings()``) are in
:mod:`wnll_art.attacks._authors_steps`. Every step, the script lines it mirrors and their translation are in
``evaluations/authors_scripts.md``; the scripts have no TVM step (TVM never enters the attack).

Pixel space. Our models take images ``x`` in [0, 1] and normalise inside. ``Fool_StandardDNN.py`` attacks the
normalised ``z = (x - mean) / std`` with its own ``mean = (0.507, 0.487, 0.441)``, ``std = (0.267, 0.256,
0.276)`` (:data:`SCRIPT_MEAN`, :data:`SCRIPT_STD`): its eps, step and ball are ``eps * std[c]`` pixels in
channel ``c``, and its clamp of ``z`` to [0, 1] is a clamp of pixels to ``[mean[c], mean[c] + std[c]]``, which
moves every pixel outside that band (a black pixel by ``mean[c]``): the softmax attacks have no small L-inf
radius at all (:meth:`StandardFGSM.max_linf`). The WNLL scripts feed ``x`` itself: eps is in pixels.

Models. A softmax attack takes ``model``: ``(N, 3, H, W)`` in [0, 1] -> ``(N, C)`` logits (a WNLL attack takes
the whole-batch scores: :mod:`wnll_art.attacks.authors_wnll`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from wnll_art._checks import check_positive_int
from wnll_art.attacks._authors_choices import SOFTMAX
from wnll_art.attacks._authors_steps import (
    CWOptions,
    Scores,
    Triple,
    adam03_step,
    attack_settings,
    check_attack_inputs,
    grad_of,
)

__all__ = ["SCRIPT_MEAN", "SCRIPT_STD", "Scores", "StandardCW", "StandardFGSM", "StandardIFGSM"]

SCRIPT_MEAN: Triple = (0.507, 0.487, 0.441)  # Fool_StandardDNN.py line 404
SCRIPT_STD: Triple = (0.267, 0.256, 0.276)


def _channels(values: Triple, like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def _softmax_radius(eps: float, mean: Triple, std: Triple) -> Triple:
    # |clamp(x + d, m, m + s) - x| over x in [0, 1], |d| <= eps * s: attained at x = 0 (-> m) or x = 1 (-> m + s)
    r = [min(1.0, max(eps * s, m, 1.0 - m - s)) for m, s in zip(mean, std, strict=True)]
    return r[0], r[1], r[2]


@dataclass(frozen=True, kw_only=True)
class _Softmax:
    mean: Triple = SCRIPT_MEAN
    std: Triple = SCRIPT_STD

    script: ClassVar[str] = "Fool_StandardDNN.py@ede8d50"

    def _ms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _channels(self.mean, x), _channels(self.std, x)

    def settings(self) -> dict[str, Any]:
        """Every replicated choice (the dataclass fields and the fixed ones), for records."""
        return attack_settings(self, SOFTMAX)


@dataclass(frozen=True, kw_only=True)
class _Switches(_Softmax):
    """The ablation switches of issue 19 (the script's choices by default): eps (with IFGSM's ball and step) in
    the normalised space or in pixels (``eps_space``); the clamp to [0, 1] of normalised values or of pixels
    (``clamp_space``).
    """

    eps_space: Literal["normalised", "pixel"] = "normalised"
    clamp_space: Literal["normalised", "pixel"] = "normalised"

    def _units(self, eps: float, s: Tensor) -> Tensor | float:
        """``eps`` in normalised units: as given (the script) or ``eps / std`` (``eps_space="pixel"``)."""
        return eps if self.eps_space == "normalised" else eps / s

    def _box(self, z: Tensor, m: Tensor, s: Tensor) -> Tensor:
        """The clamp: of ``z`` to [0, 1] (the script) or of the pixels ``m + s z`` to [0, 1] (``clamp_space="pixel"``)."""
        return (
            z.clamp(0.0, 1.0)
            if self.clamp_space == "normalised"
            else torch.maximum(torch.minimum(z, (1 - m) / s), -m / s)
        )

    def _radius(self, eps: float) -> Triple:
        if self.clamp_space == "pixel":  # no squeeze into [mean, mean + std]: the eps ball (in pixels, or eps * std)
            r = [eps if self.eps_space == "pixel" else eps * s for s in self.std]
            return r[0], r[1], r[2]
        return _softmax_radius(eps, self.mean, self.std)


@dataclass(frozen=True, kw_only=True)
class StandardFGSM(_Switches):
    """``Fool_StandardDNN.py -method fgsm`` (lines 440-465), one image per batch (line 416).

    Pixel space: ``x_adv = clamp(x + sign * eps * std[c] * sign(grad_x CE), mean[c], mean[c] + std[c])``.
    The script's step is ``x - epsilon*x.grad`` (line 463): it descends the cross-entropy of the true label
    (``sign = -1``); ``sign = +1`` is the ascent FGSM the paper describes.

    Attributes:
        sign: Direction of the step (-1: the script).
        mean: Normalisation mean of the script's input pipeline (line 404).
        std: Its standard deviation.
    """

    sign: Literal[-1, 1] = -1

    def __call__(self, model: Scores, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
        """Adversarial images ``(N, 3, H, W)`` in ``[mean, mean + std] ⊂ [0, 1]``, dtype/device of ``x``.

        Args:
            model: Images in [0, 1] -> ``(N, C)`` logits (eval mode, as the script's checkpoint was saved).
            x: ``(N, 3, H, W)`` float in [0, 1].
            y: ``(N,)`` int64 true labels.
            eps: The script's ``-epsilon`` (the paper's table label), in normalised units.
        """
        check_attack_inputs(x, y, eps)
        m, s = self._ms(x)
        xr = x.detach().clone().requires_grad_(True)
        g = grad_of(F.cross_entropy(model(xr), y, reduction="sum"), xr)  # sign(grad_z) = sign(std * grad_x)
        z = (x.detach() - m) / s
        return m + s * self._box(z + self.sign * self._units(eps, s) * g.sign(), m, s)

    def max_linf(self, eps: float) -> Triple:
        """Largest ``|x_adv - x|`` per channel over all ``x`` in [0, 1]: ``max(eps*std, mean, 1-mean-std)`` for
        the script (its normalised clamp); the eps ball with a pixel clamp."""
        return self._radius(eps)


@dataclass(frozen=True, kw_only=True)
class StandardIFGSM(_Switches):
    """``Fool_StandardDNN.py -method ifgsm`` (lines 494-523): 10 steps of size 1.0 (normalised), each clipped
    to the eps ball around the clean ``z`` and clamped to [0, 1], in that order.

    Pixel space, per step: ``x_adv = clamp(clip(x_adv + step * std[c] * sign(grad CE), x +- eps * std[c]),
    mean[c], mean[c] + std[c])``. The script negates the loss and subtracts (lines 509, 517): an ascent. A
    step of 1.0 (>= 2 eps) lands every non-zero-gradient pixel on the ball's face ``z +- eps`` at every step.

    Attributes:
        steps: Iterations (line 494).
        step_size: Step in normalised units (line 494: ``alpha = 1.0``).
        mean: Normalisation mean (line 404).
        std: Its standard deviation.
    """

    steps: int = 10
    step_size: float = 1.0

    def __call__(self, model: Scores, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
        """Adversarial images in ``[mean, mean + std]``; arguments as :meth:`StandardFGSM.__call__`."""
        check_attack_inputs(x, y, eps)
        check_positive_int(self.steps, "steps")
        m, s = self._ms(x)
        z0 = (x.detach() - m) / s
        z, ball, step = z0.clone(), self._units(eps, s), self._units(self.step_size, s)
        for i in range(self.steps):
            # the pixels of z (step 0: the clean image itself); sign(grad_z) = sign(std * grad_x)
            pixels = (x.detach() if i == 0 else m + s * z).clone().requires_grad_(True)
            g = grad_of(F.cross_entropy(model(pixels), y, reduction="sum"), pixels)
            z = z + step * g.sign()
            z = torch.where(z > z0 + ball, z0 + ball, z)
            z = self._box(torch.where(z < z0 - ball, z0 - ball, z), m, s)
        return m + s * z

    def max_linf(self, eps: float) -> Triple:
        """Per-channel bound, as :meth:`StandardFGSM.max_linf`."""
        return self._radius(eps)


@dataclass(frozen=True, kw_only=True)
class StandardCW(CWOptions, _Softmax):
    """``Fool_StandardDNN.py -method cwl2`` (lines 552-599): 10 Adam steps (lr 0.01, normalised units) on
    ``||w - z||^2 + 10 * max(Z[pred] - Z[t] + 0, 0)``, ``pred`` the clean prediction, ``t`` the class with the
    largest logit once ``Z[pred]`` is set to -1 (lines 568-574: when every other logit is below -1, ``t = pred``
    and the image is left as it is). The distance term is identically zero in the script: ``w`` and the
    reference ``input_var`` wrap the same tensor (lines 558, 560), which the Adam step moves in place
    (``l2_penalty=True`` adds it as evidently meant, a deviation). The iterate is never clamped (a model that
    refuses pixels outside [0, 1] may raise), and the kept ``best_w`` is ``w`` AFTER the step whose loss,
    computed before it, was the lowest so far (lines 592-597). eps is not used (only in the file name, line 618).

    Attributes:
        steps: Adam steps (line 553).
        learning_rate: Adam's lr, normalised units (line 552).
        c: Weight of the hinge (``lambdaf``, line 554).
        kappa: Confidence (line 555).
        l2_penalty: Add ``||w - z||^2`` (False: the script, where it is zero).
        clip: Clamp the returned pixels to [0, 1] (False: the script's images, which may leave it).
        mean: Normalisation mean (line 404).
        std: Its standard deviation.
    """

    def __call__(self, model: Scores, x: Tensor, y: Tensor, *, eps: float | None = None) -> Tensor:
        """Adversarial images (in [0, 1] when ``clip``); ``y`` is checked but unused (the script attacks the
        predicted class), ``eps`` ignored."""
        check_attack_inputs(x, y, eps)
        check_positive_int(self.steps, "steps")
        m, s = self._ms(x)
        z0 = (x.detach() - m) / s
        with torch.no_grad():
            logits = model(x.detach())
        pred = logits.argmax(1, keepdim=True)
        target = logits.scatter(1, pred, -1.0).argmax(1, keepdim=True)
        w, mom, vel = z0.clone(), torch.zeros_like(z0), torch.zeros_like(z0)
        best = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
        best_w = z0.clone()
        for t in range(1, self.steps + 1):
            wr = w.clone().requires_grad_(True)
            out = model(m + s * wr)
            loss = (
                self.c * (out.gather(1, pred) - out.gather(1, target) + self.kappa).clamp(min=0.0).flatten()
            )
            if self.l2_penalty:
                loss = loss + (wr - z0).pow(2).flatten(1).sum(1)
            g = grad_of(loss.sum(), wr)  # images are independent: one Adam per image, as with batch 1
            adam03_step(w, g, mom, vel, t, self.learning_rate)
            better = loss.detach() < best
            best = torch.where(better, loss.detach(), best)
            best_w[better] = w[better]
        x_adv = m + s * best_w
        return x_adv.clamp(0.0, 1.0) if self.clip else x_adv

    def max_linf(self, eps: float | None = None) -> None:
        """No bound: no ball, no clamp; the displacement is whatever the Adam steps make (measure it)."""
        return None
