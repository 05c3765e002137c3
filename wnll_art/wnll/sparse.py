"""The sparse half of the WNLL solve: the symmetric operator and Jacobi-preconditioned conjugate gradients
with an implicit (adjoint) backward pass (:func:`wnll_art.wnll.solver.wnll_interpolate`, ``solver="cg"``).

The operator is built once per solve (forward and backward share it): coalesced COO on CPU, CSR on CUDA.
Convergence is read on the host every iteration on CPU and every 8th elsewhere (a host read is a device
synchronisation there).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["Layout", "SymmetricSparseSolve", "conjugate_gradients", "operator_layout", "symmetric_operator"]

Layout = Literal["coo", "csr"]


def symmetric_operator(
    diag: Tensor, rows: Tensor, cols: Tensor, vals: Tensor, *, layout: Layout | None = None
) -> Tensor:
    """The symmetric off-diagonal part ``S`` as a sparse ``(n, n)`` tensor, built once per solve (no grad).

    Args:
        diag: ``(n,)`` diagonal (gives ``n``).
        rows: ``(E,)`` int64 edge rows; ``cols``: ``(E,)`` int64 edge columns; ``vals``: ``(E,)`` values.
            Each edge enters ``S`` at ``(rows, cols)`` and ``(cols, rows)``; repeated entries are summed.
        layout: ``"coo"`` (coalesced COO) or ``"csr"``; default :func:`operator_layout` of the device.

    Returns:
        The sparse operator on the device and dtype of ``vals``.
    """
    n = diag.shape[0]
    idx = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    vals2 = torch.cat([vals, vals])
    coo = torch.sparse_coo_tensor(idx, vals2, (n, n), check_invariants=False).coalesce()
    if (layout or operator_layout(vals.device)) == "coo":
        return coo
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr()


def operator_layout(device: torch.device) -> Layout:
    """The sparse layout of the CG operator on ``device``: CSR on CUDA (cuSPARSE's CSR SpMM; its COO
    product may differ between runs), COO elsewhere (as fast as CSR on CPU, measured)."""
    return "csr" if device.type == "cuda" else "coo"


def conjugate_gradients(
    diag: Tensor, off: Tensor, rhs: Tensor, *, tol: float, max_iter: int, stage: str
) -> Tensor:
    """Jacobi-preconditioned CG for ``(diag(d) - off) x = rhs``, batched over the columns of ``rhs``.

    Args:
        diag: ``(n,)`` positive diagonal.
        off: ``(n, n)`` sparse (COO or CSR) symmetric off-diagonal part (subtracted).
        rhs: ``(n, C)`` right-hand sides, same dtype/device.
        tol: Relative residual ``|r_c| / |rhs_c|`` at which every column counts as converged.
        max_iter: Iteration cap; on reaching it a ``RuntimeWarning`` names the residual.
        stage: ``"forward"`` or ``"backward"`` (for the warning).

    Returns:
        ``(n, C)`` solution (the last iterate if not converged).
    """
    tiny = torch.finfo(rhs.dtype).tiny
    inv_d = (1.0 / diag)[:, None]
    b_norm = torch.linalg.vector_norm(rhs, dim=0).clamp(min=tiny)
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r * inv_d
    p = z.clone()
    rz = (r * z).sum(dim=0)
    check_every = 1 if rhs.device.type == "cpu" else 8
    rel = torch.linalg.vector_norm(r, dim=0) / b_norm
    for it in range(max_iter):
        if it % check_every == 0:
            rel = torch.linalg.vector_norm(r, dim=0) / b_norm
            if bool((rel <= tol).all()):
                return x
        ap = diag[:, None] * p - off @ p
        p_ap = (p * ap).sum(dim=0)
        alpha = torch.where(p_ap > 0, rz / p_ap.clamp(min=tiny), 0.0)
        x.add_(alpha * p)
        r.sub_(alpha * ap)
        z = r * inv_d
        rz_new = (r * z).sum(dim=0)
        beta = torch.where(rz > 0, rz_new / rz.clamp(min=tiny), 0.0)
        p = z + beta * p
        rz = rz_new
    rel = torch.linalg.vector_norm(r, dim=0) / b_norm
    if not bool((rel <= tol).all()):
        warnings.warn(
            f"wnll_interpolate: conjugate gradients ({stage}) did not converge in max_iter={max_iter} "
            f"iterations: relative residual {float(rel.max()):.3g} > tol {tol:.3g}",
            RuntimeWarning,
            stacklevel=2,
        )
    return x


class SymmetricSparseSolve(torch.autograd.Function):
    """``u = (diag(d) - S)^{-1} rhs`` by CG, ``S`` given by symmetric edges; adjoint backward.

    With ``A u = b`` and ``lam = A^{-1} grad_u`` (``A`` symmetric): ``grad_b = lam``,
    ``grad_d = -sum_c lam * u`` and, for an edge ``(i, j, s)`` entering ``A`` at ``(i, j)`` and
    ``(j, i)`` with ``-s``, ``grad_s = lam_i . u_j + lam_j . u_i``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        diag: Tensor,
        rows: Tensor,
        cols: Tensor,
        vals: Tensor,
        rhs: Tensor,
        tol: float,
        max_iter: int,
    ) -> Tensor:
        off = symmetric_operator(diag, rows, cols, vals)
        u = conjugate_gradients(diag, off, rhs, tol=tol, max_iter=max_iter, stage="forward")
        ctx.save_for_backward(diag, rows, cols, vals, u)
        ctx.off, ctx.tol, ctx.max_iter = off, tol, max_iter  # type: ignore[attr-defined]
        return u

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_u: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        diag, rows, cols, vals, u = ctx.saved_tensors  # type: ignore[attr-defined]
        off: Tensor = ctx.off  # type: ignore[attr-defined]
        tol: float = ctx.tol  # type: ignore[attr-defined]
        max_iter: int = ctx.max_iter  # type: ignore[attr-defined]
        lam = conjugate_gradients(
            diag, off, grad_u.contiguous(), tol=tol, max_iter=max_iter, stage="backward"
        )
        grad_diag = -(lam * u).sum(dim=1)
        grad_vals = (lam[rows] * u[cols]).sum(dim=1) + (lam[cols] * u[rows]).sum(dim=1)
        return grad_diag, None, None, grad_vals, lam, None, None
