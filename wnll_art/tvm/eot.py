"""Expectation over Transformation (EOT) gradients through randomised TV minimisation.

References:
    A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security:
    Circumventing Defenses to Adversarial Examples", ICML 2018, sections 4.1 (BPDA) and 4.3 (EOT):
    against a randomised defence an attacker follows ``E_mask[grad_x loss(f(tvm_mask(x)))]``.
    C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
    Transformations", ICLR 2018 (the randomised transformation: Bernoulli pixel masks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from wnll_art._checks import check_positive_int
from wnll_art.tvm.masks import make_generator
from wnll_art.tvm.solver import total_variation_minimize

__all__ = ["eot_gradient"]


def eot_gradient(
    loss_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    eot_samples: int = 8,
    generator: torch.Generator | None = None,
    **tvm_kwargs: Any,
) -> Tensor:
    """Averages ``grad_x loss_fn(tvm(x))`` over ``eot_samples`` independent masks.

    Each sample draws fresh masks from ``generator`` and differentiates through the purification with
    ``tvm_kwargs["gradient"]`` (``"bpda"`` by default: the identity, so the gradient of the loss is
    taken at each purified image, which is what makes EOT useful against the random masks).

    Args:
        loss_fn: Maps purified images ``(N, C, H, W)`` to a scalar loss (e.g. the summed
            cross-entropy of a classifier), differentiable.
        x: Images ``(N, C, H, W)``, floating, any device; not modified.
        eot_samples: Number of independent masks (positive).
        generator: Source of the masks; ``None`` seeds a fresh one from OS entropy.
        **tvm_kwargs: Further options of :func:`total_variation_minimize` (``prob``, ``lamb``,
            ``preset``, ``gradient``, ``clip_values``, ...) except ``mask`` and ``generator``.

    Returns:
        The mean gradient, shape, dtype and device of ``x``.

    Example:
        >>> model.eval()
        >>> loss = lambda z: torch.nn.functional.cross_entropy(model(z), y, reduction="sum")
        >>> g = eot_gradient(loss, x, eot_samples=16, generator=torch.Generator().manual_seed(0))
        >>> x_adv = (x + 2 / 255 * g.sign()).clamp(0, 1)  # one EOT-BPDA FGSM step
    """
    check_positive_int(eot_samples, "eot_samples")
    if "mask" in tvm_kwargs:
        raise ValueError("eot_gradient draws its own masks: do not pass mask")
    gen = generator if generator is not None else make_generator(device=x.device)
    total = torch.zeros_like(x)
    for _ in range(eot_samples):
        x_req = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(total_variation_minimize(x_req, generator=gen, **tvm_kwargs))
            (grad,) = torch.autograd.grad(loss, x_req)
        total += grad
    return total / eot_samples
