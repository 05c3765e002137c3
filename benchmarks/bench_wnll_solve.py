"""Benchmark: ``wnll_interpolate`` (PyTorch) vs a SciPy reference WNLL solver, side by side.

References:
    Z. Shi, S. Osher, W. Zhu, "Weighted nonlocal Laplacian on interpolation from sparse data",
    J. Sci. Comput. 73 (2017) 1164-1177.
    B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
    Minimization", arXiv:1809.08516 (2018), Eq. 3.

Both sides do the whole job on the same points: exact kNN (reference: brute-force BLAS distances and
``argpartition``, faster than ``cKDTree`` at D = 64), weights, assembly of
``A u = b`` and the solve. The SciPy reference solves with SuperLU (``spsolve``, compared with our
dense path) or with Jacobi-preconditioned ``scipy.sparse.linalg.cg`` column by column at the same
relative tolerance (compared with our CG path). Times are forward only (SciPy has no gradient); our
forward + backward time is printed for information. Ratio = ours / SciPy (< 1: we are faster).
Torch and (through ``threadpoolctl``, when installed) NumPy's BLAS use ``--threads`` threads.

Run: ``python benchmarks/bench_wnll_solve.py [--n 500 --m 500 --dim 64 --classes 10 --repeats 7] [--device cuda]``
(with ``--device cuda`` ours runs on the GPU, synchronised around each timed call; SciPy stays on the CPU).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from _common import add_device_option, timed
from scipy.sparse.linalg import cg, spsolve

from wnll_art.wnll import wnll_interpolate

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def clustered_points(
    n: int, m: int, dim: int, classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random clustered float64 features: ``(n, dim)`` unlabelled, ``(m, dim)`` template, labels."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((classes, dim))
    yl = np.arange(m) % classes
    xl = centres[yl] + 2.0 * rng.standard_normal((m, dim))
    xu = centres[rng.integers(0, classes, n)] + 2.0 * rng.standard_normal((n, dim))
    return xu, xl, yl


def scipy_wnll(
    xu: np.ndarray, xl: np.ndarray, yl: np.ndarray, classes: int, method: str, dtype: type, tol: float
) -> np.ndarray:
    """SciPy WNLL (Gaussian kernel, k = 15, sigma from the 8th neighbour, gamma = n/m)."""
    k, s = 15, 8
    x: np.ndarray = np.concatenate([xu, xl]).astype(dtype)
    n, big_n = xu.shape[0], x.shape[0]
    sq = (x * x).sum(axis=1)
    gram = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(gram, -np.inf)  # self first
    idx = np.argpartition(gram, k - 1, axis=1)[:, :k]
    d2 = ((x[:, None, :] - x[idx]) ** 2).sum(axis=-1)
    order = np.argsort(d2, axis=1)
    idx, d2 = np.take_along_axis(idx, order, 1), np.take_along_axis(d2, order, 1)
    sigma2 = np.maximum(d2[:, s - 1], np.finfo(dtype).tiny)
    w_vals = np.exp(-d2[:, 1:] / sigma2[:, None]).astype(dtype)
    rows = np.repeat(np.arange(big_n), k - 1)
    w = sp.csr_matrix((w_vals.ravel(), (rows, idx[:, 1:].ravel())), shape=(big_n, big_n))
    sym = (w + w.T).tocsr()
    gamma = n / xl.shape[0]
    w_lu = w[n:, :n]
    d = np.asarray(sym[:n].sum(axis=1)).ravel() + gamma * np.asarray(w_lu.sum(axis=0)).ravel()
    a = (sp.diags(d) - sym[:n, :n]).tocsc().astype(dtype)
    b = np.asarray((sym[:n, n:] + gamma * w_lu.T) @ np.eye(classes, dtype=dtype)[yl])
    if method == "spsolve":
        return np.asarray(spsolve(a, b))
    precond = sp.diags(1.0 / d).astype(dtype)
    cols = [cg(a, b[:, c], rtol=tol, atol=0.0, M=precond, maxiter=1000)[0] for c in range(classes)]
    return np.stack(cols, axis=1)


def median_ms(fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs (after one warm-up), the device
    synchronised around each run."""
    fn()
    return 1e3 * statistics.median(timed(fn, device) for _ in range(repeats))


def bench_row(args: argparse.Namespace, path: str, dtype: torch.dtype, data: tuple) -> str:
    """Times one (path, dtype) pair on both sides; returns the formatted table row."""
    xu_np, xl_np, yl_np = data
    xu, xl = torch.from_numpy(xu_np).to(args.device, dtype), torch.from_numpy(xl_np).to(args.device, dtype)
    yl = torch.from_numpy(yl_np).to(args.device)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    ref_method = "spsolve" if path == "dense" else "cg"

    def ours() -> torch.Tensor:
        return wnll_interpolate(xu, xl, yl, solver=path)  # type: ignore[arg-type]

    def ours_fb() -> None:
        a = xu.clone().requires_grad_(True)
        wnll_interpolate(a, xl, yl, solver=path)[:, 0].sum().backward()  # type: ignore[arg-type]

    def ref() -> np.ndarray:
        return scipy_wnll(xu_np, xl_np, yl_np, args.classes, ref_method, np_dtype, TOL[dtype])

    t_ours, t_fb = (median_ms(f, args.repeats, args.device) for f in (ours, ours_fb))
    t_ref = median_ms(ref, args.repeats)
    diff = float(np.abs(ours().double().cpu().numpy() - ref()).max())
    return (
        f"{path:>5} {str(dtype).replace('torch.', ''):>7} {ref_method:>8} {t_ours:9.1f} {t_ref:9.1f} "
        f"{t_ours / t_ref:6.2f} {t_fb:10.1f} {diff:9.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="unlabelled points")
    parser.add_argument("--m", type=int, default=500, help="template points")
    parser.add_argument("--dim", type=int, default=64, help="feature dimension D")
    parser.add_argument("--classes", type=int, default=10, help="number of classes C")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per cell (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (SciPy is single-threaded)")
    parser.add_argument("--seed", type=int, default=0)
    add_device_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass
    data = clustered_points(args.n, args.m, args.dim, args.classes, args.seed)
    print(
        f"WNLL solve: n={args.n} unlabelled + m={args.m} template, D={args.dim}, C={args.classes}, "
        f"k=15, sigma_neighbor=8, torch threads={torch.get_num_threads()}, median of {args.repeats}, "
        f"ours on {args.device}"
    )
    print(f"{'path':>5} {'dtype':>7} {'scipy':>8} {'ours ms':>9} {'scipy ms':>9} {'ratio':>6} "
          f"{'ours f+b':>10} {'max|diff|':>9}")  # fmt: skip
    for path in ("dense", "cg"):
        for dtype in (torch.float32, torch.float64):
            print(bench_row(args, path, dtype, data), flush=True)


if __name__ == "__main__":
    main()
