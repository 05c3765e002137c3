"""Finite differences, their adjoint and the exact DCT solver for ``(rho_a I + rho_u D^T D) z = r``.

References:
    C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
    Transformations", ICLR 2018 (the TV objective whose differences these are).
    L. I. Rudin, S. Osher, E. Fatemi, "Nonlinear total variation based noise removal algorithms",
    Physica D 60 (1992) 259-268.

``D`` stacks the forward differences of ART's ``TotalVarMin._loss_func`` on every ``(H, W)`` image
channel: ``D_v z = z[1:, :] - z[:-1, :]`` (shape ``(H - 1, W)``) and ``D_h z = z[:, 1:] - z[:, :-1]``
(shape ``(H, W - 1)``); no wrap-around, i.e. Neumann boundaries. ``D^T D`` is then the Neumann graph
Laplacian of the pixel grid, which the orthonormal DCT-II diagonalises exactly: its eigenvalues are
``(2 - 2 cos(pi k / H)) + (2 - 2 cos(pi l / W))``. Small images (CIFAR's 32 x 32) make the DCT fastest
as two dense matrix products per channel.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["forward_diffs", "diffs_adjoint", "NeumannSolver", "dct_matrix"]


def forward_diffs(z: Tensor) -> tuple[Tensor, Tensor]:
    """Vertical and horizontal forward differences of every image channel.

    Args:
        z: Images, shape ``(..., H, W)``, any floating dtype and device.

    Returns:
        ``(dv, dh)`` with ``dv = z[..., 1:, :] - z[..., :-1, :]`` of shape ``(..., H - 1, W)`` and
        ``dh = z[..., :, 1:] - z[..., :, :-1]`` of shape ``(..., H, W - 1)``.
    """
    return z[..., 1:, :] - z[..., :-1, :], z[..., :, 1:] - z[..., :, :-1]


def diffs_adjoint(gv: Tensor, gh: Tensor) -> Tensor:
    """Adjoint of :func:`forward_diffs`: ``D_v^T gv + D_h^T gh``.

    Args:
        gv: Shape ``(..., H - 1, W)``.
        gh: Shape ``(..., H, W - 1)``, same dtype and device as ``gv``.

    Returns:
        Shape ``(..., H, W)``; ``(D^T g)[i] = g[i - 1] - g[i]`` along each axis with ``g`` zero outside.
    """
    pv, ph = F.pad(gv, (0, 0, 1, 1)), F.pad(gh, (1, 1))
    return (pv[..., :-1, :] - pv[..., 1:, :]) + (ph[..., :, :-1] - ph[..., :, 1:])


@functools.lru_cache(maxsize=32)
def _dct_matrix_cached(n: int, dtype: torch.dtype, device: str, transposed: bool) -> Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return (c.t() if transposed else c).contiguous().to(device=device, dtype=dtype)


def dct_matrix(n: int, *, dtype: torch.dtype, device: torch.device | str, transposed: bool = False) -> Tensor:
    """The orthonormal DCT-II matrix ``C`` (``C @ C.T = I``), row ``k`` = frequency ``k``.

    Args:
        n: Signal length (positive).
        dtype: Floating dtype of the result.
        device: Device of the result.
        transposed: Return ``C.T`` (contiguous) instead.

    Returns:
        Shape ``(n, n)``; cached per arguments (do not modify in place).
    """
    return _dct_matrix_cached(n, dtype, str(torch.device(device)), transposed)


def _neumann_eigenvalues(n: int) -> Tensor:
    k = torch.arange(n, dtype=torch.float64)
    return 2.0 - 2.0 * torch.cos(math.pi * k / n)


@functools.lru_cache(maxsize=32)
def _inverse_denominator(height: int, width: int, kappa: float, dtype: torch.dtype, device: str) -> Tensor:
    eig = _neumann_eigenvalues(height)[:, None] + _neumann_eigenvalues(width)[None, :]
    return (1.0 / (1.0 + kappa * eig)).to(device=device, dtype=dtype)


class NeumannSolver:
    """Exact solver of ``(I + kappa D^T D) z = r`` for every ``(H, W)`` channel of a batch.

    Args:
        height: ``H`` of the images.
        width: ``W`` of the images.
        kappa: Positive weight ``rho_u / rho_a`` of the Laplacian.
        dtype: Floating dtype of the operands.
        device: Device of the operands.
    """

    def __init__(
        self, height: int, width: int, *, kappa: float, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.ch = dct_matrix(height, dtype=dtype, device=device)
        self.ch_t = dct_matrix(height, dtype=dtype, device=device, transposed=True)
        self.cw = dct_matrix(width, dtype=dtype, device=device)
        self.cw_t = dct_matrix(width, dtype=dtype, device=device, transposed=True)
        self.inv_den = _inverse_denominator(height, width, float(kappa), dtype, str(torch.device(device)))

    def solve(self, rhs: Tensor) -> Tensor:
        """Returns ``z`` with ``(I + kappa D^T D) z = rhs``; ``rhs`` has shape ``(..., H, W)``."""
        spec = torch.matmul(torch.matmul(self.ch, rhs), self.cw_t) * self.inv_den
        return torch.matmul(torch.matmul(self.ch_t, spec), self.cw)
