"""TVM purification (Guo et al. 2018) against and inside ART, on real CIFAR-10 test images.

BPDA / EOT gradients after Athalye et al. 2018.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from wnll_art.tvm import PRESETS, art_objective, total_variation_minimize

pytestmark = pytest.mark.integration

N_IMAGES = 100


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """On a busy machine OpenBLAS' spinning threads slow ART's L-BFGS-B by orders of magnitude."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only a speed matter
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def test_art_default_preset_beats_art_totalvarmin_with_identical_masks(
    test_set: tuple[torch.Tensor, torch.Tensor],
) -> None:
    from art.defences.preprocessor import TotalVarMin

    x = test_set[0][:N_IMAGES].double() / 255.0
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.3).double()
    x_nhwc = x.permute(0, 2, 3, 1).numpy().astype(np.float32)  # ART's TotalVarMin wants NHWC
    m_nhwc = mask.permute(0, 2, 3, 1).numpy().astype(int)
    art = TotalVarMin()  # defaults: prob 0.3, norm 2, lamb 0.5, L-BFGS-B, max_iter 10
    with _single_threaded_blas():
        z_art = np.stack([art._minimize(x_nhwc[i], m_nhwc[i]) for i in range(N_IMAGES)])
    z_art_t = torch.from_numpy(z_art).permute(0, 3, 1, 2).double()
    z_ours = total_variation_minimize(x.float(), mask=mask.float(), preset="art-default").double()
    assert PRESETS["art-default"] == 3
    f_art = art_objective(z_art_t, x, mask).sum(1)  # equal to ART's _loss_func (unit-tested)
    f_ours = art_objective(z_ours, x, mask).sum(1)
    win_rate = float((f_ours <= f_art).double().mean())
    assert win_rate >= 0.99, f"ours <= ART on only {win_rate:.1%} of images"
    assert float(f_ours.mean()) < float(f_art.mean())


def _tiny_classifier(tvm: object) -> object:
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 10),
    )
    return PyTorchClassifier(
        model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(3, 32, 32),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        preprocessing_defences=[tvm],
        device_type="cpu",
    )


@pytest.mark.parametrize("gradient", ["bpda", "unrolled"])
def test_inside_pytorch_classifier(test_set: tuple[torch.Tensor, torch.Tensor], gradient: str) -> None:
    from wnll_art.adapters.art_tvm import TotalVarMinimization

    images, labels = test_set
    x = (images[:8].float() / 255.0).numpy()
    y = np.eye(10, dtype=np.float32)[labels[:8].numpy()]  # one-hot: ART's tensor path argmaxes labels
    tvm = TotalVarMinimization(clip_values=(0.0, 1.0), seed=0, gradient=gradient, device_type="cpu")
    clf = _tiny_classifier(tvm)
    assert clf.all_framework_preprocessing  # the all-PyTorch path: forward() with autograd
    preds = clf.predict(x)
    assert preds.shape == (8, 10) and np.isfinite(preds).all()
    grad = clf.loss_gradient(x, y)
    assert grad.shape == x.shape and grad.dtype == np.float32
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0
    class_grad = clf.class_gradient(x, label=3)
    assert class_grad.shape == (8, 1, 3, 32, 32) and np.isfinite(class_grad).all()


def test_bpda_gradient_equals_gradient_at_purified_input(test_set: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Under BPDA the classifier's loss gradient is the undefended model's gradient at tvm(x)."""
    from wnll_art.adapters.art_tvm import TotalVarMinimization

    images, labels = test_set
    x = (images[:4].float() / 255.0).numpy()
    y = np.eye(10, dtype=np.float32)[labels[:4].numpy()]
    clf = _tiny_classifier(TotalVarMinimization(clip_values=(0.0, 1.0), seed=5, device_type="cpu"))
    grad = clf.loss_gradient(x, y)
    z, _ = TotalVarMinimization(clip_values=(0.0, 1.0), seed=5, device_type="cpu")(x)
    z_t = torch.from_numpy(z).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(clf.model(z_t), labels[:4])
    loss.backward()
    np.testing.assert_allclose(grad, z_t.grad.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")
def test_compiled_solver_matches_eager(test_set: tuple[torch.Tensor, torch.Tensor]) -> None:
    x = test_set[0][:4].float() / 255.0
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.3
    eager = total_variation_minimize(x, mask=mask, preset="art-default")
    compiled = total_variation_minimize(x, mask=mask, preset="art-default", compile=True)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_preprocessor_with_unit_clip_values_refuses_0_255_data() -> None:
    """The README's TotalVarMinimization(clip_values=(0, 1), seed=0): 0-255 images raise a ValueError (a
    regression guard: this already held when the README's defaults were corrected)."""
    from wnll_art.adapters.art_tvm import TotalVarMinimization

    tvm = TotalVarMinimization(clip_values=(0.0, 1.0), seed=0, max_iter=2)
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    assert tvm(x)[0].shape == x.shape
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\].*255"):
        tvm(255 * x)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\].*255"):
        tvm.forward(torch.from_numpy(255 * x))
