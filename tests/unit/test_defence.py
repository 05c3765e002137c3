"""The defence module: one TVM, one EOT (whole-batch draws), attacker views, settings (fast, synthetic)."""

from __future__ import annotations

import pytest
import torch
from test_wnll_model import TinyBackbone  # the tiny backbone of the WNLLNet tests (same folder)
from torch import nn

from wnll_art.defence import Defence
from wnll_art.eot import EOT, eot_forward
from wnll_art.tvm.module import TVMPurifier
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet

SETTINGS = TVMSettings(prob=0.5, lamb=0.1, iterations=3, eot_samples=3)


def _wnll(**kwargs: object) -> WNLLNet:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    images, labels = torch.rand(30, 3, 8, 8, generator=gen), torch.arange(30) % 3
    opts = {"k": 6, "sigma_neighbor": 4, "wnll_batch_size": 8, **kwargs}
    return WNLLNet(TinyBackbone(), images, labels, **opts).eval()  # type: ignore[arg-type]


def _x(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_prediction_is_one_draw_of_purifier_then_classifier() -> None:
    wnll = _wnll()
    defence = Defence(wnll, tvm=SETTINGS, seed=4).eval()
    with torch.no_grad():
        out = defence(_x())
        expect = wnll(TVMPurifier(SETTINGS, seed=4)(_x()))
    torch.testing.assert_close(out, expect, rtol=0, atol=0)
    assert defence.num_classes == 3 and defence.randomised


def test_eot_gradient_is_the_mean_over_whole_batch_draws() -> None:
    """EOT averages draws, each one call on the whole batch (a transductive solve never sees tiled copies)."""
    wnll = _wnll()
    defence = Defence(wnll, tvm=SETTINGS, seed=7).eval()
    x = _x().requires_grad_(True)
    wnll.template_features()  # cached in eval mode: only batch passes are counted below
    backbone = wnll.backbone
    assert isinstance(backbone, TinyBackbone)
    backbone.batch_sizes.clear()
    defence(x).sum().backward()
    assert backbone.batch_sizes == [8, 8, 8]  # three draws of the batch of 8, never one batch of 24
    purifier = TVMPurifier(SETTINGS, seed=7)  # the same masks, drawn one by one
    draws = []
    for _ in range(3):
        xi = _x().requires_grad_(True)
        wnll(purifier(xi)).sum().backward()
        assert xi.grad is not None
        draws.append(xi.grad)
    torch.testing.assert_close(x.grad, torch.stack(draws).mean(0), rtol=1e-5, atol=1e-7)


def test_eot_forward_rule_and_module() -> None:
    counter: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        counter.append(x.shape[0])
        return x.flatten(1)[:, :2] + torch.randn(x.shape[0], 2)

    x = _x(4)
    eot_forward(fn, x, 5)
    assert counter == [4]  # no gradient wanted: one draw
    eot_forward(fn, x.clone().requires_grad_(True), 5)
    assert counter == [4] * 6
    with torch.no_grad():
        eot_forward(fn, x.clone().requires_grad_(True), 5)
    assert len(counter) == 7
    with pytest.raises(ValueError, match="samples"):
        EOT(nn.Identity(), samples=0)


def test_views_share_parameters_and_generator() -> None:
    wnll = _wnll()
    defence = Defence(wnll, tvm=SETTINGS, seed=0).eval()
    view = defence.view(gradient="surrogate", tvm="unrolled", eot_samples=2)
    assert not view.training and wnll.gradient == "exact"  # the victim keeps its own setting
    assert view.classifier.gradient == "surrogate" and view.purifier.tvm.gradient == "unrolled"  # type: ignore[union-attr]
    assert view.eot_samples == 2 and view.classifier.backbone is wnll.backbone
    assert {id(p) for p in view.parameters()} == {id(p) for p in defence.parameters()}
    oblivious = defence.view(tvm="oblivious")
    assert not oblivious.randomised
    with torch.no_grad():
        torch.testing.assert_close(oblivious(_x()), wnll(_x()))
    with torch.no_grad():  # a view draws as its victim does from the same seed
        with view.drawing(5):
            a = view.purifier(_x())  # type: ignore[misc]
        with defence.drawing(5):
            b = defence.purifier(_x())  # type: ignore[misc]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_settings_record_tvm_whole_and_softmax_defence() -> None:
    defence = Defence(_wnll(), tvm=SETTINGS, seed=2)
    record = defence.settings()
    assert record["tvm"] == SETTINGS.to_dict() and record["purifier"]["type"] == "TVMPurifier"
    with defence.drawing(9), torch.no_grad():  # per-batch draws must not change what a result records
        defence(_x())
        assert defence.settings() == record
    assert defence.settings() == record
    assert "seed" not in record["purifier"] and "fixed_masks" not in record["purifier"]
    assert TVMSettings.from_dict(record["tvm"]) == SETTINGS
    assert record["classifier"] == "wnll" and record["wnll"]["coupling"] == "transductive"
    plain = Defence(TinyBackbone())  # a softmax network: classes from its `linear` head
    assert plain.settings()["tvm"] is None and not plain.randomised
    with pytest.raises(TypeError, match="num_classes"):
        Defence(nn.Identity())
    with pytest.raises(ValueError, match="not both"):
        Defence(_wnll(), tvm=SETTINGS, purifier=nn.Identity())


def test_linear_classifier_without_num_classes_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match="num_classes"):
        Defence(nn.Linear(4, 3))


