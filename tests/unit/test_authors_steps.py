"""Each step of the authors' attack scripts on a tiny fixed example, against values computed by hand.

Scripts: BaoWangMath/DNN-DataDependentActivation ``Fool_StandardDNN.py`` @ede8d50 (softmax, normalised input
with mean (0.507, 0.487, 0.441), std (0.267, 0.256, 0.276), line 404) and ``Fool_WNLLDNN.py`` @67fe264 (WNLL,
pixels). Every docstring names the script line it mirrors; ``evaluations/authors_scripts.md`` has them all.
The tiny models are closed-form, so each expected value is arithmetic on the numbers written here.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from wnll_art.attacks.authors import SCRIPT_MEAN, SCRIPT_STD, StandardCW, StandardFGSM, StandardIFGSM
from wnll_art.attacks.authors_wnll import WNLLCW, WNLLFGSM, WNLLIFGSM, script_template, script_wnll_view
from wnll_art.wnll.model import WNLLNet

TOL = 1e-6
# one 1x3x2x2 image: a pixel below each channel's mean, one at 0/1, ones inside [mean, mean + std]
X = torch.tensor([[[[0.0, 0.6], [0.5, 1.0]], [[0.2, 0.49], [0.7, 0.9]], [[0.3, 0.45], [0.6, 0.8]]]])
# signs of the gradient of the cross-entropy of label 0 under the linear model below (= sign(A))
A = torch.tensor([[[[1.0, 1.0], [-1.0, 1.0]], [[-1.0, -1.0], [1.0, -1.0]], [[1.0, -1.0], [1.0, -1.0]]]])
Y0 = torch.tensor([0])


def linear2(a: Tensor):  # noqa: ANN201 - a closure
    """Logits ``[0, a . x]``: for label 0, ``d CE / d x = sigmoid(a . x) * a``, whose sign is ``sign(a)``."""
    return lambda x: torch.stack([torch.zeros(x.shape[0]), (x.flatten(1) * a.flatten()).sum(1)], 1)


def test_script_normalisation_constants() -> None:
    """``Fool_StandardDNN.py`` line 404: ``transforms.Normalize(mean=[0.507, 0.487, 0.441], std=[0.267,
    0.256, 0.276])``, applied to the test set (line 412); the WNLL script leaves it commented out (line 365)."""
    assert SCRIPT_MEAN == (0.507, 0.487, 0.441)
    assert SCRIPT_STD == (0.267, 0.256, 0.276)


def test_standard_fgsm_step_descends_in_normalised_space_then_clamps_to_the_band() -> None:
    """``Fool_StandardDNN.py`` lines 462-464: ``x.grad.sign_()``; ``x_adversarial = x - epsilon*x.grad``;
    ``torch.clamp(x_adversarial, 0.0, 1.0)`` on normalised values.

    In pixels: ``clamp(x - 0.02 * std[c] * sign(a), mean[c], mean[c] + std[c])``, eps*std = (0.00534,
    0.00512, 0.00552), bands [0.507, 0.774], [0.487, 0.743], [0.441, 0.717]. Channel 0: 0.0 -> 0.507 (band),
    0.6 - 0.00534 = 0.59466, 0.5 + 0.00534 = 0.50534 -> 0.507, 1.0 -> 0.774. Channel 1: 0.2 -> 0.487,
    0.49 + 0.00512 = 0.49512, 0.7 - 0.00512 = 0.69488, 0.9 -> 0.743. Channel 2: 0.3 -> 0.441, 0.45 + 0.00552 =
    0.45552, 0.6 - 0.00552 = 0.59448, 0.8 -> 0.717. An ascent gives 0.60534, a pixel-space eps 0.58, a [0, 1]
    clamp 0.0 at the first pixel.
    """
    out = StandardFGSM()(linear2(A), X, Y0, eps=0.02)
    expected = torch.tensor([[[[0.507, 0.59466], [0.507, 0.774]], [[0.487, 0.49512], [0.69488, 0.743]],
                              [[0.441, 0.45552], [0.59448, 0.717]]]])  # fmt: skip
    torch.testing.assert_close(out, expected, atol=TOL, rtol=0)
    assert (out - X).abs().amax().item() == pytest.approx(0.507, abs=TOL)  # the clamp moves 0.0 by mean[0]
    ascent = StandardFGSM(sign=1)(linear2(A), X, Y0, eps=0.02)
    assert ascent[0, 0, 0, 1].item() == pytest.approx(0.60534, abs=TOL)


def test_standard_radius_is_the_clamp_not_eps() -> None:
    """Lines 463-464 (and 518-520): the pixel radius per channel is ``max(eps * std, mean, 1 - mean - std)``
    (a black pixel is moved to ``mean``): (0.507, 0.487, 0.441) for eps = 0.02, and 1.9 * std[0] = 0.5073 for
    eps = 1.9 in channel 0."""
    assert StandardFGSM().max_linf(0.02) == pytest.approx((0.507, 0.487, 0.441))
    assert StandardIFGSM().max_linf(1.9)[0] == pytest.approx(0.5073)
    assert WNLLFGSM().max_linf(0.03) == (0.03, 0.03, 0.03)
    assert WNLLIFGSM().max_linf(0.02) == pytest.approx((0.1, 0.1, 0.1))  # line 546: ball 0.1, not eps
    assert WNLLIFGSM().max_linf(0.005) == pytest.approx((0.05, 0.05, 0.05))  # 10 steps of 0.005
    assert StandardCW().max_linf() is None and WNLLCW().max_linf(0.02) is None


def _bump(c: float):  # noqa: ANN202 - a closure
    """Logits ``[0, -100 (x[0, 0, 0, 1] - c)^2]``: for label 0 the gradient sign at that pixel is
    ``sign(c - x)`` (the ascent moves it towards ``c``), zero at every other pixel."""
    return lambda x: torch.stack([torch.zeros(x.shape[0]), -100.0 * (x[:, 0, 0, 1] - c) ** 2], 1)


def test_standard_ifgsm_unit_step_jumps_between_the_faces_of_the_normalised_ball() -> None:
    """``Fool_StandardDNN.py`` lines 494, 509, 517-520: ``alpha = 1.0; iteration = 10``; ``loss = -loss``;
    ``x_adv = x_adv - alpha*x_adv.grad`` (an ascent); clip to ``x +- epsilon``; clamp to [0, 1].

    Pixel x[0, 0, 0, 1] = 0.6 with the bump at 0.601, eps = 0.05 -> ball 0.05 * 0.267 = 0.01335 pixels. A step
    of 1.0 overshoots to the face: 0.61335 (past 0.601), then back to 0.58665, and so on: 0.58665 after 10 steps,
    0.61335 after 9. A step of eps would return to 0.6 after every even step; a descent would stay at 0.58665
    after 9; a pixel ball would reach 0.65. Zero-gradient pixels are still clamped to the band every step:
    0.0 -> 0.507, 1.0 -> 0.774, 0.5 -> 0.507, and 0.49 stays 0.49.
    """
    ten = StandardIFGSM()(_bump(0.601), X, Y0, eps=0.05)
    nine = StandardIFGSM(steps=9)(_bump(0.601), X, Y0, eps=0.05)
    assert ten[0, 0, 0, 1].item() == pytest.approx(0.58665, abs=TOL)
    assert nine[0, 0, 0, 1].item() == pytest.approx(0.61335, abs=TOL)
    assert [ten[0, 0, 0, 0].item(), ten[0, 0, 1, 1].item(), ten[0, 0, 1, 0].item(), ten[0, 1, 0, 1].item()] == (
        pytest.approx([0.507, 0.774, 0.507, 0.49], abs=TOL))  # fmt: skip


def _affine(b: Tensor, v: Tensor):  # noqa: ANN202 - a closure
    """Row ``r`` of logits: ``b[r] + (sum of the pixels of image r) * v``."""
    return lambda x: b[: x.shape[0]] + x.flatten(1).sum(1, keepdim=True) * v


X_CW = torch.tensor([[[[0.3, 0.4], [0.5, 0.6]], [[0.3, 0.4], [0.5, 0.6]], [[0.3, 0.4], [0.5, 0.6]]]])


def test_standard_cw_adam_descends_the_hinge_with_a_zero_distance_term() -> None:
    """``Fool_StandardDNN.py`` lines 552-599: ``optim.Adam([w], lr=0.01)``, 10 steps on ``torch.pow(w -
    input_var, 2).sum() + 10 * clamp(Z[y_pred] - Z[argmax] + 0, min=0)``, where ``w`` and ``input_var`` wrap one
    tensor (lines 558, 560), so the distance term is 0; ``best_w = w.data.clone()`` after the step (597).

    Logits ``(5, 2, 0) + S * (0.01, 0, 0)``: pred 0, target 1 (line 569 sets Z[0] to -1, then 2 > 0). The hinge
    gradient in normalised units is 10 * 0.01 * std[c] > 0 at every pixel, constant, so each Adam step is lr = 0.01
    downwards and the loss falls at every step: best_w = z - 10 * 0.01, i.e. pixels x - 0.1 * std[c]: 0.3 - 0.0267
    = 0.2733 (channel 0), 0.3 - 0.0256 = 0.2744 (1), 0.3 - 0.0276 = 0.2724 (2). The iterate before the last step
    would give x - 0.09 * std; a true distance term turns the steps back after two.
    """
    model = _affine(torch.tensor([[5.0, 2.0, 0.0]]), torch.tensor([0.01, 0.0, 0.0]))
    out = StandardCW()(model, X_CW, Y0)
    expected = X_CW - 0.1 * torch.tensor(SCRIPT_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.2733, abs=1e-5)
    with_l2 = StandardCW(l2_penalty=True)(model, X_CW, Y0)
    assert (with_l2 - expected).abs().amax().item() > 0.01


def test_standard_cw_target_is_pred_when_every_other_logit_is_below_minus_one() -> None:
    """``Fool_StandardDNN.py`` lines 568-574: ``probs_data[0][top1_idx] = -1`` then the arg-max again: logits
    (5, -2, -3) become (-1, -2, -3), whose arg-max is the prediction itself, so the hinge is 0, no step is taken
    and the image comes back unchanged (a real top-2 target would move every pixel by 0.1 * std)."""
    model = _affine(torch.tensor([[5.0, -2.0, -3.0]]), torch.tensor([0.01, 0.0, 0.0]))
    torch.testing.assert_close(StandardCW()(model, X_CW, Y0), X_CW, atol=TOL, rtol=0)


def test_wnll_fgsm_ascends_in_pixels_on_the_whole_batch() -> None:
    """``Fool_WNLLDNN.py`` lines 447-450: ``x_adversarial = x_whole_cuda + epsilon*x_whole_cuda.grad`` (signed)
    and ``torch.clamp(x_adversarial, 0.0, 1.0)``, in pixels (no normalisation, line 365), template rows first.

    ``X + 0.02 * sign(a)`` clamped: 0.0 -> 0.02, 0.6 -> 0.62, 0.5 -> 0.48, 1.0 -> 1.0; 0.2 -> 0.18, 0.49 -> 0.47,
    0.7 -> 0.72, 0.9 -> 0.88; 0.3 -> 0.32, 0.45 -> 0.43, 0.6 -> 0.62, 0.8 -> 0.78.
    """
    template, t_labels = torch.full((1, 3, 2, 2), 0.5), torch.tensor([1])
    out = WNLLFGSM()(linear2(A), X, Y0, eps=0.02, template=template, template_labels=t_labels)
    expected = torch.tensor([[[[0.02, 0.62], [0.48, 1.0]], [[0.18, 0.47], [0.72, 0.88]],
                              [[0.32, 0.43], [0.62, 0.78]]]])  # fmt: skip
    torch.testing.assert_close(out, expected, atol=TOL, rtol=0)
    assert torch.equal(template, torch.full((1, 3, 2, 2), 0.5))  # inputs untouched


def _coupled(x_whole: Tensor) -> Tensor:
    """Template row 0: logits ``[0, 10 q]`` (q = its pixel [0, 0, 0]); test row 1: ``[0, -(p - q)^2]``. With
    labels 0 the template pixel climbs (gradient 10 sigmoid(10 q) dominates) and p moves towards q."""
    q, p = x_whole[0, 0, 0, 0], x_whole[1, 0, 0, 0]
    zero = torch.zeros(())
    return torch.stack([torch.stack([zero, 10.0 * q]), torch.stack([zero, -((p - q) ** 2)])])


def test_wnll_ifgsm_moves_the_template_too_with_step_eps_in_a_fixed_ball() -> None:
    """``Fool_WNLLDNN.py`` lines 545-570: ``alpha = epsilon``; ``eps = 0.1``; ``iteration = 10``;
    ``x_adv = x_adv + alpha*x_adv.grad`` on the whole batch; clip to ``x_whole_cuda +- eps``; clamp to [0, 1].

    p = 0.50, q = 0.52, step 0.02: p follows q, which climbs 0.02 a step: p = 0.52, 0.54, ..., 0.60 after 5
    steps, where the 0.1 ball stops it (q stops at 0.62). A fixed template would leave p at 0.52 (the gradient
    is 0 at p = q); a ball of eps would stop p at 0.52 too.
    """
    x = torch.full((1, 3, 2, 2), 0.5)
    template = torch.full((1, 3, 2, 2), 0.52)
    out = WNLLIFGSM()(_coupled, x, Y0, eps=0.02, template=template, template_labels=torch.tensor([0]))
    assert out.shape == (1, 3, 2, 2)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.60, abs=TOL)
    assert torch.equal(out.flatten()[1:], x.flatten()[1:])  # zero gradient elsewhere


def test_wnll_cw_targets_by_whole_batch_row_and_scales_the_noise() -> None:
    """``Fool_WNLLDNN.py`` lines 694-758: targets ``argmax_numpy`` = arg-max of the clean whole-batch rows,
    indexed by the test index in ``tmp[idx_tmp, argmax_numpy[idx_tmp]]`` (729); 10 Adam steps of lr 0.01 in
    pixels on the summed hinge (the distance term is 0: lines 679, 682); then ``x_whole + epsilon *
    noise_tmp`` (758).

    Rows (template 0, template 1, test 0, test 1): ``b = (0,0,5), (0,5,0), (5,1,0), (0,0,5)`` plus ``S v`` with
    ``v = (0, -0.001, 0.001)``. Targets are the arg-maxes of rows 0 and 1: 2 and 1. Test 0 (pred 0, target 2):
    hinge gradient 10 (0 - 0.001) < 0 -> +0.01 per step -> x + 0.1 -> with eps 0.5: x + 0.05. Test 1 (pred 2,
    target 1): 10 (0.001 + 0.001) > 0 -> x - 0.05. A per-image top-2 target (class 1 for test 0) would move
    test 0 down; no noise scaling would move by 0.1. Pixel 0.98 of test 0 -> 1.03 unclipped (the script), 1.0
    clipped.
    """
    b = torch.tensor([[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    model = _affine(b, torch.tensor([0.0, -0.001, 0.001]))
    x = torch.cat([X_CW, X_CW])
    x[0, 0, 0, 0] = 0.98
    template = torch.full((2, 3, 2, 2), 0.5)
    kwargs = {"eps": 0.5, "template": template, "template_labels": torch.tensor([2, 1])}
    raw = WNLLCW(clip=False)(model, x, torch.tensor([0, 2]), **kwargs)
    expected = torch.cat([x[:1] + 0.05, x[1:] - 0.05])
    torch.testing.assert_close(raw, expected, atol=1e-5, rtol=0)
    assert raw[0, 0, 0, 0].item() == pytest.approx(1.03, abs=1e-5)
    clipped = WNLLCW()(model, x, torch.tensor([0, 2]), **kwargs)
    assert clipped[0, 0, 0, 0].item() == pytest.approx(1.0, abs=TOL)


class _Line(nn.Module):
    """A backbone on a line: feature = 10 * pixel [0, 0, 0]; linear head weights (1, -1), no bias."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def features(self, x: Tensor) -> Tensor:
        return 10.0 * x[:, 0, 0, 0:1]


