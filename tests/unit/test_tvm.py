"""Unit tests of TVM purification (Guo et al. 2018): objectives, solver, gradients, ART adapter.

BPDA gradients after Athalye et al. 2018. Fast: random tensors, tiny images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wnll_art.tvm import (
    algorithm,
    art_objective,
    bernoulli_mask,
    isotropic_objective,
    total_variation_minimize,
)
from wnll_art.tvm.operators import diffs_adjoint, forward_diffs, neumann_solver, prox_pnorm


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 4, c: int = 3, h: int = 12, w: int = 10, seed: int = 0, dtype=torch.float64):
    return torch.rand((n, c, h, w), generator=_gen(seed), dtype=dtype)


def _mask(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    return (torch.rand(x.shape, generator=_gen(seed), dtype=torch.float64) < 0.3).to(x.dtype)


@pytest.mark.parametrize("norm", [1, 2, 3])
@pytest.mark.parametrize("lamb", [0.5, 0.07])
def test_art_objective_equals_art_loss_func(norm: int, lamb: float) -> None:
    art_vm = pytest.importorskip("art.defences.preprocessor.variance_minimization")
    x = _images(2, 3, 7, 9)  # H != W catches an axis mix-up
    z = x + 0.1 * torch.randn(x.shape, generator=_gen(5), dtype=x.dtype)
    m = _mask(x)
    ours = art_objective(z, x, m, norm=norm, lamb=lamb)
    for i in range(2):
        for c in range(3):
            ref = art_vm.TotalVarMin._loss_func(
                z[i, c].numpy().flatten(), x[i, c].numpy(), m[i, c].numpy().astype(int), norm, lamb
            )
            assert float(ours[i, c]) == pytest.approx(ref, rel=1e-12)


def test_neumann_solver_is_exact() -> None:
    r = _images(2, 3, 8, 6)
    z = neumann_solver(8, 6, kappa=3.7, dtype=r.dtype, device=r.device).solve(r)
    dv, dh = forward_diffs(z)
    torch.testing.assert_close(z + 3.7 * diffs_adjoint(dv, dh), r, rtol=0, atol=1e-12)


def test_diffs_adjoint_is_the_adjoint() -> None:
    z, gv, gh = _images(1, 1, 5, 4), torch.randn(1, 1, 4, 4).double(), torch.randn(1, 1, 5, 3).double()
    dv, dh = forward_diffs(z)
    lhs = (dv * gv).sum() + (dh * gh).sum()
    assert float(lhs) == pytest.approx(float((z * diffs_adjoint(gv, gh)).sum()), rel=1e-12)


@pytest.mark.parametrize("p", [3, 4])
def test_numerical_pnorm_prox_is_optimal(p: int) -> None:
    v, t = torch.randn(6, 5, generator=_gen(2), dtype=torch.float64), 0.4
    u = prox_pnorm(v, t, p, -1)

    def f(w: torch.Tensor) -> torch.Tensor:
        return t * torch.linalg.vector_norm(w, p, dim=-1) + 0.5 * ((w - v) ** 2).sum(-1)

    for _ in range(20):  # no random perturbation does better
        assert bool((f(u) <= f(u + 1e-3 * torch.randn(v.shape, dtype=v.dtype)) + 1e-12).all())


@pytest.mark.parametrize("objective", ["art", "isotropic"])
def test_objective_decreases_below_input(objective: str) -> None:
    x = _images()
    m = _mask(x)
    z = total_variation_minimize(x, mask=m, objective=objective, preset="art-default")  # type: ignore[arg-type]
    f = art_objective if objective == "art" else isotropic_objective
    assert bool((f(z, x, m) < f(x, x, m)).all())
    z_conv = total_variation_minimize(x, mask=m, objective=objective, preset="art-100")  # type: ignore[arg-type]
    assert float(f(z_conv, x, m).sum()) < float(f(z, x, m).sum())


@pytest.mark.parametrize("norm", [1, 3])
def test_other_norms_decrease_art_objective(norm: int) -> None:
    x = _images(2, 3, 8, 8)
    m = _mask(x)
    z = total_variation_minimize(x, mask=m, norm=norm, max_iter=10)
    assert bool((art_objective(z, x, m, norm=norm) < art_objective(x, x, m, norm=norm)).all())


def test_same_seed_same_output_and_masks_follow_prob() -> None:
    x = _images(8, 3, 16, 16, dtype=torch.float32)
    a = total_variation_minimize(x, generator=_gen(3))
    b = total_variation_minimize(x, generator=_gen(3))
    c = total_variation_minimize(x, generator=_gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_inputs_are_not_mutated() -> None:
    from wnll_art.adapters.art_tvm import TotalVarMinimization

    x, m = _images(), _mask(_images())
    x0, m0 = x.clone(), m.clone()
    total_variation_minimize(x, mask=m, gradient="unrolled", clip_values=(0.0, 1.0))
    assert torch.equal(x, x0) and torch.equal(m, m0)
    xn = x.numpy().copy()
    TotalVarMinimization(seed=0)(xn)
    assert np.array_equal(xn, x0.numpy())


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_result_independent_of_chunking(chunk_size: int) -> None:
    x = _images(7)
    m = _mask(x)
    whole = total_variation_minimize(x, mask=m, chunk_size=7)
    torch.testing.assert_close(total_variation_minimize(x, mask=m, chunk_size=chunk_size), whole)
    # and of the batch split: images purified alone give the same result
    torch.testing.assert_close(total_variation_minimize(x[2:3], mask=m[2:3]), whole[2:3])


def test_masks_independent_of_chunking() -> None:
    x = _images(5, dtype=torch.float32)
    a = total_variation_minimize(x, generator=_gen(9), chunk_size=2)
    b = total_variation_minimize(x, generator=_gen(9), chunk_size=5)
    torch.testing.assert_close(a, b)


def test_outputs_within_clip_values() -> None:
    x = _images() * 0.8 + 0.1
    z = total_variation_minimize(x, generator=_gen(), clip_values=(0.1, 0.9), max_iter=20)
    assert float(z.min()) >= 0.1 and float(z.max()) <= 0.9


def test_art_objective_scale_equivariant() -> None:
    x, m = _images(), _mask(_images())
    z1 = total_variation_minimize(x, mask=m, clip_values=(0.0, 1.0))
    z255 = total_variation_minimize(255 * x, mask=m, clip_values=(0.0, 255.0))
    torch.testing.assert_close(z255, 255 * z1)


def test_bpda_backward_is_identity() -> None:
    x = _images().requires_grad_(True)
    w = torch.randn(x.shape, generator=_gen(7), dtype=x.dtype)
    z = total_variation_minimize(x, generator=_gen(), gradient="bpda", clip_values=(0.0, 1.0))
    (z * w).sum().backward()
    assert torch.equal(x.grad, w)
    with torch.no_grad():
        assert torch.equal(z, total_variation_minimize(x, generator=_gen(), clip_values=(0.0, 1.0)))


def test_unrolled_gradient_matches_finite_differences() -> None:
    x = (_images(1, 1, 5, 6) * 0.6 + 0.2).requires_grad_(True)
    m = _mask(x.detach(), seed=3)

    def fn(inp: torch.Tensor) -> torch.Tensor:
        return total_variation_minimize(inp, mask=m, gradient="unrolled", max_iter=4, lamb=0.3)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, rtol=1e-4)


# sum(w * z), or sum(w * dL/dx) for L = sum(w * z) with unrolled gradients (lamb 0.3, 5 iterations), recorded
# in float64 from the implementation before the tvm package was consolidated into algorithm.py / operators.py
_RECORDED = [
    ({"norm": 1, "max_iter": 10}, 6.457375177888391),
    ({"norm": 2, "max_iter": 10}, 6.952470439898928),
    ({"norm": 3, "max_iter": 4}, 7.090864355680278),
    ({"objective": "isotropic", "max_iter": 10}, 6.568332783232249),
    ({"lamb": 0.03, "max_iter": 20, "clip_values": (0.0, 1.0)}, 9.4531464207637),
    ({"norm": 2, "gradient": "unrolled"}, 38.761797045906505),
    ({"norm": 1, "gradient": "unrolled"}, 38.61709154712457),
    ({"objective": "isotropic", "gradient": "unrolled"}, 188.63846645176244),
]


@pytest.mark.parametrize(("kwargs", "expected"), _RECORDED)
def test_matches_recorded_reference_numbers(kwargs: dict, expected: float) -> None:
    x = _images(2, 3, 7, 9).requires_grad_(True)
    m, w = _mask(x.detach()), torch.randn(x.shape, generator=_gen(7), dtype=x.dtype)
    if kwargs.get("gradient") == "unrolled":
        (total_variation_minimize(x, mask=m, max_iter=5, lamb=0.3, **kwargs) * w).sum().backward()
        value = x.grad
    else:
        value = total_variation_minimize(x, mask=m, **kwargs)
    assert float((value.detach() * w).sum()) == pytest.approx(expected, rel=1e-10)


def test_generator_masks_are_bernoulli_masks_keeping_prob() -> None:
    x = _images(8, 3, 16, 16, dtype=torch.float32)
    m = bernoulli_mask(tuple(x.shape), 0.3, generator=_gen(3), device="cpu")
    assert m.dtype == torch.uint8 and abs(float(m.float().mean()) - 0.3) < 0.02
    assert torch.equal(total_variation_minimize(x, generator=_gen(3)), total_variation_minimize(x, mask=m))


def test_compile_wraps_the_same_iterations(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def no_op_compile(fn, **kwargs):  # "compiles" to the same Python function, counting the block calls
        def run(*args):
            calls.append(fn.keywords["n"])
            return fn(*args)

        return run

    monkeypatch.setattr(algorithm, "_COMPILED", {})
    monkeypatch.setattr(algorithm.torch, "compile", no_op_compile)
    x, m = _images(), _mask(_images())
    z = total_variation_minimize(x, mask=m, max_iter=12, compile=True)
    assert calls == [5, 5, 2] and torch.equal(z, total_variation_minimize(x, mask=m, max_iter=12))


def test_invalid_options_raise() -> None:
    x = _images()
    with pytest.raises(ValueError, match="max_iter or preset"):
        total_variation_minimize(x, max_iter=3, preset="converged")
    with pytest.raises(ValueError, match="preset"):
        total_variation_minimize(x, preset="fast")
    with pytest.raises(ValueError, match="prob"):
        total_variation_minimize(x, prob=1.5)
    with pytest.raises(ValueError, match="objective"):
        total_variation_minimize(x, objective="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask"):
        total_variation_minimize(x, mask=torch.ones(1, 3, 12, 10))
    with pytest.raises(ValueError, match="mask or generator"):
        total_variation_minimize(x, mask=_mask(x), generator=_gen())
    with pytest.raises(TypeError, match="floating"):
        total_variation_minimize((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="lie in"):
        total_variation_minimize(x + 1, clip_values=(0.0, 1.0))


# --- ART adapter ---------------------------------------------------------------------------------


def test_adapter_numpy_roundtrip_layouts_and_dtypes() -> None:
    from wnll_art.adapters.art_tvm import TotalVarMinimization

    x = _images(3, dtype=torch.float32).numpy()
    for dtype in (np.float32, np.float64, np.float16):
        z, y = TotalVarMinimization(seed=1, device_type="cpu")(x.astype(dtype), y=np.arange(3))
        assert y is not None and z.dtype == dtype and z.shape == x.shape and np.array_equal(y, np.arange(3))
    nchw, _ = TotalVarMinimization(seed=1)(x)
    nhwc, _ = TotalVarMinimization(seed=1, channels_first=False)(x.transpose(0, 2, 3, 1).copy())
    np.testing.assert_allclose(nhwc.transpose(0, 3, 1, 2), nchw, atol=1e-5)  # float32, strided layout
    one, _ = TotalVarMinimization(seed=1)(x[:1])
    assert one.shape == (1, 3, 12, 10)


def test_adapter_errors() -> None:
    from wnll_art.adapters.art_tvm import TotalVarMinimization

    nchw = np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)
    nhwc = nchw.transpose(0, 2, 3, 1).copy()
    with pytest.raises(ValueError, match="channels_first=False"):
        TotalVarMinimization()(nhwc)
    with pytest.raises(ValueError, match="channels_first=True"):
        TotalVarMinimization(channels_first=False)(nchw)
    with pytest.raises(TypeError, match="floating"):
        TotalVarMinimization()((nchw * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="lie in"):
        TotalVarMinimization(clip_values=(0.0, 0.5))(nchw)
    bad = nchw.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TotalVarMinimization()(bad)
    with pytest.raises(ValueError, match="shape"):
        TotalVarMinimization()(nchw[0])
    with pytest.raises(ValueError, match="shape"):
        TotalVarMinimization(channels_first=False)(nhwc[0])
    with pytest.raises(TypeError, match="eot_samples"):
        TotalVarMinimization(eot_samples=2)  # type: ignore[call-arg]  # EOT lives in the defence module, never in the preprocessor
    with pytest.raises(TypeError, match="seed"):
        TotalVarMinimization(seed="abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prob"):
        TotalVarMinimization(prob=-0.1)


def test_adapter_computes_the_purifier_function_without_tiling() -> None:
    """The ART preprocessor and the defence's TVMPurifier: same settings + seed -> the same images."""
    from wnll_art.adapters.art_tvm import TotalVarMinimization
    from wnll_art.tvm.module import TVMPurifier
    from wnll_art.tvm.settings import TVMSettings

    x, y = _images(3, dtype=torch.float32), torch.tensor([4, 7, 1])
    settings = TVMSettings(prob=0.4, lamb=0.1, iterations=5)
    art = TotalVarMinimization(settings=settings, clip_values=(0.0, 1.0), seed=3)
    z, y_out = art.forward(x.clone().requires_grad_(True), y)  # a loss-gradient call: never tiled
    assert y_out is not None and z.shape == x.shape and torch.equal(y_out, y)
    torch.testing.assert_close(z.detach(), TVMPurifier(settings, seed=3)(x), rtol=0, atol=0)
    assert art.settings == settings and (art.prob, art.max_iter) == (0.4, 5)
    art.set_params(prob=0.6)  # ART's set_params writes through to the one settings object
    assert art.settings == settings.replace(prob=0.6)
    with pytest.raises(ValueError, match="prob"):
        art.set_params(prob=2.0)


