"""Objective values of the two TV minimisation problems, per image channel, in PyTorch.

References:
    C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
    Transformations", ICLR 2018, section 3 (total variance minimisation, the "art" objective).
    L. I. Rudin, S. Osher, E. Fatemi, "Nonlinear total variation based noise removal algorithms",
    Physica D 60 (1992) 259-268 (isotropic TV, the "isotropic" objective).

``"art"`` is exactly ART 1.20's ``TotalVarMin._loss_func`` on one ``(H, W)`` channel ``z`` of an
image ``x`` with Bernoulli mask ``m``::

    sqrt(sum(m * (z - x)^2))
      + lamb * sum_r ||z[r + 1, :] - z[r, :]||_p      (p-norm of each row of vertical differences)
      + lamb * sum_c ||z[:, c + 1] - z[:, c]||_p      (p-norm of each column of horizontal differences)

(NumPy's ``norm(z[1:, :] - z[:-1, :], p, axis=1)`` and ``norm(z[:, 1:] - z[:, :-1], p, axis=0)``).
``"isotropic"`` is ``sum(m * (z - x)^2) + lamb * sum_ij sqrt(dv_ij^2 + dh_ij^2)`` with differences
missing at the last row / column counted as zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wnll_art.tvm.operators import forward_diffs

__all__ = ["art_objective", "isotropic_objective"]


def art_objective(z: Tensor, x: Tensor, mask: Tensor, *, norm: int = 2, lamb: float = 0.5) -> Tensor:
    """ART ``TotalVarMin._loss_func`` for every image channel of a batch.

    Args:
        z: Candidate images, shape ``(N, C, H, W)`` (or any ``(..., H, W)``), floating, any device.
        x: Observed images, same shape, dtype and device.
        mask: Bernoulli mask, same shape (bool or 0/1 floating), 1 = pixel kept.
        norm: ART's ``norm``, a positive integer ``p``.
        lamb: ART's ``lamb``, weight of the TV term.

    Returns:
        Objective values, shape ``z.shape[:-2]`` (``(N, C)``), dtype of ``z``; differentiable.

    Example:
        >>> z = x.clone()  # the input itself: data term 0, only the TV term remains
        >>> art_objective(z, x, mask).sum(1)  # per image, summed over channels as ART optimises them
    """
    m = mask.to(z.dtype)
    data = torch.sqrt((m * (z - x) ** 2).sum((-2, -1)))
    dv, dh = forward_diffs(z)
    rows = torch.linalg.vector_norm(dv, norm, dim=-1).sum(-1)  # ART: norm(..., axis=1) per row
    cols = torch.linalg.vector_norm(dh, norm, dim=-2).sum(-1)  # ART: norm(..., axis=0) per column
    return data + lamb * (rows + cols)


def isotropic_objective(z: Tensor, x: Tensor, mask: Tensor, *, lamb: float = 0.5) -> Tensor:
    """Masked squared data term plus isotropic TV for every image channel of a batch.

    Args:
        z: Candidate images, shape ``(N, C, H, W)`` (or any ``(..., H, W)``), floating, any device.
        x: Observed images, same shape, dtype and device.
        mask: Bernoulli mask, same shape (bool or 0/1 floating), 1 = pixel kept.
        lamb: Weight of the TV term.

    Returns:
        ``sum(mask * (z - x)^2) + lamb * sum_ij sqrt(dv^2 + dh^2)``, shape ``z.shape[:-2]``.
    """
    m = mask.to(z.dtype)
    data = (m * (z - x) ** 2).sum((-2, -1))
    dv, dh = forward_diffs(z)
    sq = torch.nn.functional.pad(dv * dv, (0, 0, 0, 1)) + torch.nn.functional.pad(dh * dh, (0, 1))
    return data + lamb * torch.sqrt(sq).sum((-2, -1))
