"""WNLLClassifier contract on a tiny model (integration tier, fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wnll_art.adapters.art_estimator import WNLLClassifier
from wnll_art.models.resnet import CifarResNet
from wnll_art.wnll.model import WNLLNet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model() -> WNLLNet:
    torch.manual_seed(0)
    images = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return WNLLNet(
        CifarResNet(1, 4), images, torch.arange(40) % 4, k=6, sigma_neighbor=3, wnll_batch_size=8
    ).eval()


def test_defaults(model: WNLLNet) -> None:
    clf = WNLLClassifier(model)
    assert clf.nb_classes == 4 and tuple(clf.clip_values) == (0.0, 1.0) and clf.channels_first
    assert clf.input_shape == (3, 32, 32) and isinstance(clf._loss, nn.CrossEntropyLoss)
    assert clf.wnll_batch_size == 8 and clf.transductive


def test_predict_batches_are_the_models(model: WNLLNet) -> None:
    clf = WNLLClassifier(model)
    x = np.random.default_rng(0).random((20, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = torch.cat([model(torch.from_numpy(x[i : i + 8])) for i in (0, 8, 16)]).numpy()
    np.testing.assert_allclose(clf.predict(x, batch_size=5), expected, atol=1e-6)
    assert dict(clf.observed_batches) == {("predict", 8): 2, ("predict", 4): 1}


def test_loss_gradient_is_autograd_and_params_restored(model: WNLLNet) -> None:
    clf = WNLLClassifier(model)
    x = np.random.default_rng(1).random((8, 3, 32, 32), dtype=np.float32)
    y = np.arange(8) % 4
    flags = [p.requires_grad for p in model.parameters()]
    grad = clf.loss_gradient(x, np.eye(4, dtype=np.float32)[y])  # ART passes one-hot labels
    assert [p.requires_grad for p in model.parameters()] == flags
    xt = torch.from_numpy(x).requires_grad_(True)
    (ref,) = torch.autograd.grad(nn.functional.cross_entropy(model(xt), torch.from_numpy(y)), xt)
    np.testing.assert_allclose(grad, ref.numpy(), rtol=1e-4, atol=1e-7)
    assert np.abs(grad).sum() > 0
    assert clf.observed_batches[("gradient", 8)] == 1


def test_wrapped_model_and_plain_model(model: WNLLNet) -> None:
    wrapped = WNLLClassifier(nn.Sequential(nn.Identity(), model))
    assert wrapped.nb_classes == 4 and wrapped.wnll_batch_size == 8
    assert wrapped.settings()["WNLLNet"]["coupling"] == "transductive"
    plain = WNLLClassifier(CifarResNet(1, 10))
    assert plain.nb_classes == 10 and plain.wnll_batch_size is None and not plain.transductive
    with pytest.raises(TypeError, match="num_classes"):
        WNLLClassifier(nn.Linear(3, 3))
    with pytest.raises(TypeError, match="nn.Module"):
        WNLLClassifier("model")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_predict_casts_other_float_dtypes(model: WNLLNet, dtype: type) -> None:
    clf = WNLLClassifier(model)
    x32 = np.random.default_rng(2).random((8, 3, 32, 32), dtype=np.float32)
    x = x32.astype(dtype)
    before = x.copy()
    out = clf.predict(x)
    assert out.dtype == np.float32 and x.dtype == dtype and np.array_equal(x, before)
    np.testing.assert_allclose(out, clf.predict(x.astype(np.float32)), atol=1e-6)
    grad = clf.loss_gradient(x, np.eye(4, dtype=np.float32)[np.arange(8) % 4])
    assert grad.shape == x.shape and np.isfinite(grad).all()


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 3, 16, 16), (2, 3, 1, 1)])
def test_predict_refuses_other_image_sizes(model: WNLLNet, shape: tuple[int, ...]) -> None:
    for clf in (WNLLClassifier(model), WNLLClassifier(CifarResNet(1, 10))):
        with pytest.raises(ValueError, match=rf"\(N, 3, 32, 32\).*{shape}"):
            clf.predict(np.zeros(shape, dtype=np.float32))


def test_input_shape_comes_from_the_model_and_bad_inputs_refused(model: WNLLNet) -> None:
    with pytest.raises(ValueError, match="disagrees"):
        WNLLClassifier(model, input_shape=(3, 16, 16))
    clf = WNLLClassifier(model)
    empty = clf.predict(np.zeros((0, 3, 32, 32), dtype=np.float32))
    assert empty.shape == (0, 4) and empty.dtype == np.float32
    with pytest.raises(TypeError, match="uint8"):
        clf.predict(np.zeros((2, 3, 32, 32), dtype=np.uint8))
