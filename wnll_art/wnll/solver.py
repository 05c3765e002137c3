"""WNLL interpolation: label functions of unlabelled points from a labelled template, pure PyTorch.

References:
    Z. Shi, S. Osher, W. Zhu, "Weighted nonlocal Laplacian on interpolation from sparse data",
    J. Sci. Comput. 73 (2017) 1164-1177.
    B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via
    Data Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018), Eq. 3.

For every unlabelled point ``x`` (``X`` = unlabelled points followed by the template ``L``)::

    sum_{y in X} (w(x,y) + w(y,x)) (u(x) - u(y)) + gamma * sum_{y in L} w(y,x) (u(x) - u(y)) = 0,

with ``u`` fixed to the one-hot labels on ``L``. This is ``A u_U = b`` with ``S = W + W^T``,
``A = diag(d) - S_UU``, ``d_x = sum_y S_xy + gamma sum_{y in L} W_yx`` and
``b = (S_UL + gamma W_LU^T) G``. ``A`` is symmetric and, once components without a path to the
template are taken out (see :func:`wnll_interpolate`), positive definite. It is solved either densely
(Cholesky, autograd straight through) or by Jacobi-preconditioned conjugate gradients on the sparse
kNN graph with an implicit (adjoint) backward pass.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from wnll_art._checks import check_finite, check_labels, check_positive_int, check_same_device_dtype
from wnll_art.wnll.graph import knn_indices, knn_weights, reachable_from

__all__ = ["wnll_interpolate", "check_graph_options", "AUTO_DENSE_MAX_N"]

# solver="auto" uses the dense path up to this many unlabelled points and CG above it. Measured on
# CPU (1 thread, torch 2.13, m = n template points, D = 64, C = 10, k = 15, clustered data; medians of
# 11 end-to-end calls incl. kNN, forward + backward), dense vs CG, float64:
#   n = 128: 11 vs 6 ms;  n = 256: 13 vs 14 ms;  n = 384: 26 vs 20 ms;  n = 512: 42 vs 21 ms;
#   n = 1000: 310 vs 99 ms;  n = 2000: 1934 vs 351 ms  (float32 alike: 7 vs 7 ms at n = 256).
# Up to the n ~ 256 crossover dense costs no more and is exact (no tolerance, twice differentiable);
# above it the O(n^3) factorisation and O(n^2) memory lose to CG.
AUTO_DENSE_MAX_N = 256

_DEFAULT_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
_KERNELS = ("gaussian", "quartic")
_SOLVERS = ("auto", "dense", "cg")


def wnll_interpolate(
    features: Tensor,
    template_features: Tensor,
    template_labels: Tensor,
    *,
    num_classes: int | None = None,
    k: int = 15,
    sigma_neighbor: int = 8,
    kernel: Literal["gaussian", "quartic"] = "gaussian",
    gamma: float | None = None,
    solver: Literal["auto", "dense", "cg"] = "auto",
    tol: float | None = None,
    max_iter: int = 1000,
) -> Tensor:
    """Interpolates one-hot template labels onto unlabelled points with the WNLL (Wang et al., Eq. 3).

    The graph is the exact kNN graph over all ``N = n + m`` points (``k`` counts the point itself);
    ``sigma(x)`` is the distance to the ``sigma_neighbor``-th neighbour (the point itself being the
    1st) and ``w(x, y) = exp(-|x-y|^2 / sigma(x)^2)`` (``"gaussian"``) or
    ``exp(-(|x-y|^2 / sigma(x)^2)^2)`` (``"quartic"``). Gradients flow to ``features`` and
    ``template_features`` through the weights; the neighbour selection itself is piecewise constant.

    Behaviours:
        * Rows of the result sum to 1 and lie in ``[0, 1]`` (up to solver tolerance).
        * Unlabelled points with no path of edges of weight ``> finfo(dtype).eps`` to the template
          (e.g. more than ``k`` duplicates of one image far from everything) make ``A`` singular.
          Their equations are replaced by ``u(x) = 1/C`` (uniform: no information), the negligible
          edges touching them are dropped, a ``RuntimeWarning`` is issued, and their gradient is 0.
        * ``n = 0`` returns a ``(0, C)`` tensor (connected to the inputs' graph, gradient 0).
        * The CG path is once differentiable (no double backward); the dense path is fully
          differentiable. A CG solve not reaching ``tol`` in ``max_iter`` steps warns
          (``RuntimeWarning``) with the residual reached and returns the last iterate.

    Args:
        features: ``(n, D)`` float32/float64 unlabelled points, finite, any device.
        template_features: ``(m, D)`` labelled points, same dtype and device as ``features``.
        template_labels: ``(m,)`` integer labels in ``[0, num_classes)`` on the same device; every
            class must occur.
        num_classes: ``C``; inferred as ``max(template_labels) + 1`` if ``None``.
        k: Neighbours per point counting the point itself, ``2 <= k < n + m``.
        sigma_neighbor: Position of the scale neighbour, ``2 <= sigma_neighbor <= k``.
        kernel: ``"gaussian"`` (the paper) or ``"quartic"`` (the authors' code).
        gamma: Weight of the template term, ``>= 0``; defaults to ``n / m`` (= ``|X|/|L| - 1``).
        solver: ``"dense"`` (Cholesky), ``"cg"`` (sparse conjugate gradients) or ``"auto"``
            (dense when ``n <= AUTO_DENSE_MAX_N``, else CG).
        tol: CG relative residual tolerance per class column; default 1e-6 (float32), 1e-12 (float64).
        max_iter: Maximum CG iterations (forward and backward solves each).

    Returns:
        ``(n, C)`` tensor ``u`` of label functions, dtype and device of ``features``.

    Raises:
        TypeError: Non-tensor inputs, non-float32/float64 features, non-integer labels or options
            of the wrong type.
        ValueError: Wrong shapes, mismatched device/dtype/D, NaN/inf, empty template, classes missing
            from the template, ``k``/``sigma_neighbor`` out of range, unknown ``kernel``/``solver``.
    """
    n_cls, gamma_v, tol_v = _validate(
        features, template_features, template_labels, num_classes, k, sigma_neighbor, kernel,
        gamma, solver, tol, max_iter,
    )  # fmt: skip
    n = features.shape[0]
    if n == 0:
        return features.new_zeros((0, n_cls)) + 0.0 * (features.sum() + template_features.sum())
    points = torch.cat([features, template_features], dim=0)
    neighbors = knn_indices(points.detach(), k)
    weights = knn_weights(points, neighbors, sigma_neighbor=sigma_neighbor, kernel=kernel)
    labels = template_labels.long()
    diag, rows, cols, vals, rhs = _assemble(neighbors, weights, labels, n, n_cls, gamma_v)
    method = solver if solver != "auto" else ("dense" if n <= AUTO_DENSE_MAX_N else "cg")
    if method == "dense":
        return _dense_solve(diag, rows, cols, vals, rhs)
    return _SymmetricSparseSolve.apply(diag, rows, cols, vals, rhs, tol_v, max_iter)


def _check_points(x: object, name: str) -> Tensor:
    """Checks a 2-D float32/float64 tensor (finiteness is checked later, once devices agree)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _DEFAULT_TOL:
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype} (use .float() or .double())")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (num_points, dim), got shape {tuple(x.shape)}")
    return x


