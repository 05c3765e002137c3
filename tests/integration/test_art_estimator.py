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
def model(tiny_wnll: WNLLNet) -> WNLLNet:
    return tiny_wnll


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


def _plain_model() -> nn.Module:
    """A model without input checks of its own (only the estimator can refuse 0-255 data)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)).eval()


def test_fit_points_to_wnll_art_train(model: WNLLNet) -> None:
    """fit (and hence ART's AdversarialTrainer) is refused with the remedy, and trains nothing."""
    from art.attacks.evasion import FastGradientMethod
    from art.defences.trainer import AdversarialTrainer

    clf = WNLLClassifier(model, warn_small_batches=False)  # the trainer's FGSM takes half a batch: deliberate
    x = np.random.default_rng(3).random((8, 3, 32, 32), dtype=np.float32)
    y = np.eye(4, dtype=np.float32)[np.arange(8) % 4]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NotImplementedError, match="wnll-art train"):
        clf.fit(x, y, nb_epochs=1)
    trainer = AdversarialTrainer(clf, FastGradientMethod(clf, eps=0.01), ratio=0.5)
    with pytest.raises(NotImplementedError, match="wnll-art train"):
        trainer.fit(x, y, nb_epochs=1, batch_size=8)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model.training


@pytest.mark.parametrize("start", ["eval", "train"])
def test_art_calls_restore_the_module_mode(model: WNLLNet, start: str) -> None:
    """predict / loss_gradient / class_gradient / compute_loss leave every sub-module in the mode it was in."""
    clf = WNLLClassifier(model)
    x = np.random.default_rng(4).random((8, 3, 32, 32), dtype=np.float32)
    y = np.eye(4, dtype=np.float32)[np.arange(8) % 4]
    state = {k: v.clone() for k, v in model.state_dict().items()}  # training_mode=True moves BN statistics
    model.train(start == "train")
    try:
        modes = [m.training for m in model.modules()]
        for training_mode in (False, True):
            clf.predict(x, training_mode=training_mode)
            assert [m.training for m in model.modules()] == modes, f"predict(training_mode={training_mode})"
            clf.loss_gradient(x, y, training_mode=training_mode)
            assert [m.training for m in model.modules()] == modes, "loss_gradient"
            clf.class_gradient(x, label=0, training_mode=training_mode)
            assert [m.training for m in model.modules()] == modes, "class_gradient"
        clf.compute_loss(x, y)
        assert [m.training for m in model.modules()] == modes, "compute_loss"
    finally:
        model.eval()
        model.load_state_dict(state)


def test_nb_classes_must_match_the_model(model: WNLLNet) -> None:
    with pytest.raises(ValueError, match="nb_classes=11.*4 classes"):
        WNLLClassifier(model, nb_classes=11)
    assert WNLLClassifier(model, nb_classes=4).nb_classes == 4


def test_data_outside_the_clip_values_is_refused() -> None:
    """0-255 images given to an estimator whose clip_values say [0, 1]: a ValueError naming the remedy."""
    clf = WNLLClassifier(_plain_model(), nb_classes=4)
    x = np.random.default_rng(5).random((4, 3, 32, 32), dtype=np.float32)
    y = np.eye(4, dtype=np.float32)[np.arange(4)]
    for call in (
        lambda v: clf.predict(v),
        lambda v: clf.loss_gradient(v, y),
        lambda v: clf.class_gradient(v, label=0),
    ):
        with pytest.raises(ValueError, match=r"clip_values \[0.0, 1.0\].*255"):
            call(255 * x)
        with pytest.raises(ValueError, match="clip_values"):
            call(torch.from_numpy(x - 0.5))
    assert clf.predict(np.clip(x + 1e-6, 0, 1 + 1e-6)).shape == (4, 4)  # attack round-off is accepted
    raw = WNLLClassifier(_plain_model(), nb_classes=4, clip_values=(0.0, 255.0))
    assert raw.predict(255 * x).shape == (4, 4)
    unclipped = WNLLClassifier(_plain_model(), nb_classes=4, clip_values=None)
    assert unclipped.predict(torch.from_numpy(255 * x)).shape == (4, 4)
