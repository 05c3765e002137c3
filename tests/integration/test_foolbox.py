"""Foolbox attacks against `to_foolbox(...)` on a real slice (integration tier)."""

from __future__ import annotations

import foolbox as fb
import pytest
import torch

from wnll_art.adapters.foolbox_model import foolbox_accuracy, to_foolbox
from wnll_art.defence import Defence
from wnll_art.tvm.module import TVMPurifier
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet

pytestmark = pytest.mark.integration
EPS = 8 / 255

ATTACKS = {
    "fgsm": (fb.attacks.FGSM(), EPS),
    "linf_pgd": (fb.attacks.LinfPGD(steps=10, rel_stepsize=0.1), EPS),
    "l2_cw": (
        fb.attacks.L2CarliniWagnerAttack(binary_search_steps=2, steps=20, stepsize=0.01, initial_const=1.0),
        1.0,
    ),
}


def test_wrapper_predictions_equal_module(
    wnll_model: WNLLNet, clean_slice: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = clean_slice
    fmodel = to_foolbox(wnll_model)
    assert fmodel.bounds == (0.0, 1.0)
    assert not any(p.requires_grad for p in wnll_model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(fmodel(x), wnll_model(x))
    expected = float((wnll_model(x).argmax(1) == y).float().mean())
    assert foolbox_accuracy(fmodel, x, y, batch_size=16) == pytest.approx(expected)
    with pytest.raises(ValueError, match="eot_samples"):
        to_foolbox(wnll_model, eot_samples=0)
    with pytest.raises(TypeError, match="nn.Module"):
        to_foolbox(lambda z: z)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_lowers_softmax_accuracy_and_runs_on_wnll(
    name: str,
    pretrained_resnet56: torch.nn.Module,
    wnll_model: WNLLNet,
    clean_slice: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = clean_slice
    attack, eps = ATTACKS[name]
    softmax = to_foolbox(pretrained_resnet56)
    clean = foolbox_accuracy(softmax, x, y)
    _, clipped, success = attack(softmax, x, y, epsilons=eps)
    assert foolbox_accuracy(softmax, clipped, y) < clean and bool(success.any())
    wnll = to_foolbox(wnll_model)
    _, clipped_w, _ = attack(wnll, x, y, epsilons=eps)
    assert clipped_w.shape == x.shape and bool(torch.isfinite(clipped_w).all())
    norms = (clipped_w - x).flatten(1).norm(p=float("inf") if name != "l2_cw" else 2, dim=1)
    assert float(norms.max()) <= eps + 1e-5
    if name == "linf_pgd":  # exact gradients through the WNLL solve
        assert foolbox_accuracy(wnll, clipped_w, y) < foolbox_accuracy(wnll, x, y)


def test_eot_through_tvm(wnll_model: WNLLNet, clean_slice: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The defence module averages its own TVM draws; any other randomised module gets wnll_art's EOT.
    LinfPGD through the defence (BPDA + EOT) moves the images."""
    x, y = clean_slice
    defended = Defence(wnll_model, tvm=TVMSettings(eot_samples=3), seed=0).eval()
    attacked = to_foolbox(defended)
    assert not isinstance(attacked, fb.models.ExpectationOverTransformationWrapper)
    purifier, calls = TVMPurifier(seed=0), []
    purifier.register_forward_hook(lambda *_: calls.append(1))
    wrapped = to_foolbox(torch.nn.Sequential(purifier, wnll_model), eot_samples=3)
    wrapped(x)  # a prediction: one draw
    assert len(calls) == 1
    wrapped(x.clone().requires_grad_(True))  # a gradient call: EOT over 3 draws of the whole batch
    assert len(calls) == 4
    _, clipped, _ = fb.attacks.LinfPGD(steps=5, rel_stepsize=0.25)(attacked, x, y, epsilons=EPS)
    delta = (clipped - x).abs().flatten(1).amax(1)
    assert float(delta.max()) <= EPS + 1e-5 and float(delta.min()) > EPS / 2
    assert 0.0 <= foolbox_accuracy(attacked, clipped, y) <= 1.0


def test_foolbox_cw_keeps_unfooled_images_clean() -> None:
    """Foolbox's C&W starts its best adversarials at zeros (and calls the black image a success when it is
    misclassified, as here): our wrapper must return the clean image where the attack found nothing, not a
    black image, which the eps projection would turn into "darken by eps"."""
    from torch import nn

    from wnll_art.adapters.attacks import FoolboxL2CW

    class Half(nn.Module):
        """Class 1 iff the first pixel is > 0.5: 5 C&W steps of size 0.01 cross only from next to 0.5."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = (x[:, 0, 0, 0] - 0.5) * 100
            return torch.stack([-s, s], 1)

    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.6
    x[:3, 0, 0, 0] = 0.4999  # these three sit at the boundary: C&W flips them
    x[3:, 0, 0, 0] = 0.95  # these cannot be moved below 0.5 in 5 small steps
    y = (x[:, 0, 0, 0] > 0.5).long()
    out = FoolboxL2CW(steps=5, stepsize=0.01, initial_const=10.0).run(Half(), x, y, eps=0.1)
    fooled = Half()(out).argmax(1) != y
    assert fooled[:3].all() and not fooled[3:].any() and (out[:3] - x[:3]).abs().amax() < 0.1
    torch.testing.assert_close(out[3:], x[3:], rtol=0, atol=0)  # failed: the clean images, not zeros
