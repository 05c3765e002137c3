"""ART attacks against WNLLClassifier and the softmax baseline on a real slice (integration tier)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from art.attacks.evasion import (
    AutoAttack,
    AutoProjectedGradientDescent,
    BasicIterativeMethod,
    CarliniL2Method,
    FastGradientMethod,
    ProjectedGradientDescent,
)

from wnll_art.adapters.art_estimator import WNLLClassifier
from wnll_art.defence import Defence
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet

pytestmark = pytest.mark.integration
EPS = 8 / 255
BATCH = 16

ATTACKS: dict[str, Callable[[WNLLClassifier], object]] = {
    "fgsm": lambda c: FastGradientMethod(c, eps=EPS, batch_size=BATCH),
    "bim": lambda c: BasicIterativeMethod(
        c, eps=EPS, eps_step=EPS / 4, max_iter=10, batch_size=BATCH, verbose=False
    ),
    "pgd": lambda c: ProjectedGradientDescent(
        c, eps=EPS, eps_step=EPS / 4, max_iter=10, batch_size=BATCH, num_random_init=1, verbose=False
    ),
    "cw_l2": lambda c: CarliniL2Method(
        c,
        confidence=0.0,
        max_iter=5,
        binary_search_steps=2,
        learning_rate=0.05,
        initial_const=1.0,
        max_halving=1,  # ART's minimum line search: its default (5 + 5 predictions a step) made this test 10x slower
        max_doubling=1,
        batch_size=BATCH,
        verbose=False,
    ),
    "autoattack": lambda c: AutoAttack(
        c,
        eps=EPS,
        eps_step=EPS / 4,
        batch_size=BATCH,
        attacks=[
            AutoProjectedGradientDescent(
                c,
                eps=EPS,
                eps_step=EPS / 4,
                max_iter=10,
                batch_size=BATCH,
                loss_type=loss,
                nb_random_init=1,
                verbose=False,
            )
            for loss in ("cross_entropy", "difference_logits_ratio")
        ],
    ),
}


def _accuracy(clf: WNLLClassifier, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x).argmax(1) == y).mean())


@pytest.fixture(scope="module")
def data(clean_slice: tuple[torch.Tensor, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    x, y = clean_slice
    return x.numpy(), y.numpy()


def test_predictions_equal_module(wnll_model: WNLLNet, data: tuple[np.ndarray, np.ndarray]) -> None:
    clf = WNLLClassifier(wnll_model)
    x, _ = data
    with torch.no_grad():
        ref = wnll_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(clf.predict(x, batch_size=3), ref, rtol=0, atol=1e-6)
    assert clf.nb_classes == 10 and clf.clip_values is not None and tuple(clf.clip_values) == (0.0, 1.0)
    settings = clf.settings()
    assert settings["observed_batches"] == {"predict:16": 1}  # batch_size=3 overridden: transductive
    assert settings["WNLLNet"]["coupling"] == "transductive"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_lowers_softmax_accuracy_and_runs_on_wnll(
    name: str, pretrained_resnet56: torch.nn.Module, wnll_model: WNLLNet, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = data
    softmax = WNLLClassifier(pretrained_resnet56)
    clean = _accuracy(softmax, x, y)
    x_adv = ATTACKS[name](softmax).generate(x, y=y)  # type: ignore[attr-defined]
    assert _accuracy(softmax, x_adv, y) < clean, f"{name} did not hurt the softmax model"
    # AutoAttack and ART's C&W call the estimator on subsets of the batch (the small-batch warning's case, tested
    # in test_adapter_views); here the attacks only have to run
    wnll = WNLLClassifier(wnll_model, warn_small_batches=False)
    x_adv_w = ATTACKS[name](wnll).generate(x, y=y)  # type: ignore[attr-defined]
    if name == "autoattack":  # what the README's table says: single-image predict calls
        assert min(n for _, n in wnll.observed_batches) < BATCH, wnll.observed_batches
    assert x_adv_w.shape == x.shape and np.isfinite(x_adv_w).all()
    assert x_adv_w.min() >= 0.0 and x_adv_w.max() <= 1.0
    if name != "cw_l2":
        assert np.abs(x_adv_w - x).max() <= EPS + 1e-6
    if name in ("bim", "pgd", "autoattack"):  # exact gradients through the WNLL solve work
        assert _accuracy(wnll, x_adv_w, y) < _accuracy(wnll, x, y)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_runs_through_the_defence_with_tvm(
    name: str, wnll_model: WNLLNet, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """The same ART attacks against the defence module WNLL + TVM (BPDA gradient, EOT over 2 masks inside
    the module, as attacks that rebuild a PyTorchClassifier from ``estimator.model`` also see)."""
    x, y = data
    defence = Defence(wnll_model, tvm=TVMSettings(eot_samples=2), seed=0).eval()
    clf = WNLLClassifier(defence, warn_small_batches=False)  # subsets of AutoAttack / C&W: see above
    x_adv = ATTACKS[name](clf).generate(x, y=y)  # type: ignore[attr-defined]
    assert x_adv.shape == x.shape and np.isfinite(x_adv).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    if name != "cw_l2":
        assert np.abs(x_adv - x).max() <= EPS + 1e-6
    if name in ("bim", "pgd"):
        assert np.abs(x_adv - x).max() > EPS / 2  # the BPDA gradient is not zero: the attack moved
