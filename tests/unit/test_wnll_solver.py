"""Unit tests of ``wnll_art.wnll.solver.wnll_interpolate`` against an independent SciPy reference."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import spsolve

from wnll_art.wnll import wnll_interpolate

Solver = Literal["auto", "dense", "cg"]
Kernel = Literal["gaussian", "quartic"]
SOLVERS: tuple[Solver, ...] = ("dense", "cg")

# ----------------------------------------------------------------------------------------------
# Independent float64 reference: brute-force distances, scipy.sparse assembly of Eq. 3, spsolve.
# ----------------------------------------------------------------------------------------------


def reference_system(
    xu: np.ndarray,
    xl: np.ndarray,
    yl: np.ndarray,
    n_cls: int,
    k: int,
    s: int,
    kernel: str,
    gamma: float | None,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """A and b of Wang et al. Eq. 3, assembled literally from the matrices W, S = W + W^T."""
    x = np.concatenate([xu, xl]).astype(np.float64)
    n, big_n = xu.shape[0], x.shape[0]
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, -1.0)  # self first
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    np.fill_diagonal(dist, 0.0)
    rows, cols, vals = [], [], []
    for i in range(big_n):
        sigma = dist[i, order[i, s - 1]]
        for j in order[i, 1:]:
            r = dist[i, j] ** 2 / sigma**2
            rows.append(i)
            cols.append(j)
            vals.append(np.exp(-(r**2)) if kernel == "quartic" else np.exp(-r))
    w = sp.csr_matrix((vals, (rows, cols)), shape=(big_n, big_n))
    sym = (w + w.T).tocsr()
    g = 1.0 * xu.shape[0] / xl.shape[0] if gamma is None else gamma
    uu, ll = np.arange(n), np.arange(n, big_n)
    w_lu = w[ll][:, uu]  # (m, n): W_yx, y in L, x in U
    d = np.asarray(sym[uu].sum(axis=1)).ravel() + g * np.asarray(w_lu.sum(axis=0)).ravel()
    a = (sp.diags(d) - sym[uu][:, uu]).tocsr()
    one_hot = np.eye(n_cls)[yl]
    b = (sym[uu][:, ll] + g * w_lu.T) @ one_hot
    return a, np.asarray(b)


def reference_solve(*args: object, **kwargs: object) -> np.ndarray:
    a, b = reference_system(*args, **kwargs)  # type: ignore[arg-type]
    return np.asarray(spsolve(a.tocsc(), b))


def clustered(
    n: int, m: int, d: int, c: int, *, seed: int = 0, dtype: torch.dtype = torch.float64, spread: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(c, d, generator=g, dtype=torch.float64)
    yl = torch.arange(m) % c
    yu = torch.randint(0, c, (n,), generator=g)
    xl = centres[yl] + spread * torch.randn(m, d, generator=g, dtype=torch.float64)
    xu = centres[yu] + spread * torch.randn(n, d, generator=g, dtype=torch.float64)
    return xu.to(dtype), xl.to(dtype), yl, yu


# ----------------------------------------------------------------------------------------------
# Correctness against the reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["dense", "cg"])
@pytest.mark.parametrize(
    ("kernel", "gamma", "k", "s"),
    [("gaussian", None, 15, 8), ("quartic", None, 15, 8), ("gaussian", 3.7, 10, 4), ("quartic", 0.0, 6, 6)],
)
def test_matches_scipy_reference(solver: Solver, kernel: Kernel, gamma: float | None, k: int, s: int) -> None:
    xu, xl, yl, _ = clustered(40, 30, 5, 3, spread=2.0)
    ref = reference_solve(xu.numpy(), xl.numpy(), yl.numpy(), 3, k, s, kernel, gamma)
    u = wnll_interpolate(xu, xl, yl, k=k, sigma_neighbor=s, kernel=kernel, gamma=gamma, solver=solver)
    assert u.shape == (40, 3) and u.dtype == torch.float64
    assert np.abs(u.numpy() - ref).max() <= 1e-6
    # the answer is not trivial: it really varies between points and classes
    assert ref.std(axis=0).min() > 0.05


def test_reference_constants_solve_homogeneous_system() -> None:
    """A 1 = b 1_C: the constant function is a solution, hence rows of u sum to 1."""
    xu, xl, yl, _ = clustered(25, 20, 4, 3)
    a, b = reference_system(xu.numpy(), xl.numpy(), yl.numpy(), 3, 8, 4, "gaussian", None)
    np.testing.assert_allclose(a @ np.ones(25), b.sum(axis=1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_rows_sum_to_one_and_in_unit_interval(solver: Solver) -> None:
    xu, xl, yl, yu = clustered(60, 45, 6, 4)
    u = wnll_interpolate(xu, xl, yl, solver=solver)
    torch.testing.assert_close(u.sum(dim=1), torch.ones(60, dtype=torch.float64), rtol=0, atol=1e-9)
    assert float(u.min()) >= -1e-10 and float(u.max()) <= 1 + 1e-10
    assert float((u.argmax(dim=1) == yu).double().mean()) > 0.9


def test_duplicate_of_template_point_gets_its_class() -> None:
    xu, xl, yl, _ = clustered(30, 40, 5, 4, spread=0.7)
    picks = [3, 10, 17, 22]
    u = wnll_interpolate(torch.cat([xu, xl[picks]]), xl, yl)
    assert u[30:].argmax(dim=1).tolist() == yl[picks].tolist()


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_float32_close_to_float64(solver: Solver) -> None:
    xu, xl, yl, _ = clustered(50, 40, 8, 3)
    u64 = wnll_interpolate(xu, xl, yl, solver=solver)
    u32 = wnll_interpolate(xu.float(), xl.float(), yl, solver=solver)
    assert u32.dtype == torch.float32
    assert float((u32.double() - u64).abs().max()) < 1e-4


def test_single_unlabelled_point_and_empty_batch() -> None:
    xu, xl, yl, _ = clustered(1, 20, 3, 2)
    u = wnll_interpolate(xu, xl, yl, k=5, sigma_neighbor=3)
    ref = reference_solve(xu.numpy(), xl.numpy(), yl.numpy(), 2, 5, 3, "gaussian", None)
    assert u.shape == (1, 2) and np.abs(u.numpy() - ref).max() < 1e-10
    empty = xu[:0].clone().requires_grad_(True)
    out = wnll_interpolate(empty, xl, yl, num_classes=2)
    assert out.shape == (0, 2) and out.dtype == torch.float64
    out.sum().backward()  # connected to the graph, zero gradient
    assert empty.grad is not None and empty.grad.shape == (0, 3)


def test_any_integer_label_dtype() -> None:
    xu, xl, yl, _ = clustered(15, 12, 3, 3)
    u = wnll_interpolate(xu, xl, yl)
    for dt in (torch.uint8, torch.int16, torch.int32):
        assert torch.equal(wnll_interpolate(xu, xl, yl.to(dt)), u)


def test_num_classes_larger_than_max_label_requires_all_classes() -> None:
    xu, xl, yl, _ = clustered(10, 12, 3, 3)
    with pytest.raises(ValueError, match=r"missing class\(es\) \[3, 4\]"):
        wnll_interpolate(xu, xl, yl, num_classes=5)
    with pytest.raises(ValueError, match=r"missing class\(es\) \[1\]"):
        wnll_interpolate(xu, xl, yl.clone().masked_fill(yl == 1, 0))


# ----------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["dense", "cg"])
@pytest.mark.parametrize("kernel", ["gaussian", "quartic"])
def test_gradcheck(solver: Solver, kernel: Kernel) -> None:
    xu, xl, yl, _ = clustered(6, 9, 3, 3, seed=1, spread=1.5)
    xu.requires_grad_(True)
    xl.requires_grad_(True)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return wnll_interpolate(a, b, yl, k=6, sigma_neighbor=3, kernel=kernel, solver=solver, gamma=0.8)

    assert torch.autograd.gradcheck(fn, (xu, xl), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_dense_and_cg_agree_in_value_and_gradient() -> None:
    xu, xl, yl, _ = clustered(70, 50, 6, 4, seed=2, spread=1.5)
    weights = torch.randn(70, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    results = {}
    for solver in SOLVERS:
        a, b = xu.clone().requires_grad_(True), xl.clone().requires_grad_(True)
        u = wnll_interpolate(a, b, yl, solver=solver)
        (u * weights).sum().backward()
        assert a.grad is not None and b.grad is not None
        results[solver] = (u.detach(), a.grad, b.grad)
    for x_dense, x_cg in zip(results["dense"], results["cg"], strict=True):
        assert float((x_dense - x_cg).abs().max()) <= 1e-5
    assert float(results["dense"][1].abs().max()) > 1e-3  # gradients are not trivially zero


def test_auto_picks_dense_for_small_and_cg_for_large_n(monkeypatch: pytest.MonkeyPatch) -> None:
    import wnll_art.wnll.solver as solver_module

    xu, xl, yl, _ = clustered(20, 20, 4, 2)
    assert torch.equal(wnll_interpolate(xu, xl, yl), wnll_interpolate(xu, xl, yl, solver="dense"))
    monkeypatch.setattr(solver_module, "AUTO_DENSE_MAX_N", 19)
    assert torch.equal(wnll_interpolate(xu, xl, yl), wnll_interpolate(xu, xl, yl, solver="cg"))


# ----------------------------------------------------------------------------------------------
# Degenerate cases, warnings, non-mutation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_stranded_duplicates_give_uniform_and_warn(solver: Solver) -> None:
    xu, xl, yl, yu = clustered(30, 30, 4, 3)
    far = torch.full((20, 4), 1e3, dtype=torch.float64)  # 20 > k duplicates far from everything
    with pytest.warns(RuntimeWarning, match="20 unlabelled point"):
        u = wnll_interpolate(torch.cat([xu, far]), xl, yl, k=15, solver=solver)
    assert bool(torch.isfinite(u).all())
    torch.testing.assert_close(u[30:], torch.full((20, 3), 1 / 3, dtype=torch.float64))
    ref = reference_solve(xu.numpy(), xl.numpy(), yl.numpy(), 3, 15, 8, "gaussian", 50 / 30)
    assert np.abs(u[:30].numpy() - ref).max() < 1e-8  # the others are untouched


def test_duplicate_clusters_never_nan_in_float32_and_gradient() -> None:
    xu, xl, yl, _ = clustered(10, 30, 4, 3, dtype=torch.float32)
    dup = xl[:1].repeat(12, 1)  # 12 copies of a template point: sigma = 0 for them
    feats = torch.cat([xu, dup]).requires_grad_(True)
    u = wnll_interpolate(feats, xl, yl, solver="cg")
    u[:, 0].sum().backward()
    assert bool(torch.isfinite(u).all()) and feats.grad is not None and bool(torch.isfinite(feats.grad).all())
    assert u[10:].argmax(dim=1).eq(int(yl[0])).all()


def test_inputs_not_mutated() -> None:
    xu, xl, yl, _ = clustered(20, 15, 3, 3)
    copies = [t.clone() for t in (xu, xl, yl)]
    for solver in SOLVERS:
        a, b = xu.clone().requires_grad_(True), xl.clone().requires_grad_(True)
        wnll_interpolate(a, b, yl, solver=solver).sum().backward()
        wnll_interpolate(xu, xl, yl, solver=solver)
    for t, c in zip((xu, xl, yl), copies, strict=True):
        assert torch.equal(t, c)


def test_cg_non_convergence_warns_with_residual() -> None:
    xu, xl, yl, _ = clustered(40, 30, 5, 3)
    with pytest.warns(RuntimeWarning, match=r"did not converge in max_iter=2 .*relative residual"):
        u = wnll_interpolate(xu, xl, yl, solver="cg", max_iter=2)
    assert bool(torch.isfinite(u).all())


def test_no_warning_in_normal_use() -> None:
    xu, xl, yl, _ = clustered(40, 30, 5, 3, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for solver in SOLVERS:
            a = xu.clone().requires_grad_(True)
            wnll_interpolate(a, xl, yl, solver=solver).sum().backward()


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------

X, XL, YL, _ = clustered(10, 12, 3, 3)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"features": X.numpy()}, TypeError, "features must be a torch.Tensor"),
        ({"features": X.long()}, TypeError, "features must be float32 or float64"),
        ({"features": X.half()}, TypeError, "features must be float32 or float64"),
        ({"features": X[None]}, ValueError, r"features must have shape \(num_points, dim\)"),
        ({"template_features": XL[:, :2]}, ValueError, "same dimension D, got 3 and 2"),
        ({"template_features": XL.float()}, ValueError, "template_features has dtype"),
        ({"features": X.clone().index_fill_(0, torch.tensor([2]), float("nan"))}, ValueError, "NaN"),
        ({"template_features": XL.clone().fill_(float("inf"))}, ValueError, "template_features contains"),
        ({"template_labels": YL.double()}, TypeError, "template_labels must be an integer tensor"),
        ({"template_labels": YL[None]}, ValueError, r"template_labels must have shape \(N,\)"),
        ({"template_labels": YL[:5]}, ValueError, r"one label per template point \(12\), got 5"),
        ({"template_labels": YL - 1}, ValueError, "template_labels must be >= 0"),
        ({"template_features": XL[:0], "template_labels": YL[:0]}, ValueError, "template is empty"),
        ({"num_classes": 2}, ValueError, r"must lie in \[0, 2\)"),
        ({"num_classes": 0}, ValueError, "num_classes must be positive"),
        ({"k": 1}, ValueError, "k must satisfy 2 <= k"),
        ({"k": 22}, ValueError, r"k must satisfy 2 <= k < number of points \(n \+ m = 22\)"),
        ({"k": 5.0}, TypeError, "k must be an int"),
        ({"sigma_neighbor": 1}, ValueError, "sigma_neighbor must satisfy 2 <= sigma_neighbor <= k=15"),
        ({"k": 10, "sigma_neighbor": 11}, ValueError, "sigma_neighbor must satisfy"),
        ({"kernel": "laplace"}, ValueError, "kernel must be one of"),
        ({"solver": "lu"}, ValueError, "solver must be one of"),
        ({"gamma": -1.0}, ValueError, "gamma must be finite and >= 0"),
        ({"gamma": "1"}, TypeError, "gamma must be a real number"),
        ({"tol": 0.0}, ValueError, "tol must be finite and > 0"),
        ({"max_iter": 0}, ValueError, "max_iter must be positive"),
    ],
)
def test_bad_inputs(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    args: dict[str, object] = {"features": X, "template_features": XL, "template_labels": YL}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        wnll_interpolate(**args)  # type: ignore[arg-type]


def test_meta_device_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="template_features is on meta"):
        wnll_interpolate(X, XL.to("meta"), YL)
    with pytest.raises(ValueError, match="template_labels is on meta"):
        wnll_interpolate(X, XL, YL.to("meta"))


@pytest.mark.parametrize("density", [0.02, 0.2])
def test_reachability_on_device_matches_scipy(density: float) -> None:
    """The device propagation (with SciPy only as fallback) agrees with exact connected components."""
    from wnll_art.wnll.graph import _reachable_scipy, reachable_from

    gen = torch.Generator().manual_seed(3)
    n_pts, n_edges = 60, 120
    rows = torch.randint(0, n_pts, (n_edges,), generator=gen)
    cols = torch.randint(0, n_pts, (n_edges,), generator=gen)
    weights = (torch.rand(n_edges, generator=gen) < density * 5).double()
    expect = _reachable_scipy(rows, cols, weights > 0.5, n_pts, 5)
    got = reachable_from(rows, cols, weights, n_pts, 5, threshold=0.5)
    assert torch.equal(got, expect) and bool(got[-5:].all())
    chain = torch.arange(n_pts - 1)  # a path 0-1-...-59: 54 hops from the sources, beyond the device hops
    far = reachable_from(chain, chain + 1, torch.ones(n_pts - 1), n_pts, 1, threshold=0.5)
    assert bool(far.all())


# ----------------------------------------------------------------------------------------------
# Devices: the auto switch, the CG operator's layout, the same numbers on WNLL_ART_TEST_DEVICE
# ----------------------------------------------------------------------------------------------


def test_auto_solver_is_device_aware(monkeypatch: pytest.MonkeyPatch) -> None:
    import wnll_art.wnll.solver as solver_module

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert solver_module.auto_solver(256, cpu) == "dense" and solver_module.auto_solver(257, cpu) == "cg"
    limit = solver_module.AUTO_DENSE_MAX_N_CUDA
    assert solver_module.auto_solver(limit, cuda) == "dense" and solver_module.auto_solver(limit + 1, cuda) == "cg"
    monkeypatch.setattr(solver_module, "AUTO_DENSE_MAX_N_CUDA", 10)
    assert solver_module.auto_solver(11, cuda) == "cg"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_csr_and_coo_operators_give_the_same_cg_solve(dtype: torch.dtype, device: torch.device) -> None:
    """CSR (the CUDA layout) and COO (the CPU one) hold the same operator and give the same CG solution."""
    from wnll_art.wnll.graph import knn_indices, knn_weights
    from wnll_art.wnll.solver import _assemble
    from wnll_art.wnll.sparse import conjugate_gradients, operator_layout, symmetric_operator

    xu, xl, yl, _ = clustered(60, 40, 5, 3, dtype=dtype)
    points = torch.cat([xu, xl]).to(device)
    nb = knn_indices(points, 10)
    diag, rows, cols, vals, rhs = _assemble(nb, knn_weights(points, nb, sigma_neighbor=5), yl.to(device), 60, 3, 1.5)
    coo = symmetric_operator(diag, rows, cols, vals, layout="coo")
    csr = symmetric_operator(diag, rows, cols, vals, layout="csr")
    assert csr.layout == torch.sparse_csr and coo.layout == torch.sparse_coo
    assert operator_layout(device) == ("csr" if device.type == "cuda" else "coo")
    torch.testing.assert_close(csr.to_dense(), coo.to_dense(), rtol=0, atol=0)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    u_coo, u_csr = (conjugate_gradients(diag, op, rhs, tol=tol, max_iter=500, stage="forward") for op in (coo, csr))
    torch.testing.assert_close(u_csr, u_coo, rtol=0, atol=10 * tol)


@pytest.mark.parametrize("solver", SOLVERS)
def test_same_values_and_gradients_on_the_test_device(solver: Solver, device: torch.device) -> None:
    """The solve on ``$WNLL_ART_TEST_DEVICE`` matches the CPU one (values and gradients, float64)."""
    xu, xl, yl, _ = clustered(50, 30, 4, 3)
    results = []
    for dev in (torch.device("cpu"), device):
        # detach first: on the CPU .to() returns the tensor itself, and requires_grad_ would then make every
        # later .to(device) copy a non-leaf (no .grad)
        a, b = xu.detach().to(dev).requires_grad_(True), xl.detach().to(dev).requires_grad_(True)
        u = wnll_interpolate(a, b, yl.to(dev), k=8, sigma_neighbor=4, solver=solver)
        (u * torch.arange(3.0, dtype=u.dtype, device=dev)).sum().backward()
        assert u.device == dev and a.grad is not None and b.grad is not None
        results.append([t.detach().cpu() for t in (u, a.grad, b.grad)])
    for cpu_t, dev_t in zip(*results, strict=True):
        torch.testing.assert_close(dev_t, cpu_t, rtol=1e-7, atol=1e-9)


def test_a_numerically_singular_dense_system_is_solved_with_a_ridge_and_a_warning() -> None:
    """Two unlabelled points joined to each other and (in this dtype) to nothing else: ``[[1, -1], [-1, 1]]`` is
    singular; Cholesky and LU fail, and the solve (which once raised ``LinAlgError`` mid-training) must still
    return finite label functions, with a warning."""
    from wnll_art.wnll.solver import _dense_solve

    diag = torch.tensor([1.0, 1.0], requires_grad=True)
    rows, cols, vals = torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0])
    rhs = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    with pytest.warns(RuntimeWarning, match="numerically singular"):
        u = _dense_solve(diag, rows, cols, vals, rhs)
    assert torch.isfinite(u).all()
    u.sum().backward()  # still differentiable
    assert diag.grad is not None and torch.isfinite(diag.grad).all()
