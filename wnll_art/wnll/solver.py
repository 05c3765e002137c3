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

from wnll_art._checks import check_finite, check_labels, check_positive_int, check_same_device_dtype
from wnll_art.wnll.graph import knn_indices, knn_weights, reachability
from wnll_art.wnll.sparse import SymmetricSparseSolve

__all__ = [
    "AUTO_DENSE_MAX_N", "AUTO_DENSE_MAX_N_CUDA", "auto_solver", "check_graph_options", "check_template_labels",
    "wnll_interpolate", "wnll_interpolate_checked",
]  # fmt: skip

# solver="auto" uses the dense path up to this many unlabelled points and CG above it. Measured on
# CPU (1 thread, torch 2.13, m = n template points, D = 64, C = 10, k = 15, clustered data; medians of
# 11 end-to-end calls incl. kNN, forward + backward), dense vs CG, float64:
#   n = 128: 11 vs 6 ms;  n = 256: 13 vs 14 ms;  n = 384: 26 vs 20 ms;  n = 512: 42 vs 21 ms;
#   n = 1000: 310 vs 99 ms;  n = 2000: 1934 vs 351 ms  (float32 alike: 7 vs 7 ms at n = 256).
# Up to the n ~ 256 crossover dense costs no more and is exact (no tolerance, twice differentiable);
# above it the O(n^3) factorisation and O(n^2) memory lose to CG.
AUTO_DENSE_MAX_N = 256
# The same switch on CUDA. PROVISIONAL, NOT MEASURED (no GPU was at hand): a batched Cholesky of n <= 2048
# is a few dense kernels with one host read, while CG costs a kernel chain per iteration and a host read
# every 8th, so the crossover is expected far above the CPU one. Measure with
# ``benchmarks/bench_wnll_solve.py --device cuda`` and set it here; ``solver="dense"``/``"cg"`` overrides it.
AUTO_DENSE_MAX_N_CUDA = 2048

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
            (:func:`auto_solver`: dense when ``n <= AUTO_DENSE_MAX_N``, ``AUTO_DENSE_MAX_N_CUDA`` on
            CUDA, else CG).
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
    return _interpolate(features, template_features, template_labels, n_cls=n_cls, k=k,
                        sigma_neighbor=sigma_neighbor, kernel=kernel, gamma=gamma_v, solver=solver, tol=tol_v,
                        max_iter=max_iter)  # fmt: skip


def wnll_interpolate_checked(
    features: Tensor,
    template_features: Tensor,
    template_labels: Tensor,
    *,
    num_classes: int,
    k: int = 15,
    sigma_neighbor: int = 8,
    kernel: Literal["gaussian", "quartic"] = "gaussian",
    gamma: float | None = None,
    solver: Literal["auto", "dense", "cg"] = "auto",
    max_iter: int = 1000,
) -> Tensor:
    """:func:`wnll_interpolate` for callers that checked the template labels and options beforehand.

    For a model (:class:`~wnll_art.wnll.model.WNLLNet`) whose template labels were checked with
    :func:`check_template_labels` and options with :func:`check_graph_options`: this skips those checks
    (each a host synchronisation on a GPU) and keeps the cheap ones: shapes, dtypes, devices, ``k`` against
    the number of points, and finiteness of both point sets in one synchronisation. Same arguments, result
    and behaviours as :func:`wnll_interpolate` (default ``tol``).

    Raises:
        TypeError: Non-tensor or non-float32/float64 points.
        ValueError: Wrong shapes, mismatched device/dtype/D, NaN/inf points, ``k >= n + m``.
    """
    feats = _check_points(features, "features")
    templ = _check_points(template_features, "template_features")
    check_same_device_dtype(("features", feats), ("template_features", templ))
    if feats.shape[1] != templ.shape[1] or template_labels.shape != (templ.shape[0],):
        raise ValueError(f"features {tuple(feats.shape)}, template_features {tuple(templ.shape)} and "
                         f"template_labels {tuple(template_labels.shape)} do not match: need (n, D), (m, D), (m,)")  # fmt: skip
    if not k < feats.shape[0] + templ.shape[0]:
        raise ValueError(
            f"k must be < the number of points (n + m = {feats.shape[0] + templ.shape[0]}), got {k}"
        )
    if not bool(torch.isfinite(feats.detach()).all() & torch.isfinite(templ.detach()).all()):
        check_finite(feats, "features")  # names the culprit
        check_finite(templ, "template_features")
    n_over_m = feats.shape[0] / templ.shape[0]
    return _interpolate(feats, templ, template_labels, n_cls=num_classes, k=k, sigma_neighbor=sigma_neighbor,
                        kernel=kernel, gamma=n_over_m if gamma is None else float(gamma), solver=solver,
                        tol=_DEFAULT_TOL[feats.dtype], max_iter=max_iter)  # fmt: skip


