"""The WNLL ablation switches of the authors' script (issue 19) on tiny fixed examples, against values computed by hand.

Script: BaoWangMath/DNN-DataDependentActivation ``Fool_WNLLDNN.py`` @67fe264 (WNLL, pixels). Each switch turns one
step of the script back into our ``paper`` attack (``AuthorsScript``'s ``wnll_*`` and ``cw_output`` fields; the
ladders in ``evaluations/paper_numbers.py``); each docstring names the script line whose step it switches.
``evaluations/authors_scripts.md`` section 8 has them all.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace
from typing import Literal

import pytest
import torch
from torch import Tensor, nn

from wnll_art.attacks import authors_protocol
from wnll_art.attacks.authors_protocol import AuthorsScript
from wnll_art.attacks.authors_wnll import WNLLIFGSM, script_wnll_view, victim_wnll_view
from wnll_art.evaluation.protocols import SPECS, WNLL_STEPS, PlanOptions
from wnll_art.evaluation.records import GAINED_SETTINGS
from wnll_art.wnll.model import WNLLNet

TOL = 1e-6
# one 1x3x2x2 image and the gradient signs of label 0's cross-entropy under the linear model below
X = torch.tensor([[[[0.0, 0.6], [0.5, 1.0]], [[0.2, 0.49], [0.7, 0.9]], [[0.3, 0.45], [0.6, 0.8]]]])
A = torch.tensor([[[[1.0, 1.0], [-1.0, 1.0]], [[-1.0, -1.0], [1.0, -1.0]], [[1.0, -1.0], [1.0, -1.0]]]])
Y0 = torch.tensor([0])
NO_TEMPLATE = {"template": torch.zeros(0, 3, 2, 2), "template_labels": torch.zeros(0, dtype=torch.long)}


def _linear2(x: Tensor) -> Tensor:
    """Logits ``[0, A . x]``: label 0's cross-entropy gradient is ``sigmoid(A . x) * A``, of sign ``sign(A)``."""
    return torch.stack([torch.zeros(x.shape[0]), (x.flatten(1) * A.flatten()).sum(1)], 1)


class _Line(nn.Module):
    """A backbone on a line: feature = 10 * pixel [0, 0, 0]; a linear head ``1 -> C`` with weights ``w``, no bias."""

    def __init__(self, w: tuple[float, ...]) -> None:
        super().__init__()
        self.linear = nn.Linear(1, len(w), bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor(w).view(-1, 1))

    def features(self, x: Tensor) -> Tensor:
        return 10.0 * x[:, 0, 0, 0:1]


def _line_net() -> tuple[WNLLNet, Tensor]:
    """Template a = 0 (label 0), b = 3, c = 7 (label 1) on the feature line; the test image x at feature 1. The
    victim's graph: k = 3 (self + 2), sigma = the nearest other point, Gaussian weights, our gamma N / M = 1/3."""
    images = torch.zeros(4, 3, 2, 2)
    images[1, 0, 0, 0], images[2, 0, 0, 0], images[3, 0, 0, 0] = 0.3, 0.7, 0.1
    net = WNLLNet(_Line((1.0, -1.0)), images[:3], torch.tensor([0, 1, 1]), k=3, sigma_neighbor=2).eval()
    return net, images[3:]


def _u0() -> float:
    """u0(x) of :func:`_line_net`'s victim graph: edges into x's equation w_xa = w_ax = w_bx = e^-1, w_xb =
    e^-(4/1) = e^-4, w_cx = e^-(36/16) = e^-2.25, w_xc = 0; gamma = 1/3 (see test_authors_steps.py's view test for
    the same graph under the script's quartic weights and gamma 1)."""
    e1, num = math.exp(-1), 2 * math.exp(-1) + math.exp(-1) / 3
    return num / (3 * e1 + math.exp(-4) + math.exp(-2.25) + (2 * e1 + math.exp(-2.25)) / 3)