def test_script_wnll_view_values_gradient_and_gamma() -> None:
    """``Fool_WNLLDNN.py`` lines 313-314 (``x = self.fc(x); x.data = Predict.data``) and 243 (cross-entropy of
    the whole batch); ``WNLL.py`` lines 39 (``exp(-(d^2/sigma^2)^2)``), 84 (template rows keep their one-hot
    labels), 91 (``gamma = n/len(id_o)``).

    Features a = 0 (label 0), b = 3, c = 7 (label 1), x = 1; k = 3 (self + 2), sigma = the nearest other point.
    Edges into the equation of x: w_xa = w_ax = w_bx = e^-1 (at their sigma), w_xb = e^-(4/1)^2 = e^-16,
    w_cx = e^-(36/16)^2 = e^-5.0625, w_xc = 0; gamma = 4 // 3 = 1. The WNLL equation gives
    u0(x) = (2 e^-1 + gamma e^-1) / (2 e^-1 + e^-16 + e^-1 + e^-5.0625 + gamma (2 e^-1 + e^-5.0625)) = 0.595899
    (0.632407 with our default gamma 1/3, 0.533542 with Gaussian weights). Mean cross-entropy (labels 0, 1, 1, 0)
    through the head (1, -1), feature = 10 pixel: at x, 2 (sigmoid(2 u0 - 1) - 1) 10 / 4 = -2.260985 (the
    log-score surrogate: 2 (u0 - 1) 10 / 4 = -2.020506); at a, 2 (sigmoid(1) - 1) 10 / 4 = -1.344707; at b
    and c, +1.344707.
    """
    images = torch.zeros(4, 3, 2, 2)
    images[1, 0, 0, 0], images[2, 0, 0, 0], images[3, 0, 0, 0] = 0.3, 0.7, 0.1  # a, b, c, x
    t_labels = torch.tensor([0, 1, 1])
    net = WNLLNet(_Line(), images[:3], t_labels, k=3, sigma_neighbor=2).eval()
    view = script_wnll_view(net, t_labels, k=3, sigma_neighbor=2)
    xr = images.clone().requires_grad_(True)
    scores = view(xr)
    torch.testing.assert_close(scores[:3].detach(), torch.eye(2)[[0, 1, 1]], atol=TOL, rtol=0)
    torch.testing.assert_close(scores[3].detach(), torch.tensor([0.595899, 0.404101]), atol=1e-5, rtol=0)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(scores, torch.tensor([0, 1, 1, 0])), xr)
    expected = torch.tensor([-1.344707, 1.344707, 1.344707, -2.260985])
    torch.testing.assert_close(g[:, 0, 0, 0], expected, atol=1e-5, rtol=0)
    assert g.flatten(1)[:, 1:].abs().sum().item() == 0.0
    third = script_wnll_view(net, t_labels, k=3, sigma_neighbor=2, gamma=1 / 3)(images)
    assert third[3, 0].item() == pytest.approx(0.632407, abs=1e-5)
    gauss = script_wnll_view(net, t_labels, k=3, sigma_neighbor=2, kernel="gaussian")(images)
    assert gauss[3, 0].item() == pytest.approx(0.533542, abs=1e-5)