def auto_solver(n: int, device: torch.device) -> Literal["dense", "cg"]:
    """The path of ``solver="auto"`` for ``n`` unlabelled points on ``device``: ``"dense"`` up to
    :data:`AUTO_DENSE_MAX_N` (CPU) or :data:`AUTO_DENSE_MAX_N_CUDA` (CUDA, provisional), else ``"cg"``."""
    limit = AUTO_DENSE_MAX_N_CUDA if device.type == "cuda" else AUTO_DENSE_MAX_N
    return "dense" if n <= limit else "cg"


def _interpolate(
    features: Tensor, template_features: Tensor, template_labels: Tensor, *, n_cls: int, k: int,
    sigma_neighbor: int, kernel: Literal["gaussian", "quartic"], gamma: float, solver: str, tol: float,
    max_iter: int,
) -> Tensor:  # fmt: skip
    """The solve on checked inputs: kNN graph, assembly, dense or CG solve (see :func:`wnll_interpolate`)."""
    n = features.shape[0]
    if n == 0:
        return features.new_zeros((0, n_cls)) + 0.0 * (features.sum() + template_features.sum())
    points = torch.cat([features, template_features], dim=0)
    neighbors = knn_indices(points.detach(), k)
    weights = knn_weights(points, neighbors, sigma_neighbor=sigma_neighbor, kernel=kernel)
    labels = template_labels.long()
    diag, rows, cols, vals, rhs = _assemble(neighbors, weights, labels, n, n_cls, gamma)
    method = solver if solver != "auto" else auto_solver(n, features.device)
    if method == "dense":
        return _dense_solve(diag, rows, cols, vals, rhs)
    out: Tensor = SymmetricSparseSolve.apply(diag, rows, cols, vals, rhs, tol, max_iter)
    return out


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
    n_cls = check_template_labels(labels, templ, num_classes)
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


def check_template_labels(labels: Tensor, templ: Tensor, num_classes: int | None) -> int:
    """Checks template labels (``(m,)`` integers on ``templ``'s device, every class in ``[0, C)`` present)
    against the ``(m, D)`` template; returns the number of classes ``C`` (``max + 1`` when ``None``).

    Raises:
        TypeError: Non-integer labels.
        ValueError: Wrong length or device, empty template, labels out of range, a class missing.
    """
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
    reach, everything = reachability(
        rows, cols, w.detach(), n_pts, n_pts - n, threshold=torch.finfo(w.dtype).eps
    )
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
    if not everything:  # the template (the sources) is always reached: some unlabelled point is stranded
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
    """Solves ``(diag(d) - S) u = rhs`` densely (Cholesky, LU fallback, a ridge if numerically singular);
    differentiable."""
    n = diag.shape[0]
    off = vals.new_zeros(n * n).index_add(0, rows * n + cols, vals).index_add(0, cols * n + rows, vals)
    mat = torch.diag(diag) - off.view(n, n)
    chol, info = torch.linalg.cholesky_ex(mat)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, chol)
    out, info = torch.linalg.solve_ex(mat, rhs)
    if int(info) == 0:
        return out
    # numerically singular: a component joined to the template only by edges too weak for this dtype (their
    # weights round away in the row sums); a ridge of one unit in the last place keeps the solve defined
    ridge = torch.finfo(mat.dtype).eps * float(diag.detach().abs().max().clamp_min(1.0))
    warnings.warn(f"wnll_interpolate: the system is numerically singular (weak links to the template); solved with a "
                  f"ridge of {ridge:.1g}", RuntimeWarning, stacklevel=4)  # fmt: skip
    return torch.linalg.solve(mat + ridge * torch.eye(n, dtype=mat.dtype, device=mat.device), rhs)