def test_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(fn, **kwargs):  # compiles "fine", fails on the first call like a bad backend
        def run(*args):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(algorithm, "_COMPILED", {})
    monkeypatch.setattr(algorithm.torch, "compile", broken_compile)
    x, m = _images(), _mask(_images())
    with pytest.warns(UserWarning, match="runs eagerly"):
        z = total_variation_minimize(x, mask=m, compile=True)
    torch.testing.assert_close(z, total_variation_minimize(x, mask=m))


def test_adapter_estimate_gradient_follows_gradient_mode() -> None:
    from wnll_art.adapters.art_tvm import TotalVarMinimization

    x = _images(2, 3, 8, 8, dtype=torch.float32).numpy()
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    bpda = TotalVarMinimization(seed=0, device_type="cpu").estimate_gradient(x, g)
    np.testing.assert_array_equal(bpda, g)  # BPDA: identity
    unrolled = TotalVarMinimization(seed=0, gradient="unrolled", device_type="cpu").estimate_gradient(x, g)
    assert unrolled.shape == x.shape and np.isfinite(unrolled).all() and not np.allclose(unrolled, g)


def test_tvm_on_the_test_device_matches_cpu(device: torch.device) -> None:
    """Same mask, same result on ``$WNLL_ART_TEST_DEVICE`` (float64); the purifier draws its masks from one
    CPU generator, so the same seed gives the same purification on any device."""
    from wnll_art.tvm.module import TVMPurifier
    from wnll_art.tvm.settings import TVMSettings

    x, m = _images(), _mask(_images())
    cpu = total_variation_minimize(x, mask=m, max_iter=10)
    dev = total_variation_minimize(x.to(device), mask=m.to(device), max_iter=10)
    assert dev.device == device
    torch.testing.assert_close(dev.cpu(), cpu, rtol=1e-9, atol=1e-9)
    settings = TVMSettings(prob=0.5, lamb=0.1, iterations=5)
    a = TVMPurifier(settings, seed=3)(x.float())
    b = TVMPurifier(settings, seed=3).to(device)(x.float().to(device))
    torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
