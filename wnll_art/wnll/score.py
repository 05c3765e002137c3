"""The one WNLL scoring function: label functions -> log-scores, exact or straight-through.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018), Sec. 3: the
WNLL output is trained (and was attacked by the authors) through a straight-through estimator whose
backward pass is the log-softmax of the parallel linear head.

Both :class:`wnll_art.wnll.model.WNLLNet` and the training steps score with :func:`wnll_scores`.

Scores (``score``): ``"log"`` is what the deployed model returns, ``log(u + 1e-6)``: about 30 % of clean
CIFAR-10 images sit at its cap (margin ``log(1e6)`` = 13.8), where every other class's entry is lost under
the floor and margin losses (DLR, C&W, Square's) are flat. ``"log64"`` is an attacker's view that does not
saturate: ``u`` is solved in float64 (:class:`~wnll_art.wnll.model.WNLLNet` does the cast) and scored as
``log(u + 1e-30)``, so entries down to ~1e-16 keep their order and their relative gradients. Both give the
same arg-max up to ties. Measured on the first 20 CIFAR-10 test images (post-hoc ResNet-56, template 500), the
float64 solve makes the saturated images' ``u`` exactly one-hot (margin 69.1, input gradient exactly 0): the
saturation is in the graph (every kNN neighbour of one class), not in the floor, and float32's ~1e-13 rounding
"gradients" were what had fooled them. ``"smooth"`` is the view that does not saturate: the forward value is
the deployed ``"log"`` score, the backward pass is that of ``log(u_s + floor)`` where ``u_s`` is the WNLL
solved on a wider graph (``k = 100``, ``sigma_neighbor = 50``; straight-through like ``"surrogate"``, but
through the WNLL itself): every image has a non-zero gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["LOG_FLOOR", "LOG64_FLOOR", "SCORES", "wnll_scores"]

Gradient = Literal["exact", "surrogate"]
Score = Literal["log", "log64", "smooth"]

LOG_FLOOR = 1e-6
LOG64_FLOOR = 1e-30  # the floor of the "log64" score, far below float64's resolution of u (~1e-16)
SCORES: tuple[str, ...] = ("log", "log64", "smooth")


def wnll_scores(
    u: torch.Tensor,
    *,
    gradient: Gradient = "exact",
    linear_logits: torch.Tensor | None = None,
    log_floor: float = LOG_FLOOR,
    score: Score = "log",
    smooth_u: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-scores ``log(u + log_floor)`` of WNLL label functions.

    ``log(u + floor)``, never ``log(clamp(u, floor))``: a clamp zeroes the gradient of every saturated
    entry, which masked the gradients of about 20 % of CIFAR-10 images.

    Args:
        u: ``(N, C)`` label functions (rows sum to about one), float32/float64, any device.
        gradient: ``"exact"``: the backward pass goes through ``u``. ``"surrogate"``: the forward value
            is the same, the backward pass is that of ``log_softmax(linear_logits)`` (straight-through).
        linear_logits: ``(N, C)`` logits of the parallel linear head; required for ``"surrogate"``.
        log_floor: Added to ``u`` before the log, in ``(0, 1)`` (score ``"log"``).
        score: ``"log"`` (deployed) or ``"log64"`` (``log(u + 1e-30)`` in float64, cast back to the
            dtype of ``u``; meant for ``u`` solved in float64) or ``"smooth"`` (the ``"log"`` value with the
            gradient of ``log(smooth_u + log_floor)``); see the module docstring.
        smooth_u: ``(N, C)`` label functions solved on a wider graph; required for ``"smooth"``.

    Returns:
        ``(N, C)`` log-scores, dtype and device of ``u``. Used as logits, ``softmax`` gives back ``u``
        up to the floor, and cross-entropy is the NLL of the WNLL output.
    """
    if not 0.0 < log_floor < 1.0:
        raise ValueError(f"log_floor must be in (0, 1), got {log_floor}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if score == "log64":
        log_u = torch.log(u.double().clamp_min(0.0) + LOG64_FLOOR).to(u.dtype)
    else:
        log_u = torch.log(u.clamp_min(0.0) + log_floor)
    if score == "smooth":
        if smooth_u is None:
            raise ValueError("score='smooth' needs smooth_u (the label functions on the wider graph)")
        log_s = torch.log(smooth_u.to(log_u.dtype).clamp_min(0.0) + log_floor)
        log_u = log_u.detach() + (log_s - log_s.detach())  # bitwise the deployed value
    if gradient == "exact":
        return log_u
    if gradient != "surrogate":
        raise ValueError(f"gradient must be 'exact' or 'surrogate', got {gradient!r}")
    if linear_logits is None:
        raise ValueError("gradient='surrogate' needs linear_logits (the parallel linear head's output)")
    log_p = F.log_softmax(linear_logits.to(log_u.dtype), dim=1)
    return log_p + (log_u - log_p).detach()
