"""The k-nearest-neighbour graph and its weights for the weighted nonlocal Laplacian (WNLL).

References:
    Z. Shi, S. Osher, W. Zhu, "Weighted nonlocal Laplacian on interpolation from sparse data",
    J. Sci. Comput. 73 (2017) 1164-1177.
    B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via
    Data Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).

The graph is exact (brute force, chunked over rows) and directed: each point ``x`` is joined to its
``k - 1`` nearest other points, with weight ``w(x, y) = exp(-|x - y|^2 / sigma(x)^2)`` (Gaussian) or
``exp(-(|x - y|^2 / sigma(x)^2)^2)`` (the "quartic" variant of the authors' code), where ``sigma(x)``
is the distance from ``x`` to its ``sigma_neighbor``-th neighbour counting ``x`` itself as the 1st.
Neighbour *selection* is piecewise constant and carries no gradient; the weights are differentiable
in the point coordinates (through the distances and ``sigma``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

__all__ = ["knn_indices", "knn_weights", "reachability", "reachable_from"]

Kernel = Literal["gaussian", "quartic"]

# rows of the distance matrix computed at once: bounds the (chunk x N) block in memory
_CHUNK_ELEMENTS = 1 << 24


@torch.no_grad()
def knn_indices(points: Tensor, k: int) -> Tensor:
    """Exact k nearest neighbours of every point, the point itself always first.

    Args:
        points: ``(N, D)`` float tensor, any device.
        k: Neighbours per point counting the point itself, ``1 <= k <= N``.

    Returns:
        ``(N, k)`` int64 tensor on ``points.device``; row ``i`` starts with ``i`` and then lists the
        ``k - 1`` nearest other points by increasing Euclidean distance (ties broken arbitrarily).
    """
    n_pts = points.shape[0]
    sq = (points * points).sum(dim=1)
    chunk = max(1, _CHUNK_ELEMENTS // max(n_pts, 1))
    out = []
    for start in range(0, n_pts, chunk):
        block = points[start : start + chunk]
        # |x_i - x_j|^2 - |x_i|^2: the per-row constant does not change the ranking
        d2 = torch.addmm(sq[None, :], block, points.T, alpha=-2.0)
        rows = torch.arange(block.shape[0], device=points.device)
        d2[rows, rows + start] = -float("inf")  # the point itself always comes first
        out.append(torch.topk(d2, k, dim=1, largest=False, sorted=True).indices)
    return torch.cat(out, dim=0)


def knn_weights(
    points: Tensor, neighbors: Tensor, *, sigma_neighbor: int, kernel: Kernel = "gaussian"
) -> Tensor:
    """Weights ``w(x, y)`` from every point to its ``k - 1`` nearest other points.

    Distances are recomputed exactly (as differences, not via the Gram matrix) so that they are
    accurate and differentiable. ``sigma(x)^2`` is clamped below by
    ``finfo(dtype).eps * max_kNN_distance^2`` (and by ``finfo(dtype).tiny``) so that exact duplicates
    (``sigma = 0``) give weight 1 to the duplicates and 0 to everything else, never NaN.

    Args:
        points: ``(N, D)`` float tensor (may require grad).
        neighbors: ``(N, k)`` int64 tensor from :func:`knn_indices` (self in column 0).
        sigma_neighbor: 1-based position (self = 1) of the neighbour defining ``sigma``,
            ``2 <= sigma_neighbor <= k``.
        kernel: ``"gaussian"`` or ``"quartic"``.

    Returns:
        ``(N, k - 1)`` tensor of weights in ``[0, 1]``, same dtype/device as ``points``; entry
        ``[i, j]`` is ``w(points[i], points[neighbors[i, j + 1]])``.
    """
    diff = points[:, None, :] - points[neighbors]  # (N, k, D)
    d2 = (diff * diff).sum(dim=-1)  # (N, k); column 0 is exactly 0
    sigma2 = torch.sort(d2, dim=1).values[:, sigma_neighbor - 1]
    finfo = torch.finfo(points.dtype)
    floor = (d2.detach().max() * finfo.eps).clamp(min=finfo.tiny)
    sigma2 = torch.maximum(sigma2, floor)
    ratio = d2[:, 1:] / sigma2[:, None]
    if kernel == "quartic":
        ratio = ratio * ratio
    return torch.exp(-ratio)


# hops propagated on the device before the one host check (kNN graphs reach the template in 1-3 hops)
_DEVICE_HOPS = 8


@torch.no_grad()
def reachable_from(
    rows: Tensor, cols: Tensor, weights: Tensor, num_points: int, sources: int, *, threshold: float
) -> Tensor:
    """Which points are joined to a source point by a path of non-negligible edges.

    The edges are taken as undirected; an edge counts when its weight exceeds ``threshold``. Reachability
    is propagated on the edges' device for a few hops first, with one host synchronisation to see whether
    every point was reached (the usual case); only otherwise are the connected components computed
    exactly with SciPy.

    Args:
        rows: ``(E,)`` int64 edge tails.
        cols: ``(E,)`` int64 edge heads.
        weights: ``(E,)`` float edge weights.
        num_points: Number of nodes ``N``.
        sources: The sources are the nodes ``num_points - sources, ..., num_points - 1``.
        threshold: Edges with ``weight <= threshold`` are ignored.

    Returns:
        ``(N,)`` bool tensor on the device of ``rows``; sources are always ``True``.
    """
    return reachability(rows, cols, weights, num_points, sources, threshold=threshold)[0]


@torch.no_grad()
def reachability(
    rows: Tensor, cols: Tensor, weights: Tensor, num_points: int, sources: int, *, threshold: float
) -> tuple[Tensor, bool]:
    """:func:`reachable_from` and whether every point is reachable, from its one host synchronisation.

    Returns:
        ``(reach, everything)``: the ``(N,)`` bool tensor of :func:`reachable_from` and ``reach.all()``
        as a Python bool (known without a further synchronisation).
    """
    keep = weights > threshold
    reach = torch.zeros(num_points, dtype=torch.float32, device=rows.device)
    reach[num_points - sources :] = 1.0
    live = keep.to(torch.float32)
    for _ in range(_DEVICE_HOPS):  # max over incident kept edges: order-independent, so deterministic
        reach = reach.scatter_reduce(0, rows, reach[cols] * live, "amax")
        reach = reach.scatter_reduce(0, cols, reach[rows] * live, "amax")
    if bool(reach.min() > 0):
        return reach > 0, True
    exact = _reachable_scipy(rows, cols, keep, num_points, sources)
    return exact, bool(exact.all())


def _reachable_scipy(rows: Tensor, cols: Tensor, keep: Tensor, num_points: int, sources: int) -> Tensor:
    """Exact weak connected components (SciPy) for graphs the device propagation did not cover."""
    mask = keep.cpu().numpy()
    r, c = rows.cpu().numpy()[mask], cols.cpu().numpy()[mask]
    graph = coo_matrix((np.ones(r.shape[0], dtype=np.int8), (r, c)), shape=(num_points, num_points))
    _, labels = connected_components(graph, directed=True, connection="weak")
    source_labels = np.unique(labels[num_points - sources :])
    return torch.from_numpy(np.isin(labels, source_labels)).to(rows.device)