def test_victim_view_values_and_the_loss_switch_gradients() -> None:
    """``Fool_WNLLDNN.py`` lines 243, 313-314 (``x.data = Predict.data``, cross-entropy of the raw WNLL values) are
    ``wnll_loss="script"``; ``"paper"`` is the ``paper`` protocol's surrogate view of the same victim.

    u0 = (7/3 e^-1) / (3 e^-1 + e^-4 + e^-2.25 + (2 e^-1 + e^-2.25) / 3) = 0.569320. Through the head (1, -1),
    feature = 10 pixel, one row: the script's loss gives 20 (sigmoid(2 u0 - 1) - 1) = -9.307913 at x's pixel; the
    paper's, whose gradient to the logits is softmax(log(u + 1e-6)) - onehot = u - onehot (up to 1e-6), gives
    20 (u0 - 1) = -8.613612. The paper view is the victim viewed with gradient="surrogate" (value and gradient).
    """
    net, x = _line_net()
    u0 = _u0()
    assert u0 == pytest.approx(0.569320, abs=1e-6)
    grads = {}
    for loss in ("script", "paper"):
        xr = x.clone().requires_grad_(True)
        scores = victim_wnll_view(net, loss=loss)(xr)
        (grads[loss],) = torch.autograd.grad(nn.functional.cross_entropy(scores, Y0), xr)
        if loss == "script":
            torch.testing.assert_close(scores.detach(), torch.tensor([[u0, 1 - u0]]), atol=1e-5, rtol=0)
    assert grads["script"][0, 0, 0, 0].item() == pytest.approx(-9.307913, abs=1e-4)
    assert grads["paper"][0, 0, 0, 0].item() == pytest.approx(-8.613612, abs=1e-4)
    surrogate = copy.copy(net)
    surrogate.gradient = "surrogate"
    xr = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(nn.functional.cross_entropy(surrogate(xr), Y0), xr)
    torch.testing.assert_close(ours, grads["paper"], atol=1e-6, rtol=0)
    torch.testing.assert_close(victim_wnll_view(net, loss="paper")(x), surrogate(x), atol=1e-6, rtol=0)


def test_graph_and_template_switches_choose_the_batch_and_its_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Fool_WNLLDNN.py`` lines 425-429 (``x_whole = np.append(x_Known, x_Test)``: the template rows are attacked
    with the test images) and 293 / ``WNLL.py`` 39, 91 (15 / 8 neighbours, quartic weights, ``gamma = n/len(id_o)``)
    are ``wnll_graph="script"``; lines 376-380, 500-502 (a fresh random draw per batch) ``wnll_template="script"``.

    Victim graph: no template rows, u0(x) = 0.569320 (Gaussian, gamma 1/3). Script graph on the victim's
    template: its 3 rows first, then the test images, solved by ``script_wnll_view`` with the script's 15 / 8
    neighbours (whose values on a small graph test_authors_steps.py's view test computes by hand; here 13 test
    images, so that 15 neighbours exist). Script template: ``template_size`` rows drawn from the training pool.
    """
    net, x = _line_net()
    scores, template, labels = AuthorsScript("fgsm", wnll_graph="victim", wnll_template="victim").attacked(
        net, x.device
    )
    assert template.shape == (0, 3, 2, 2) and labels.shape == (0,)
    assert scores(x)[0, 0].item() == pytest.approx(_u0(), abs=1e-5)
    scores, template, labels = AuthorsScript("fgsm", wnll_template="victim").attacked(net, x.device)
    assert torch.equal(template, net.template_images) and torch.equal(labels, net.template_labels)
    many = torch.zeros(13, 3, 2, 2)
    many[:, 0, 0, 0] = torch.linspace(0.05, 0.65, 13)
    batch = torch.cat([template, many])
    torch.testing.assert_close(scores(batch), script_wnll_view(net, labels)(batch), atol=0, rtol=0)
    pool = (torch.full((4, 3, 2, 2), 7, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    monkeypatch.setattr(authors_protocol, "_training_set", lambda: pool)
    torch.manual_seed(0)
    _, template, labels = AuthorsScript("fgsm", template_size=3).attacked(net, x.device)
    assert template.shape == (3, 3, 2, 2) and labels.shape == (3,)
    assert set(template.flatten().tolist()) <= {0.0, torch.tensor(7 / 255).item()}  # crops of the padded pool


def test_loss_switch_can_flip_an_fgsm_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Fool_WNLLDNN.py`` lines 243, 313-314 against the ``paper`` view, through ``AuthorsScript`` on a 3-class
    victim whose WNLL returns u = (0, 0.9, 0.1) (the solve replaced: the loss is what is tested), head (0, -1, 3).

    Label 0, d logits / d pixel = 10 (0, -1, 3). Paper loss: weights u - onehot = (-1, 0.9, 0.1): gradient
    10 (-0.9 + 0.3) = -6 -> pixel 0.5 - 0.02 = 0.48. Script loss: softmax(u) - onehot, softmax(0, 0.9, 0.1) =
    (0.219069, 0.538823, 0.242109): 10 (-0.538823 + 0.726326) = +1.875 -> 0.52. Zero-gradient pixels stay 0.5.
    """
    images = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    net = WNLLNet(_Line((0.0, -1.0, 3.0)), images, torch.tensor([0, 1, 2]), k=3, sigma_neighbor=2).eval()
    fixed = torch.tensor([0.0, 0.9, 0.1])
    monkeypatch.setattr(net, "interpolate", lambda feats, template: fixed.expand(feats.shape[0], 3).clone())
    x = torch.full((1, 3, 2, 2), 0.5)
    out = {loss: AuthorsScript("fgsm", wnll_graph="victim", wnll_template="victim", wnll_loss=loss)(
        net, x, Y0, eps=0.02, seed=0) for loss in ("paper", "script")}  # fmt: skip
    assert out["paper"][0, 0, 0, 0].item() == pytest.approx(0.48, abs=TOL)
    assert out["script"][0, 0, 0, 0].item() == pytest.approx(0.52, abs=TOL)
    assert torch.equal(out["script"].flatten()[1:], x.flatten()[1:])


