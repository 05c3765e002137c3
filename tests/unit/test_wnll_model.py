"""WNLLNet on a tiny backbone: coupling, caching, gradients, bad inputs (fast)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from wnll_art.models.resnet import CifarResNet
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.solver import wnll_interpolate
from wnll_art.wnll.template import balanced_template


class TinyBackbone(nn.Module):
    """features: mean-pool to 4x4, flatten (48) -> 8; linear 8 -> 3."""

    feature_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(48, 8)
        self.linear = nn.Linear(8, 3)
        self.calls = 0
        self.batch_sizes: list[int] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        return torch.tanh(self.proj(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)))


def _tiny(model: WNLLNet) -> TinyBackbone:
    backbone = model.backbone
    assert isinstance(backbone, TinyBackbone)
    return backbone


def _make(dtype: torch.dtype = torch.float32, **kwargs: object) -> WNLLNet:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(60, 3, 8, 8, generator=gen, dtype=dtype)
    labels = torch.arange(60) % 3
    torch.manual_seed(0)
    backbone = TinyBackbone().to(dtype)
    opts = {"k": 6, "sigma_neighbor": 4, "wnll_batch_size": 10, **kwargs}
    return WNLLNet(backbone, images, labels, **opts).eval()  # type: ignore[arg-type]


def test_transductive_equals_chunked_solve() -> None:
    model = _make()
    x = torch.rand(25, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = model(x)
    assert out.shape == (25, 3) and bool((out <= 0).all())
    with torch.no_grad():
        feats, templ = model.embed(x), model.embed(model.template_images)
    expect = torch.cat(
        [
            wnll_interpolate(feats[i : i + 10], templ, model.template_labels, k=6, sigma_neighbor=4)
            for i in (0, 10, 20)
        ]
    )
    torch.testing.assert_close(out, torch.log(expect + 1e-6))
    # coupling is real: the same image in a different chunk gets a different output
    assert not torch.allclose(model(x[:5]), out[:5])


def test_inductive_output_independent_of_batch() -> None:
    model = _make(coupling="inductive")
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(12, 3, 8, 8, generator=gen)
    full = model(x)
    assert torch.equal(model(torch.cat([x[:3], torch.rand(9, 3, 8, 8, generator=gen)]))[:3], full[:3])
    perm = torch.randperm(12, generator=gen)
    torch.testing.assert_close(model(x[perm]), full[perm], rtol=0, atol=0)
    # the WNLL step is per-input: bitwise identical given the features
    with torch.no_grad():
        feats, templ = model.embed(x), model.template_features()
    u_all = model.interpolate(feats, templ)
    for i in (0, 7):
        assert torch.equal(model.interpolate(feats[i : i + 1], templ), u_all[i : i + 1])
        assert torch.equal(model(x[i : i + 1]), full[i : i + 1])  # end to end, bitwise


def test_cache_survives_train_false_and_refreshes_on_change() -> None:
    model = _make()
    backbone = _tiny(model)
    x = torch.rand(4, 3, 8, 8)
    model(x)
    calls = backbone.calls
    model.train(False)
    model(x)
    assert backbone.calls == calls + 1  # inputs only, template reused
    before = model(x)
    with torch.no_grad():
        backbone.proj.weight.mul_(1.5)  # in-place change, as an optimizer step
    after = model(x)
    assert backbone.calls == calls + 2 + 6 + 1  # template re-encoded once (6 chunks of 10)
    assert not torch.allclose(before, after)
    model.load_state_dict({k: v.clone() for k, v in _make().state_dict().items()})
    torch.testing.assert_close(model(x), before)


def test_train_mode_recomputes_template_with_grad() -> None:
    model = _make().train()
    out = model(torch.rand(5, 3, 8, 8))
    (-out[:, 0].mean()).backward()
    grad = _tiny(model).proj.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_exact_gradient_matches_finite_differences() -> None:
    model = _make(torch.float64)
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: model(z), (x,), eps=1e-6, atol=1e-5)


def test_surrogate_gradient_is_linear_head_straight_through() -> None:
    exact, surrogate = _make(), _make(gradient="surrogate")
    x = torch.rand(6, 3, 8, 8).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    out = surrogate(x)
    torch.testing.assert_close(out, exact(x))
    (g,) = torch.autograd.grad(nn.functional.nll_loss(out, y), x)
    log_p = nn.functional.log_softmax(surrogate.linear_logits(x), 1)
    (g_ref,) = torch.autograd.grad(nn.functional.nll_loss(log_p, y), x)
    torch.testing.assert_close(g, g_ref)


def test_buffer_block() -> None:
    model = _make(buffer_dim=16)
    assert model.embed(torch.rand(2, 3, 8, 8)).shape == (2, 16)
    assert model.linear_head is model.buffer_head and model.linear_logits(torch.rand(2, 3, 8, 8)).shape == (
        2,
        3,
    )
    assert model.settings()["buffer_dim"] == 16


def test_empty_batch_one_and_no_mutation() -> None:
    model = _make()
    assert model(torch.empty(0, 3, 8, 8)).shape == (0, 3)
    x = torch.rand(1, 3, 8, 8)
    copy = x.clone()
    assert model(x).shape == (1, 3)
    assert torch.equal(x, copy)


def test_bad_inputs() -> None:
    model = _make()
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="channels-last"):
        model(torch.rand(2, 8, 8, 3))
    with pytest.raises(ValueError, match="classes \\[2\\]"):
        WNLLNet(TinyBackbone(), torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="coupling"):
        _make(coupling="batch")
    for option, value in (("gradient", "bpda"), ("log_floor", 1.0), ("score", "logits")):
        with pytest.raises(ValueError, match=option):
            _make(**{option: value})
    with pytest.raises(ValueError, match="3 rows, template_labels 4"):
        WNLLNet(TinyBackbone(), torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(TypeError, match="features"):
        WNLLNet(nn.Linear(2, 2), torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2]))


def test_uint8_template_and_resnet_backbone() -> None:
    images = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8)
    model = WNLLNet(CifarResNet(1, 3), images, torch.arange(30) % 3, k=5, sigma_neighbor=3).eval()
    assert float(model.template_images.max()) <= 1.0
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 3)


def test_balanced_template_reproducible_and_balanced() -> None:
    labels = torch.arange(100) % 4
    images = torch.arange(100).view(100, 1)
    a = balanced_template(images, labels, 5, generator=torch.Generator().manual_seed(7))
    b = balanced_template(images, labels, 5, generator=torch.Generator().manual_seed(7))
    c = balanced_template(images, labels, 5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert torch.bincount(a[1]).tolist() == [5, 5, 5, 5]
    assert torch.equal(labels[a[0].flatten()], a[1])  # images stay paired with their labels
    with pytest.raises(ValueError, match="fewer than"):
        balanced_template(images, labels, 26, generator=torch.Generator())
    with pytest.raises(TypeError, match="Generator"):
        balanced_template(images, labels, 2, generator=7)  # type: ignore[arg-type]


@contextlib.contextmanager
def _host_reads() -> Iterator[dict[str, int]]:
    """Counts Python-level host reads of tensors (``bool``, ``int``, ``float``, ``item``, ``tolist``): each
    is a device synchronisation on a GPU."""
    counts = {"reads": 0}
    names = ("__bool__", "__int__", "__float__", "item", "tolist")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def counted(fn: Callable[..., object]) -> Callable[..., object]:
        def wrapper(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            counts["reads"] += 1
            return fn(self, *args, **kwargs)

        return wrapper

    for n in names:
        setattr(torch.Tensor, n, counted(saved[n]))
    try:
        yield counts
    finally:
        for n, fn in saved.items():
            setattr(torch.Tensor, n, fn)


def test_forward_host_reads_are_few() -> None:
    """Per forward: 2 reads checking the images, then per WNLL chunk 3 (finiteness of the features, graph
    reachability, Cholesky status); the template labels are checked once per version, not per call."""
    model = _make()
    x = torch.rand(30, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = model(x)
    with _host_reads() as counts:
        out = model(x)
    assert counts["reads"] <= 2 + 3 * 3, counts
    assert torch.equal(out, expected)
    with torch.no_grad():
        model.template_labels[0] = 7  # out of range: changing the buffer makes the model check it again
    with pytest.raises(ValueError, match="template_labels"):
        model(x)


def test_model_on_the_test_device_matches_cpu(device: torch.device) -> None:
    """A copy moved to ``$WNLL_ART_TEST_DEVICE`` gives the CPU model's outputs and input gradients; the
    original stays where it was (a test never moves a shared model, only a copy)."""
    import copy

    model = _make(torch.float64)
    moved = copy.deepcopy(model).to(device)
    x = torch.rand(25, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    results = []
    for m, dev in ((model, torch.device("cpu")), (moved, device)):
        xd = x.detach().to(dev).requires_grad_(True)  # a leaf on each device (see the solver test)
        out = m(xd)
        out[:, 0].sum().backward()
        assert out.device == dev and xd.grad is not None
        results.append((out.detach().cpu(), xd.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-6, atol=1e-9)
    assert all(p.device.type == "cpu" for p in model.parameters())
