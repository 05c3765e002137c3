"""``score=`` views and the small-batch warning of the ART / Foolbox adapters (integration tier)."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch

from wnll_art.adapters.art_estimator import WNLLClassifier
from wnll_art.adapters.foolbox_model import to_foolbox
from wnll_art.defence import Defence, score_view
from wnll_art.models.resnet import CifarResNet
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet

pytestmark = pytest.mark.integration
FLOOR = math.log(1e-6)  # the deployed "log" score's floor


@pytest.fixture(scope="module")
def tiny(tiny_wnll: WNLLNet) -> WNLLNet:
    return tiny_wnll


def _ours(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "wnll_batch_size" in str(w.message)]


# ----------------------------------------------------------------------------------------------- score views
def test_art_score_views(wnll_model: WNLLNet, clean_slice: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = clean_slice[0].numpy(), clean_slice[1].numpy()
    onehot = np.eye(10, dtype=np.float32)[y]
    log, log64, smooth = (WNLLClassifier(wnll_model, score=s) for s in (None, "log64", "smooth"))
    p_log, p_64, p_smooth = log.predict(x), log64.predict(x), smooth.predict(x)
    # the deployed score sits on its floor log(1e-6); the float64 view goes far below it, same arg-max
    assert np.isclose(p_log.min(1), FLOOR, atol=1e-3).all()
    assert (p_64.min(1) < FLOOR - 20).all()
    assert (p_64.argmax(1) == p_log.argmax(1)).all()
    # "smooth": the deployed values, other gradients
    np.testing.assert_array_equal(p_smooth, p_log)
    g_log, g_smooth = log.loss_gradient(x, onehot), smooth.loss_gradient(x, onehot)
    assert np.abs(g_smooth - g_log).max() > 1e-3 * np.abs(g_log).max()
    # views share the parameters; the model itself keeps its score
    assert wnll_model.score == "log" and log.model is wnll_model
    assert log64.model.backbone is wnll_model.backbone and log64.model.score == "log64"


def test_foolbox_score_views(wnll_model: WNLLNet, clean_slice: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = clean_slice
    s_log, s_64 = to_foolbox(wnll_model)(x), to_foolbox(wnll_model, score="log64")(x)
    assert torch.isclose(s_log.min(1).values, torch.tensor(FLOOR), atol=1e-3).all()
    assert (s_64.min(1).values < FLOOR - 20).all()
    assert torch.equal(s_64.argmax(1), s_log.argmax(1)) and wnll_model.score == "log"
    defence = Defence(wnll_model, tvm=TVMSettings(), seed=0).eval()  # a Defence gets its own view
    view = score_view(defence, "log64")  # what to_foolbox / WNLLClassifier wrap for a Defence
    assert isinstance(view, Defence) and view.wnll is not None and view.wnll.score == "log64"
    assert (
        view.wnll.backbone is wnll_model.backbone and view.purifier is defence.purifier and not view.training
    )
    assert defence.wnll is not None and defence.wnll.score == "log"


@pytest.mark.parametrize("score", ["log32", "LOG", 1, ""])
def test_bad_score_is_refused(tiny: WNLLNet, score: object) -> None:
    with pytest.raises(ValueError, match="score"):
        WNLLClassifier(tiny, score=score)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score"):
        to_foolbox(copy.copy(tiny), score=score)  # type: ignore[arg-type]


def test_a_wnll_score_on_a_softmax_model_is_refused() -> None:
    with pytest.raises(ValueError, match="score='log64'"):
        WNLLClassifier(CifarResNet(1, 4), score="log64")
    with pytest.raises(ValueError, match="score='smooth'"):
        to_foolbox(CifarResNet(1, 4), score="smooth")
    assert WNLLClassifier(CifarResNet(1, 4), score="log").nb_classes == 4  # what it computes anyway


# ---------------------------------------------------------------------------------------- small-batch warning
def test_art_small_batch_warns_once(tiny: WNLLNet) -> None:
    x = np.random.default_rng(0).random((20, 3, 32, 32), dtype=np.float32)
    onehot = np.eye(4, dtype=np.float32)[np.arange(3) % 4]
    clf = WNLLClassifier(tiny)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.predict(x[:3])
        clf.predict(x[:1])
        clf.loss_gradient(x[:3], onehot)
        clf.class_gradient(x[:3], label=0)
    (message,) = _ours(caught)
    assert "wnll_batch_size=8" in message and "coupling='transductive'" in message
    assert "batch_size >= 8" in message and "coupling='inductive'" in message


def test_art_full_batches_do_not_warn(tiny: WNLLNet) -> None:
    x = np.random.default_rng(0).random((20, 3, 32, 32), dtype=np.float32)
    inductive = copy.copy(tiny)
    inductive.coupling = "inductive"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = WNLLClassifier(tiny)
        clf.predict(x)  # 8 + 8 + a last chunk of 4: the model's declared setting
        clf.predict(x[:8], batch_size=2)  # predict always feeds batches of wnll_batch_size
        clf.loss_gradient(x[:8], np.eye(4, dtype=np.float32)[np.arange(8) % 4])
        WNLLClassifier(tiny, warn_small_batches=False).predict(x[:3])
        WNLLClassifier(inductive).predict(x[:3])
        WNLLClassifier(CifarResNet(1, 4)).predict(x[:3])
    assert _ours(caught) == []
    with pytest.raises(TypeError, match="warn_small_batches"):
        WNLLClassifier(tiny, warn_small_batches="no")  # type: ignore[arg-type]


def test_foolbox_small_batch_warns_once(
    wnll_model: WNLLNet, clean_slice: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = clean_slice  # wnll_model's WNLL batch is 16, the slice's size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full = to_foolbox(wnll_model)
        full(x)
        to_foolbox(wnll_model, warn_small_batches=False)(x[:4])
        assert _ours(caught) == []
        small = to_foolbox(wnll_model)
        small(x[:4])
        small(x[:1])
    (message,) = _ours(caught)
    assert message.startswith("to_foolbox:") and "wnll_batch_size=16" in message