def _check_real(value: object, name: str, *, positive: bool) -> float:
    """Checks a finite real number that is ``> 0`` (``positive``) or ``>= 0``; returns it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value}")
    return v


def _validate(
    features: object,
    template_features: object,
    template_labels: object,
    num_classes: int | None,
    k: int,
    sigma_neighbor: int,
    kernel: str,
    gamma: float | None,
    solver: str,
    tol: float | None,
    max_iter: int,
) -> tuple[int, float, float]:
    """Validates the arguments of :func:`wnll_interpolate`; returns ``(C, gamma, tol)``."""
    feats = _check_points(features, "features")
    templ = _check_points(template_features, "template_features")
    check_same_device_dtype(("features", feats), ("template_features", templ))
    check_finite(feats, "features")
    check_finite(templ, "template_features")
    if feats.shape[1] != templ.shape[1]:
        raise ValueError(
            f"features and template_features must have the same dimension D, "
            f"got {feats.shape[1]} and {templ.shape[1]}"
        )
    labels = check_labels(template_labels, "template_labels")
    n_cls = _check_template_labels(labels, templ, num_classes)
    check_graph_options(k=k, sigma_neighbor=sigma_neighbor, kernel=kernel, gamma=gamma, solver=solver,
                        n_points=feats.shape[0] + templ.shape[0])  # fmt: skip
    n_over_m = feats.shape[0] / templ.shape[0]
    gamma_v = n_over_m if gamma is None else float(gamma)
    tol_v = _DEFAULT_TOL[feats.dtype] if tol is None else _check_real(tol, "tol", positive=True)
    check_positive_int(max_iter, "max_iter")
    return n_cls, gamma_v, tol_v


def check_graph_options(
    *, k: int, sigma_neighbor: int, kernel: str, gamma: float | None, solver: str, n_points: int
) -> None:
    """Checks the graph and solver options of :func:`wnll_interpolate` for a solve over ``n_points`` points.

    Raises:
        TypeError: ``k``/``sigma_neighbor`` not ints, ``gamma`` not a real number.
        ValueError: ``k`` outside ``[2, n_points)``, ``sigma_neighbor`` outside ``[2, k]``, ``gamma < 0``,
            unknown ``kernel``/``solver``.
    """
    check_positive_int(k, "k")
    if not 2 <= k < n_points:
        raise ValueError(f"k must satisfy 2 <= k < number of points (n + m = {n_points}), got k={k}")
    check_positive_int(sigma_neighbor, "sigma_neighbor")
    if not 2 <= sigma_neighbor <= k:
        raise ValueError(f"sigma_neighbor must satisfy 2 <= sigma_neighbor <= k={k}, got {sigma_neighbor}")
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    if gamma is not None:
        _check_real(gamma, "gamma", positive=False)


def _check_template_labels(labels: Tensor, templ: Tensor, num_classes: int | None) -> int:
    """Checks template labels against the template; returns the number of classes ``C``."""
    m = templ.shape[0]
    if labels.shape[0] != m:
        raise ValueError(
            f"template_labels must have one label per template point ({m}), got {labels.shape[0]}"
        )
    if labels.device != templ.device:
        raise ValueError(f"template_labels is on {labels.device} but template_features is on {templ.device}")
    if m == 0:
        raise ValueError("the template is empty: template_features must hold at least one point")
    if int(labels.min()) < 0:
        raise ValueError(f"template_labels must be >= 0, got minimum {int(labels.min())}")
    n_cls = int(labels.max()) + 1 if num_classes is None else check_positive_int(num_classes, "num_classes")
    check_labels(labels, "template_labels", num_classes=n_cls)
    present = torch.zeros(n_cls, dtype=torch.bool, device=labels.device)
    present[labels.long()] = True  # .long(): uint8 indices would act as a boolean mask
    if not bool(present.all()):
        missing = (~present).nonzero().flatten().tolist()
        raise ValueError(
            f"the template must contain every class in [0, {n_cls}); missing class(es) {missing}"
        )
    return n_cls


def _assemble(
    neighbors: Tensor, weights: Tensor, labels: Tensor, n: int, n_cls: int, gamma: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Builds ``A = diag(d) - S_UU`` (as ``d`` and an edge list) and ``b`` from the kNN weights.

    Args:
        neighbors: ``(N, k)`` int64 kNN indices (self first); points ``>= n`` are the template.
        weights: ``(N, k - 1)`` weights ``w(i, neighbors[i, 1:])``.
        labels: ``(m,)`` int64 template labels.
        n: Number of unlabelled points.
        n_cls: Number of classes ``C``.
        gamma: Template weight.

    Returns:
        ``diag`` ``(n,)``; ``rows``, ``cols`` ``(E,)`` int64 and ``vals`` ``(E,)``: each edge adds
        ``-vals`` at ``(rows, cols)`` and at ``(cols, rows)`` of ``A``; ``rhs`` ``(n, C)``.
    """
    n_pts, k = neighbors.shape
    rows = torch.arange(n_pts, device=neighbors.device).repeat_interleave(k - 1)
    cols = neighbors[:, 1:].reshape(-1)
    w = weights.reshape(-1)
    reach = reachable_from(rows, cols, w.detach(), n_pts, n_pts - n, threshold=torch.finfo(w.dtype).eps)
    stranded = ~reach[:n]
    keep = reach[rows] & reach[cols] & ((rows < n) | (cols < n))
    rows, cols, w = rows[keep], cols[keep], w[keep]
    i_u, j_u = rows < n, cols < n
    uu, ul, lu = i_u & j_u, i_u & ~j_u, ~i_u & j_u
    w_lu = (1.0 + gamma) * w[lu]
    diag = (
        w.new_zeros(n)
        .index_add(0, rows[uu], w[uu])
        .index_add(0, cols[uu], w[uu])
        .index_add(0, rows[ul], w[ul])
        .index_add(0, cols[lu], w_lu)
    )
    rhs = (
        w.new_zeros(n * n_cls)
        .index_add(0, rows[ul] * n_cls + labels[cols[ul] - n], w[ul])
        .index_add(0, cols[lu] * n_cls + labels[rows[lu] - n], w_lu)
        .view(n, n_cls)
    )
    if bool(stranded.any()):
        warnings.warn(
            f"wnll_interpolate: {int(stranded.sum())} unlabelled point(s) have no graph path to the "
            "template (e.g. more than k near-duplicates far from it); their label functions are set "
            "to the uniform 1/C",
            RuntimeWarning,
            stacklevel=3,
        )
        s = stranded.to(w.dtype)
        diag = diag + s
        rhs = rhs + s[:, None] / n_cls
    return diag, rows[uu], cols[uu], w[uu], rhs


