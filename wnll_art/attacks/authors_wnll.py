"""What the authors' WNLL attack script differentiates, and how it draws its template.

``Fool_WNLLDNN.py`` (@67fe264; BaoWangMath/DNN-DataDependentActivation) attacks the whole batch template +
test images through ``ResNet_Cifar.forward(..., stage_flag=2, train_flag=0)`` (lines 168-249): the buffer
block's features go through ``WNLL`` (lines 251-315), whose output is ``x = self.fc(x); x.data =
Predict.data`` (lines 313-314) - the value is the WNLL label function (exactly one-hot on the template rows,
``uf[id_o] = g``, ``WNLL.py`` line 84), the backward pass that of the linear head ``fc`` - and the loss is
``nn.CrossEntropyLoss`` (mean) of those raw values against the labels of the whole batch (line 243).
:func:`victim_wnll_view` is the ablation's other end (issue 19): the victim's own WNLL (its template, graph
and coupling; the template outside the attacked batch), with the script's loss or the ``paper`` protocol's.
The graph: FLANN k-means-tree kNN (approximate) with 15 neighbours counting the point itself, weights
``exp(-(d^2 / d_8^2)^2)`` with ``d_8`` the distance to the 8th (``WNLL.py`` lines 27-39: ``kernel="quartic"``),
template weight ``gamma = n / |template|`` in Python 2 integer division over all ``n`` points (line 91: 3 for
500 + 1000), BiCGSTAB to 1e-7 (line 119). :func:`script_wnll_view` builds that function from a
:class:`~wnll_art.wnll.model.WNLLNet` (exact kNN, our solver in float64).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from wnll_art._checks import check_images, check_labels, check_positive_int
from wnll_art.attacks.authors import Scores
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.score import wnll_scores
from wnll_art.wnll.solver import wnll_interpolate

__all__ = ["Loss", "script_template", "script_wnll_view", "victim_wnll_view"]

Loss = Literal["script", "paper"]


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
