"""The authors' WNLL attack script, replicated step by step: its attacks, what they differentiate, and how it
draws its template.

B. Wang et al., arXiv:1809.08516; code: github.com/BaoWangMath/DNN-DataDependentActivation, read whole:
``Fool_WNLLDNN.py`` (@67fe264, WNLL ResNet) and ``Cifar10-Robust/Attack_ResNet_WNLL_PGD.py`` (@c56fd67,
adversarially trained WNLL ResNet; same attacks, other constants: :data:`ROBUST_SCRIPT`). Every step, the script
lines it mirrors and their translation are in ``evaluations/authors_scripts.md``; the softmax script
(``Fool_StandardDNN.py``) is in :mod:`wnll_art.attacks.authors`, the steps all the scripts share in
:mod:`wnll_art.attacks._authors_steps`. The WNLL scripts feed the pixels ``x`` in [0, 1] themselves: eps is in
pixels.

Models. A WNLL attack (:class:`WNLLFGSM`, :class:`WNLLIFGSM`, :class:`WNLLCW`) takes the whole-batch scores the
script differentiates, ``model(x_whole) -> (M + N, C)`` with ``x_whole`` = template (``M`` rows, its labels
bound in ``model``) followed by the ``N`` attacked images: the value is the WNLL label function (one-hot on
template rows), the gradient that of the linear head (straight through), and the loss is cross-entropy on those
raw values (:func:`script_wnll_view`). The template rows are part of the attacked batch, as in the scripts; the
returned images are the ``N`` rows only (the scripts classify them against the unperturbed template of the same
draw).

What the script differentiates. ``Fool_WNLLDNN.py`` attacks the whole batch template + test images through
``ResNet_Cifar.forward(..., stage_flag=2, train_flag=0)`` (lines 168-249): the buffer block's features go
through ``WNLL`` (lines 251-315), whose output is ``x = self.fc(x); x.data = Predict.data`` (lines 313-314) - the
value is the WNLL label function (exactly one-hot on the template rows, ``uf[id_o] = g``, ``WNLL.py`` line 84),
the backward pass that of the linear head ``fc`` - and the loss is ``nn.CrossEntropyLoss`` (mean) of those raw
values against the labels of the whole batch (line 243).
:func:`victim_wnll_view` is the ablation's other end (issue 19): the victim's own WNLL (its template, graph
and coupling; the template outside the attacked batch), with the script's loss or the ``paper`` protocol's.
The graph: FLANN k-means-tree kNN (approximate) with 15 neighbours counting the point itself, weights
``exp(-(d^2 / d_8^2)^2)`` with ``d_8`` the distance to the 8th (``WNLL.py`` lines 27-39: ``kernel="quartic"``),
template weight ``gamma = n / |template|`` in Python 2 integer division over all ``n`` points (line 91: 3 for
500 + 1000), BiCGSTAB to 1e-7 (line 119). :func:`script_wnll_view` builds that function from a
:class:`~wnll_art.wnll.model.WNLLNet` (exact kNN, our solver in float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from wnll_art._checks import check_images, check_labels, check_positive_int
from wnll_art.attacks._authors_choices import WNLL_COMMON
from wnll_art.attacks._authors_steps import (
    CWOptions,
    Scores,
    Triple,
    adam03_step,
    attack_settings,
    check_attack_inputs,
    grad_of,
)
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.score import wnll_scores
from wnll_art.wnll.solver import wnll_interpolate

__all__ = ["Loss", "ROBUST_SCRIPT", "WNLLCW", "WNLLFGSM", "WNLLIFGSM", "script_template", "script_wnll_view",
           "victim_wnll_view"]  # fmt: skip

Loss = Literal["script", "paper"]
# Cifar10-Robust/Attack_ResNet_WNLL_PGD.py: IFGSM 100 steps of eps in a 0.031 ball (lines 793-795), C&W 50
# Adam steps of lr 0.0006 (lines 926-927), template and test batches of 1000 (lines 609, 616)
ROBUST_SCRIPT: dict[str, dict[str, float | int]] = {
    "WNLLIFGSM": {"steps": 100, "ball": 0.031}, "WNLLCW": {"steps": 50, "learning_rate": 0.0006},
    "batches": {"template": 1000, "test": 1000},
}  # fmt: skip


def _straight_through(values: Tensor, logits: Tensor, loss: Loss, log_floor: float) -> Tensor:
    """Scores whose cross-entropy is the script's loss (``"script"``: value ``values``, gradient that of ``logits``,
    lines 313-314) or the ``paper`` protocol's (``"paper"``: value ``log(values + log_floor)``, gradient that of
    ``log_softmax(logits)``: the surrogate view, :func:`~wnll_art.wnll.score.wnll_scores`)."""
    if loss == "paper":
        return wnll_scores(
            values.to(logits.dtype), gradient="surrogate", linear_logits=logits, log_floor=log_floor
        )
    if loss != "script":
        raise ValueError(f"loss must be 'script' or 'paper', got {loss!r}")
    return logits + (values.to(logits.dtype) - logits).detach()


def script_wnll_view(
    net: WNLLNet,
    template_labels: Tensor,
    *,
    k: int = 15,
    sigma_neighbor: int = 8,
    kernel: Literal["gaussian", "quartic"] = "quartic",
    gamma: float | Literal["script"] = "script",
    loss: Loss = "script",
) -> Scores:
    """The scores ``Fool_WNLLDNN.py`` differentiates, as a function of the whole batch.

    Args:
        net: Supplies ``embed`` (backbone + buffer block) and ``linear_head`` (the script's ``fc``); its own
            template and graph options are not used.
        template_labels: ``(M,)`` int64 labels of the template rows; every class must occur.
        k: Neighbours counting the point itself (the script's ``num_s=15``, line 293).
        sigma_neighbor: Neighbour setting the scale (``num_s_normal=8``).
        kernel: ``"quartic"``: the script's ``exp(-(d^2/sigma^2)^2)``.
        gamma: Template weight; ``"script"``: ``(M + N) // M`` as the script's ``n/len(id_o)``.
        loss: ``"script"`` (the raw values, above) or ``"paper"`` (their ``log(u + 1e-6)``, with the ``paper``
            protocol's log-softmax straight-through gradient; the ablation's switch).

    Returns:
        ``scores(x_whole)``: ``(M + N, 3, H, W)``, template rows first -> ``(M + N, C)`` whose value
        is one-hot on the template rows and the WNLL label function on the others, and whose gradient is that
        of ``net.linear_head(net.embed(x_whole))``. Cross-entropy of these values is the script's loss. Pixels
        outside [0, 1] are passed on (the scripts' C&W iterate is never clamped); a backbone that checks its
        inputs (``check_inputs=True``) refuses them.
    """
    check_labels(template_labels, "template_labels", num_classes=net.num_classes)
    labels = template_labels.long()
    m, c = int(labels.shape[0]), net.num_classes
    check_positive_int(m, "len(template_labels)")

    def scores(x_whole: Tensor) -> Tensor:
        check_images(x_whole, "x_whole", value_range=None)  # the scripts' C&W iterate leaves [0, 1]
        if x_whole.shape[0] <= m:
            raise ValueError(f"x_whole has {x_whole.shape[0]} rows; it needs the {m} template rows and more")
        feats = net.embed(x_whole)
        g = float(x_whole.shape[0] // m) if gamma == "script" else float(gamma)
        with torch.no_grad():
            u = wnll_interpolate(feats[m:].double(), feats[:m].double(), labels.to(feats.device), num_classes=c,
                                 k=k, sigma_neighbor=sigma_neighbor, kernel=kernel, gamma=g)  # fmt: skip
        values = torch.cat([F.one_hot(labels.to(feats.device), c).to(u.dtype), u])
        return _straight_through(values, net.linear_head(feats), loss, net.log_floor)

    return scores


def victim_wnll_view(net: WNLLNet, *, loss: Loss = "script") -> Scores:
    """The victim's own WNLL as the attacked function, with the script's loss or the ``paper`` protocol's.

    Unlike :func:`script_wnll_view`, the template is not part of the attacked batch: ``scores(x)`` takes the
    ``N`` attacked images alone and solves them against ``net``'s stored template with ``net``'s graph (kernel,
    ``k``, ``sigma_neighbor``, ``gamma``, coupling, WNLL batch): the function the victim deploys. With
    ``loss="paper"`` its scores (value and gradient) are those of ``net`` viewed with ``gradient="surrogate"``,
    ``score="log"``: what the ``paper`` protocol differentiates.

    Args:
        net: The victim's WNLL network.
        loss: ``"script"``: value ``u`` (the label functions), gradient of the linear head (the script's
            ``x.data = Predict.data``, lines 313-314); ``"paper"``: value ``log(u + log_floor)``, gradient of the
            head's log-softmax.

    Returns:
        ``scores(x)``: ``(N, 3, H, W)`` in [0, 1] -> ``(N, C)``.
    """
    if loss not in ("script", "paper"):
        raise ValueError(f"loss must be 'script' or 'paper', got {loss!r}")

    def scores(x: Tensor) -> Tensor:
        feats = net.embed(net.check_input(x))
        with torch.no_grad():
            u = net.interpolate(feats.detach(), net.template_features())
        return _straight_through(u, net.linear_head(feats), loss, net.log_floor)

    return scores


def script_template(
    images: Tensor, labels: Tensor, *, size: int = 500, padding: int = 4, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The template ``Fool_WNLLDNN.py`` draws for each test batch: the first batch of a freshly shuffled
    loader (lines 376-380, 421, 500-502) over the training set under ``RandomCrop(32, padding=4)`` and
    ``RandomHorizontalFlip()`` (lines 353-354): ``size`` images drawn uniformly without replacement (not
    class-balanced), each cropped at a uniform offset in ``[0, 2 * padding]`` from its zero-padded copy, then
    flipped left-right with probability 1/2.

    Args:
        images: ``(N, 3, H, W)`` uint8 (0..255) or float in [0, 1], e.g. the CIFAR-10 training set.
        labels: ``(N,)`` int64 labels.
        size: Template images (the script's ``batchsize_train = 500``; 1000 in ``Cifar10-Robust``).
        padding: Zero padding of the random crop.
        generator: The only source of randomness (CPU ``torch.Generator``). The draws follow torchvision's
            distribution, not its random stream.

    Returns:
        ``(template, template_labels)``: float32 ``(size, 3, H, W)`` in [0, 1] on the device of ``images``,
        and their labels. A draw may miss a class; the WNLL then cannot predict it.
    """
    check_labels(labels, "labels")
    check_positive_int(size, "size")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else check_images(images, "images")
    if x.shape[0] != labels.shape[0] or size > x.shape[0]:
        raise ValueError(
            f"need size <= len(images) == len(labels); got {size}, {x.shape[0]}, {labels.shape[0]}"
        )
    idx = torch.randperm(x.shape[0], generator=generator)[:size]
    offsets = torch.randint(0, 2 * padding + 1, (size, 2), generator=generator).tolist()
    flips = (torch.rand(size, generator=generator) < 0.5).tolist()
    padded = F.pad(x[idx.to(x.device)], (padding,) * 4)
    h, w = x.shape[2], x.shape[3]
    crops = [padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(offsets)]
    out = torch.stack([crop.flip(-1) if flip else crop for crop, flip in zip(crops, flips, strict=True)])
    return out.float(), labels[idx.to(labels.device)].long()


def _whole(x: Tensor, y: Tensor, template: Tensor, template_labels: Tensor) -> tuple[Tensor, Tensor]:
    check_images(template, "template", allow_empty=True)  # empty: the test images alone (the ablation)
    check_labels(template_labels, "template_labels")
    if template_labels.shape[0] != template.shape[0] or template.shape[1:] != x.shape[1:]:
        raise ValueError(f"template {tuple(template.shape)} and template_labels {tuple(template_labels.shape)} "
                         f"do not match x {tuple(x.shape)}")  # fmt: skip
    return torch.cat([template, x]).to(x.dtype).detach(), torch.cat([template_labels, y]).long()


@dataclass(frozen=True, kw_only=True)
class _WNLL:
    script: ClassVar[str] = "Fool_WNLLDNN.py@67fe264"

    def settings(self) -> dict[str, Any]:
        """Every replicated choice (the dataclass fields and the fixed ones), for records."""
        return attack_settings(self, WNLL_COMMON)


@dataclass(frozen=True, kw_only=True)
class WNLLFGSM(_WNLL):
    """``Fool_WNLLDNN.py -method fgsm`` (lines 433-451): ``x_adv = clamp(x + eps * sign(grad CE), 0, 1)`` in
    pixels, one step on the whole batch (template rows too, then dropped)."""

    def __call__(self, model: Scores, x: Tensor, y: Tensor, *, eps: float, template: Tensor,
                 template_labels: Tensor) -> Tensor:  # fmt: skip
        """Adversarial images ``(N, 3, H, W)`` in [0, 1].

        Args:
            model: Whole-batch scores (see the module docstring), ``(M + N, 3, H, W) -> (M + N, C)``.
            x: ``(N, 3, H, W)`` float in [0, 1], the attacked test batch.
            y: ``(N,)`` int64 true labels.
            eps: Step in pixels (the script's ``-epsilon``).
            template: ``(M, 3, H, W)`` float in [0, 1], the template draw (see ``script_template``).
            template_labels: ``(M,)`` int64 labels (those bound in ``model``).
        """
        check_attack_inputs(x, y, eps)
        xw, yw = _whole(x, y, template, template_labels)
        xr = xw.clone().requires_grad_(True)
        g = grad_of(F.cross_entropy(model(xr), yw), xr)
        return (xw + eps * g.sign()).clamp(0.0, 1.0)[template.shape[0] :]

    def max_linf(self, eps: float) -> Triple:
        """``eps`` in every channel."""
        return eps, eps, eps


@dataclass(frozen=True, kw_only=True)
class WNLLIFGSM(_WNLL):
    """``Fool_WNLLDNN.py -method ifgsm`` (lines 545-573): 10 steps of size eps in pixels, each clipped to a
    ball of FIXED radius 0.1 around the clean whole batch and clamped to [0, 1]; the template rows move too
    and stay moved for the following steps (the graph of step ``i`` holds the perturbed template).

    Attributes:
        steps: Iterations (line 547; 100 in :data:`ROBUST_SCRIPT`).
        ball: Projection radius in pixels (line 546: ``eps = 0.1``; 0.031 in :data:`ROBUST_SCRIPT`); ``None``: eps
            (not the script: the ablation's ball of the paper's IFGSM).
    """

    steps: int = 10
    ball: float | None = 0.1

    def __call__(self, model: Scores, x: Tensor, y: Tensor, *, eps: float, template: Tensor,
                 template_labels: Tensor) -> Tensor:  # fmt: skip
        """Adversarial images in [0, 1]; arguments as :meth:`WNLLFGSM.__call__` (``eps``: the step)."""
        check_attack_inputs(x, y, eps)
        check_positive_int(self.steps, "steps")
        xw, yw = _whole(x, y, template, template_labels)
        adv, ball = xw.clone(), eps if self.ball is None else self.ball
        for _ in range(self.steps):
            ar = adv.clone().requires_grad_(True)
            adv = adv + eps * grad_of(F.cross_entropy(model(ar), yw), ar).sign()
            adv = torch.where(adv > xw + ball, xw + ball, adv)
            adv = torch.where(adv < xw - ball, xw - ball, adv).clamp(0.0, 1.0)
        return adv[template.shape[0] :]

    def max_linf(self, eps: float) -> Triple:
        """``min(steps * eps, ball)`` in every channel: 0.1, not eps, for every eps >= 0.01."""
        r = min(self.steps * eps, eps if self.ball is None else self.ball)
        return r, r, r


@dataclass(frozen=True, kw_only=True)
class WNLLCW(CWOptions, _WNLL):
    """``Fool_WNLLDNN.py -method cwl2`` (lines 660-758), then ``x + eps * (x_cw - x)`` (lines 757-758).

    As :class:`~wnll_art.attacks.authors.StandardCW` (distance term identically zero, lines 679, 682; no clamp;
    ``best_w`` = the iterate after the best step), in pixels, on the whole batch, with one scalar loss for the
    batch (``best_w`` is kept for the whole batch, not per image). The hinge of test image ``j`` pushes its WNLL
    prediction towards class ``argmax(S[j])`` of the clean whole-batch scores ``S`` (template rows first): the
    script indexes the per-row arg-max of the WHOLE batch with the test index (line 729), so with the 500-image
    template, images 0..499 are pushed towards template labels and images 500..999 towards the predictions of
    images 0..499.
    (Its ``probs_data[0][top1_idx] = -1`` only changes row 0, and ``argmax_numpy == y_pred`` compares shapes
    (1500,) and (1000, 10), which NumPy answers with a scalar False: lines 695-702 change no target.)

    Attributes:
        steps: Adam steps (line 671; 50 in :data:`ROBUST_SCRIPT`).
        learning_rate: Adam's lr in pixels (line 670; 0.0006 in :data:`ROBUST_SCRIPT`).
        c: Weight of the hinge (line 672).
        kappa: Confidence (line 673).
        l2_penalty: Add ``||w - x||^2`` (False: the script, where it is zero).
        clip: Clamp the returned pixels to [0, 1] (False: the script's images, which may leave it).
    """

    def __call__(self, model: Scores, x: Tensor, y: Tensor, *, eps: float, template: Tensor,
                 template_labels: Tensor) -> Tensor:  # fmt: skip
        """Adversarial images ``x + eps * (x_cw - x)`` (in [0, 1] when ``clip``); arguments as
        :meth:`WNLLFGSM.__call__` (``eps``: the noise scale; ``y`` only enters through the whole-batch labels)."""
        check_attack_inputs(x, y, eps)
        check_positive_int(self.steps, "steps")
        xw, _ = _whole(x, y, template, template_labels)
        n_t, n = template.shape[0], x.shape[0]
        with torch.no_grad():
            clean = model(xw)
        pred = clean[n_t:].argmax(1, keepdim=True)
        target = clean[:n].argmax(1, keepdim=True)  # the script's row indexing, line 729
        w, mom, vel = xw.clone(), torch.zeros_like(xw), torch.zeros_like(xw)
        best, best_w = math.inf, xw.clone()
        for t in range(1, self.steps + 1):
            wr = w.clone().requires_grad_(True)
            out = model(wr)[n_t:]
            loss = self.c * (out.gather(1, pred) - out.gather(1, target) + self.kappa).clamp(min=0.0).sum()
            if self.l2_penalty:
                loss = loss + (wr - xw).pow(2).sum()
            g = grad_of(loss, wr)
            adam03_step(w, g, mom, vel, t, self.learning_rate)
            if float(loss.detach()) < best:
                best, best_w = float(loss.detach()), w.clone()
        x_adv = x.detach() + eps * (best_w[n_t:] - x.detach())
        return x_adv.clamp(0.0, 1.0) if self.clip else x_adv

    def max_linf(self, eps: float) -> None:
        """No bound: ``eps`` times the Adam displacement, which has no ball (measure it)."""
        return None