def _dense_solve(diag: Tensor, rows: Tensor, cols: Tensor, vals: Tensor, rhs: Tensor) -> Tensor:
    """Solves ``(diag(d) - S) u = rhs`` densely (Cholesky, LU fallback); differentiable."""
    n = diag.shape[0]
    off = vals.new_zeros(n * n).index_add(0, rows * n + cols, vals).index_add(0, cols * n + rows, vals)
    mat = torch.diag(diag) - off.view(n, n)
    chol, info = torch.linalg.cholesky_ex(mat)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, chol)
    return torch.linalg.solve(mat, rhs)


def _symmetric_operator(diag: Tensor, rows: Tensor, cols: Tensor, vals: Tensor) -> Tensor:
    """The symmetric off-diagonal part ``S`` as a coalesced sparse COO ``(n, n)`` tensor (no grad).

    (COO @ dense is as fast as CSR here on CPU and avoids torch's "CSR is beta" warning.)
    """
    n = diag.shape[0]
    idx = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    vals2 = torch.cat([vals, vals])
    return torch.sparse_coo_tensor(idx, vals2, (n, n), check_invariants=False).coalesce()


def _cg(diag: Tensor, off: Tensor, rhs: Tensor, *, tol: float, max_iter: int, stage: str) -> Tensor:
    """Jacobi-preconditioned CG for ``(diag(d) - off) x = rhs``, batched over the columns of ``rhs``.

    Args:
        diag: ``(n,)`` positive diagonal.
        off: ``(n, n)`` sparse COO symmetric off-diagonal part (subtracted).
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


class _SymmetricSparseSolve(torch.autograd.Function):
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
        off = _symmetric_operator(diag, rows, cols, vals)
        u = _cg(diag, off, rhs, tol=tol, max_iter=max_iter, stage="forward")
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
        lam = _cg(diag, off, grad_u.contiguous(), tol=tol, max_iter=max_iter, stage="backward")
        grad_diag = -(lam * u).sum(dim=1)
        grad_vals = (lam[rows] * u[cols]).sum(dim=1) + (lam[cols] * u[rows]).sum(dim=1)
        return grad_diag, None, None, grad_vals, lam, None, None