@pytest.mark.parametrize(
    ("field", "value"),
    [("prob", 1.5), ("prob", float("nan")), ("lamb", -1.0), ("lamb", float("inf")), ("norm", 0),
     ("iterations", 0), ("eot_samples", 0), ("objective", "l1"), ("gradient", "exact")],
)  # fmt: skip
def test_tvm_settings_refuse_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TVMSettings(**{field: value})  # type: ignore[arg-type]


def test_tvm_settings_round_trip_and_presets() -> None:
    s = TVMSettings.from_preset("art-default", prob=0.3, lamb=0.5)
    assert s.iterations == 3 and TVMSettings.from_dict(s.to_dict()) == s
    assert TVMSettings() == TVMSettings(prob=0.5, lamb=0.03, norm=2, objective="art", iterations=20)
    with pytest.raises(ValueError, match="unknown TVM settings"):
        TVMSettings.from_dict({"prob": 0.5, "sigma": 1})
    with pytest.raises(ValueError, match="preset"):
        TVMSettings.from_preset("fast")


def test_defence_on_the_test_device_matches_cpu(device: torch.device) -> None:
    """TVM masks come from one CPU generator: the defended prediction on ``$WNLL_ART_TEST_DEVICE`` is the
    CPU one (same draw), and the EOT gradient reaches the input there."""
    settings = TVMSettings(prob=0.5, lamb=0.1, iterations=3, eot_samples=2)
    outs = []
    for dev in (torch.device("cpu"), device):
        defence = Defence(_wnll(), tvm=settings, seed=4).to(dev).eval()
        with torch.no_grad():
            outs.append(defence(_x().to(dev)).cpu())
        x = _x().to(dev).requires_grad_(True)
        defence.view(eot_samples=2)(x)[:, 0].sum().backward()
        assert x.grad is not None and x.grad.device == dev and bool(x.grad.abs().sum() > 0)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ load_defence on careless input
@pytest.fixture
def nothing_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading weights or data fails the test: load_defence must refuse its arguments before either."""
    import wnll_art.data
    import wnll_art.zoo
    import wnll_art.zoo_trained

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("weights or data were loaded before the arguments were checked")

    monkeypatch.setattr(wnll_art.data, "load_cifar10", refuse)
    monkeypatch.setattr(wnll_art.zoo, "load_pretrained", refuse)
    monkeypatch.setattr(wnll_art.zoo_trained, "load_trained", refuse)


def _absent_cuda() -> str:
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda:7"


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("absent", "cuda"),
        ("gpu", "device='gpu' is not a torch device"),
        ("meta", "device='meta': only cpu and cuda"),
        ("cuda:x", "not a torch device"),
    ],
)
def test_load_defence_refuses_bad_devices_first(device: str, match: str, nothing_loaded: None) -> None:
    from wnll_art.defence import load_defence

    name = _absent_cuda() if device == "absent" else device
    with pytest.raises(ValueError, match=match):
        load_defence("resnet56", device=name)
    with pytest.raises(TypeError, match="device must be"):
        load_defence("resnet56", device=7)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"template_size": "500"}, TypeError, "template_size must be an int"),
        ({"template_size": 0}, ValueError, "template_size must be positive"),
        ({"template_size": -10}, ValueError, "template_size must be positive"),
        ({"template_size": 500, "head": "softmax"}, ValueError, "template_size has no effect.*softmax"),
        (
            {"template_size": 100, "name": "resnet56-wnll"},
            ValueError,
            "template_size has no effect.*resnet56-wnll",
        ),
    ],
)
def test_load_defence_refuses_bad_template_sizes(
    kwargs: dict[str, object], error: type[Exception], match: str, nothing_loaded: None
) -> None:
    from wnll_art.defence import load_defence

    with pytest.raises(error, match=match):
        load_defence(**kwargs)  # type: ignore[arg-type]


def test_load_classifier_checks_its_arguments_before_loading_anything() -> None:
    """The factory every job's victims come from refuses what load_defence refuses (a misspelt head once
    silently gave the softmax network), before any weights or data are read."""
    from wnll_art.defence import load_classifier

    with pytest.raises(ValueError, match="head must be 'wnll' or 'softmax'"):
        load_classifier("resnet56", head="sofmax", weights="/nonexistent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="template_size has no effect"):
        load_classifier("resnet56", head="softmax", template_size=100, weights="/nonexistent")


def test_defence_takes_its_classifiers_mode() -> None:
    """A Defence around an eval-mode classifier is in eval mode, so restoring its mode with ``train(mode)`` after an
    attack leaves batch norm on its running statistics (a Defence starting in training mode switched it)."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    net.num_classes = 10  # type: ignore[assignment]
    net(torch.rand(2, 3, 8, 8))
    net.eval()
    defence = Defence(net)
    mode = defence.training
    defence.eval()
    defence.train(mode)
    assert not defence.training and not net[1].training
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(defence(x), net(x))
    net.train()
    assert Defence(net).training  # a training-mode one stays so