def test_ifgsm_ball_switch_eps_instead_of_the_fixed_one() -> None:
    """``Fool_WNLLDNN.py`` lines 545-570: ``alpha = epsilon``; ``eps = 0.1`` (the ball, line 546); ``wnll_ball="eps"``
    (``WNLLIFGSM(ball=None)``) makes the ball eps. The test image alone (no template rows: the victim's graph).

    Constant gradient signs sign(A), 10 steps of 0.02: the eps ball stops every pixel at x + 0.02 sign(A) (clamped:
    0.0 -> 0.02, 0.6 -> 0.62, 0.5 -> 0.48, 1.0 -> 1.0; ...), the 0.1 ball at x + 0.1 sign(A) (0.0 -> 0.1, 0.6 -> 0.7,
    0.5 -> 0.4, 1.0 -> 1.0; 0.2 -> 0.1, 0.49 -> 0.39, 0.7 -> 0.8, 0.9 -> 0.8; 0.3 -> 0.4, 0.45 -> 0.35, 0.6 -> 0.7,
    0.8 -> 0.7).
    """
    small = WNLLIFGSM(ball=None)(_linear2, X, Y0, eps=0.02, **NO_TEMPLATE)
    torch.testing.assert_close(small, (X + 0.02 * A).clamp(0, 1), atol=TOL, rtol=0)
    script = WNLLIFGSM()(_linear2, X, Y0, eps=0.02, **NO_TEMPLATE)
    expected = torch.tensor(
        [[[[0.1, 0.7], [0.4, 1.0]], [[0.1, 0.39], [0.8, 0.8]], [[0.4, 0.35], [0.7, 0.7]]]]
    )
    torch.testing.assert_close(script, expected, atol=TOL, rtol=0)
    assert WNLLIFGSM(ball=None).max_linf(0.02) == pytest.approx((0.02,) * 3)
    assert AuthorsScript("ifgsm", wnll_ball="eps").max_linf(0.02) == pytest.approx(0.02)