def test_script_template_draws_without_replacement_crops_and_flips() -> None:
    """``Fool_WNLLDNN.py`` lines 353-354 (``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``), 376-380
    and 421 (the first batch of a shuffled loader), 500-502 (a new shuffle per test batch).

    Without padding each drawn image is its source or its mirror: [[1, 2], [3, 4]] -> itself or [[2, 1],
    [4, 3]]; drawing all 4 images draws each once. With padding 4 a 2x2 crop of the zero-padded image holds
    the source's pixels in place or zeros; the same seed gives the same template.
    """
    base = torch.arange(1, 5, dtype=torch.uint8).view(1, 1, 2, 2).repeat(4, 3, 1, 1) * torch.tensor(
        [1, 10, 20, 30], dtype=torch.uint8).view(4, 1, 1, 1)  # fmt: skip
    labels = torch.tensor([0, 1, 2, 3])
    out, out_labels = script_template(
        base, labels, size=4, padding=0, generator=torch.Generator().manual_seed(0)
    )
    assert sorted(out_labels.tolist()) == [0, 1, 2, 3]
    for img, lab in zip(out, out_labels.tolist(), strict=True):
        src = base[lab].float() / 255.0
        assert torch.equal(img, src) or torch.equal(img, src.flip(-1))
    first = script_template(base, labels, size=3, generator=torch.Generator().manual_seed(1))
    again = script_template(base, labels, size=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    for img, lab in zip(*first, strict=True):
        src = base[lab].float() / 255.0
        assert all(v == 0 or v in src.flatten().tolist() for v in img.flatten().tolist())


def test_settings_name_the_replicated_choices() -> None:
    """Every attack records its script, its space and its constants (``Fool_WNLLDNN.py`` line 546: ball 0.1)."""
    s = WNLLIFGSM().settings()
    assert s["script"] == "Fool_WNLLDNN.py@67fe264" and s["ball"] == 0.1 and s["steps"] == 10
    assert StandardFGSM().settings()["sign"] == -1
    assert StandardCW().settings()["l2_penalty"] is False
    with pytest.raises(ValueError, match="eps"):
        WNLLFGSM()(linear2(A), X, Y0, eps=-1.0, template=X, template_labels=Y0)


def test_ablation_switches_turn_the_script_into_the_paper_attack_step_by_step() -> None:
    """The switches of issue 19's ablation: with the paper's ascent, eps in pixels and a pixel clamp, the script's
    FGSM is the textbook ``clip(x + eps * sign(grad), 0, 1)``; eps in normalised units shrinks the step to
    ``eps * std``; the normalised clamp squeezes pixels into ``[mean, mean + std]`` (the script)."""
    from wnll_art.attacks.authors_protocol import AuthorsScript

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    x, y = torch.rand(6, 3, 4, 4), torch.randint(0, 5, (6,))
    xr = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(net(xr), y, reduction="sum").backward()
    textbook = (x + 0.03 * xr.grad.sign()).clamp(0, 1)  # type: ignore[union-attr]
    pixel = StandardFGSM(sign=1, eps_space="pixel", clamp_space="pixel")(net, x, y, eps=0.03)
    torch.testing.assert_close(pixel, textbook, rtol=0, atol=1e-6)
    small = StandardFGSM(sign=1, eps_space="normalised", clamp_space="pixel")(net, x, y, eps=0.03)
    std = torch.tensor(SCRIPT_STD).view(1, 3, 1, 1)
    assert torch.all((small - x).abs() <= 0.03 * std + 1e-6) and (small - x).abs().amax() > 0.03 * 0.25
    script = StandardFGSM()(net, x, y, eps=0.03)
    mean = torch.tensor(SCRIPT_MEAN).view(1, 3, 1, 1)
    assert torch.all(script >= mean - 1e-6) and torch.all(script <= mean + std + 1e-6)
    ball = StandardIFGSM(eps_space="pixel", clamp_space="pixel")(net, x, y, eps=0.03)
    assert float((ball - x).abs().amax()) <= 0.03 + 1e-6
    assert AuthorsScript("fgsm", 1, "pixel", "pixel").max_linf(0.03) == 0.03
    assert AuthorsScript("fgsm").max_linf(0.03) == max(SCRIPT_MEAN)  # the squeeze dominates at small eps
    with pytest.raises(ValueError, match="do not apply"):
        AuthorsScript("cw_l2", 1)