def test_cw_output_switch_raw_projected_scaled() -> None:
    """``Fool_WNLLDNN.py`` lines 757-758 (``x_whole + epsilon * noise_tmp``): ``cw_output="scaled"`` (the script),
    ``"raw"`` (x_cw itself) and ``"projected"`` (x_cw onto the eps ball: the ``paper`` protocol's rule).

    The example of test_authors_steps.py's C&W test: 10 Adam steps of 0.01 move test 0 up, test 1 down by 0.1, so
    x_cw = x + 0.1 / x - 0.1 (pixel 0.98 -> 1.08, clipped to 1.0). At eps 0.02: raw x +- 0.1, projected x +- 0.02,
    scaled x +- 0.002 (0.98 -> 0.982).
    """
    rows = torch.tensor([[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    v = torch.tensor([0.0, -0.001, 0.001])

    def model(x: Tensor) -> Tensor:
        return rows[: x.shape[0]] + x.flatten(1).sum(1, keepdim=True) * v

    base = torch.tensor([[[0.3, 0.4], [0.5, 0.6]]]).repeat(3, 1, 1).unsqueeze(0)
    x = torch.cat([base, base])
    x[0, 0, 0, 0] = 0.98
    template, labels = torch.full((2, 3, 2, 2), 0.5), torch.tensor([2, 1])
    direction = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
    outputs: tuple[tuple[Literal["raw", "projected", "scaled"], float], ...] = (
        ("raw", 0.1), ("projected", 0.02), ("scaled", 0.002))  # fmt: skip
    for output, step in outputs:
        out = AuthorsScript("cw_l2", cw_output=output).attack_wnll(
            model, x, torch.tensor([0, 2]), eps=0.02, template=template, template_labels=labels
        )
        torch.testing.assert_close(out, (x + step * direction).clamp(0, 1), atol=1e-5, rtol=0)


def test_ladder_specs_bounds_skip_rule_and_legacy_settings() -> None:
    """Each ladder spec's declared bound at eps 0.02 (the engine checks the adversarials against it): FGSM eps;
    IFGSM eps with the eps ball, ``min(10 eps, 0.1)`` = 0.1 with the script's (line 546); C&W eps when projected,
    none when raw (lines 757-758 are what bound the script's). WNLL victims only; by name only; the switches'
    defaults (the script) are registered as the legacy values of records made before they existed."""
    bounds = {"wnll_fgsm_victim_graph": 0.02, "wnll_fgsm_script_loss": 0.02, "wnll_fgsm_script_graph": 0.02,
              "wnll_ifgsm_victim_graph": 0.02, "wnll_ifgsm_script_loss": 0.02, "wnll_ifgsm_script_ball": 0.1,
              "wnll_ifgsm_script_graph": 0.1, "wnll_cw_projected": 0.02, "wnll_cw_raw": None}  # fmt: skip
    assert set(bounds) == set(WNLL_STEPS)
    softmax = SimpleNamespace(module=SimpleNamespace(wnll=None))
    wnll = SimpleNamespace(module=SimpleNamespace(wnll=object()))
    for name, bound in bounds.items():
        entry = SPECS[f"authors:{name}"]
        got = entry.build(PlanOptions()).attack.max_linf(0.02)  # type: ignore[union-attr]
        assert got == (None if bound is None else pytest.approx(bound)), name
        assert not entry.default and entry.skip is not None
        assert entry.skip(softmax) and not entry.skip(wnll)  # type: ignore[arg-type]
    for key in ("wnll_loss", "wnll_graph", "wnll_template", "wnll_ball", "cw_output"):
        assert GAINED_SETTINGS[f"attack.{key}"] == getattr(AuthorsScript(), key)
    with pytest.raises(ValueError, match="do not apply"):
        AuthorsScript("cw_l2", wnll_loss="paper")
    with pytest.raises(ValueError, match="needs wnll_template"):
        AuthorsScript("fgsm", wnll_graph="victim")
    with pytest.raises(ValueError, match="has no WNLL"):
        AuthorsScript("fgsm", wnll_loss="paper").run(_linear2, X, Y0, eps=0.02)  # type: ignore[arg-type]
