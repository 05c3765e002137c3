"""The two alternating optimisation steps of WNLL training: a linear-head step, then a WNLL step.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018), Sec. 3, and
B. Wang, X. Luo, Z. Li, W. Zhu, Z. Shi, S. Osher, "Deep Neural Nets with Interpolating Function as Output
Activation", NeurIPS 2018: the network (backbone -> FC+ReLU buffer block) carries two parallel heads, a
linear (softmax) head and the WNLL interpolation against a labelled template drawn from the training set.
Training alternates a softmax cross-entropy step on the linear head with a step on the loss of the WNLL
output, whose gradient is taken either straight through the linear head (the paper's surrogate) or exactly
through the WNLL solve.

The surrogate. The WNLL output is ``log u`` (``u`` the label functions, rows summing to one). We feed it
to :func:`torch.nn.functional.cross_entropy` as logits; its value is then ``-log u_y``, the NLL of the WNLL
output. In the backward pass the straight-through estimator of :class:`wnll_art.wnll.model.WNLLNet`
(``gradient="surrogate"``: forward ``log u``, backward ``log_softmax`` of the linear head) gives the
gradient ``u - e_y`` with respect to the linear-head logits: the softmax cross-entropy gradient with the
WNLL probabilities in place of the softmax ones. (``nll_loss`` on the same straight-through output would
give ``softmax - e_y``, i.e. exactly the linear step's gradient, whatever the WNLL output is.)

The public code of the authors never updated the network in its WNLL stage (its optimiser held the
parameters of a model object that was then replaced by one loaded from disk); here the WNLL step is a
real optimiser step on every trainable parameter reached by the gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from wnll_art.wnll.solver import wnll_interpolate
from wnll_art.wnll.template import balanced_template

__all__ = ["draw_template_indices", "linear_step", "solver_options", "wnll_loss", "wnll_step"]

SOLVER_KEYS = ("k", "sigma_neighbor", "kernel", "gamma", "solver")

Gradient = Literal["surrogate", "exact"]
Embed = Callable[[torch.Tensor], torch.Tensor]


def solver_options(net: nn.Module) -> dict[str, Any]:
    """The :func:`wnll_interpolate` options of a :class:`WNLLNet` (from its public ``settings()``)."""
    settings = net.settings()  # type: ignore[operator]
    return {key: settings[key] for key in SOLVER_KEYS}


def draw_template_indices(
    labels: torch.Tensor,
    per_class: int,
    *,
    generator: torch.Generator,
    num_classes: int,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of a class-balanced template drawn from a labelled pool, avoiding ``exclude``.

    Args:
        labels: ``(N,)`` int64 labels of the pool, on CPU.
        per_class: Template points per class.
        generator: CPU generator, the only source of randomness.
        num_classes: Number of classes ``C``.
        exclude: Optional ``(B,)`` int64 pool indices that must not be drawn (the current batch, so that
            no batch point is its own labelled neighbour).

    Returns:
        ``(C * per_class,)`` int64 CPU indices into the pool, ordered by class.
    """
    pool = torch.arange(labels.shape[0])
    if exclude is not None and exclude.numel() > 0:
        keep = torch.ones(labels.shape[0], dtype=torch.bool)
        keep[exclude.cpu()] = False
        pool = pool[keep]
    chosen, _ = balanced_template(pool, labels[pool], per_class, generator=generator, num_classes=num_classes)
    return chosen


def linear_step(
    *,
    embed: Embed,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> tuple[float, int]:
    """One SGD step on the softmax cross-entropy of the linear head.

    Args:
        embed: Inputs -> ``(B, D)`` features of the buffer block (with grad).
        head: The linear head ``D -> C``.
        optimizer: Optimiser over the trainable parameters.
        inputs: ``(B, ...)`` batch accepted by ``embed``, on the training device.
        labels: ``(B,)`` int64 labels on the same device.
        autocast: Factory of the mixed-precision context of the forward pass.

    Returns:
        ``(loss, correct)``: the batch-mean loss and the number of correct linear predictions.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        logits = head(embed(inputs)).float()
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), int((logits.detach().argmax(1) == labels).sum())


def wnll_loss(
    feats: torch.Tensor,
    template_feats: torch.Tensor,
    template_labels: torch.Tensor,
    labels: torch.Tensor,
    *,
    head: nn.Module,
    gradient: Gradient,
    options: Mapping[str, Any],
    num_classes: int,
    log_floor: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of the WNLL output of a batch solved together with a template.

    Args:
        feats: ``(B, D)`` float32/float64 batch features (with grad).
        template_feats: ``(M, D)`` template features, same dtype/device (with grad for ``"exact"``).
        template_labels: ``(M,)`` int64 template labels on the same device; every class present.
        labels: ``(B,)`` int64 labels of the batch.
        head: Linear head ``D -> C`` (carries the surrogate gradient).
        gradient: ``"surrogate"`` (straight through the linear head, see the module docstring) or
            ``"exact"`` (autodiff through the WNLL solve).
        options: Keyword options of :func:`wnll_art.wnll.solver.wnll_interpolate` (``k``, ``kernel``, ...).
        num_classes: Number of classes ``C``.
        log_floor: ``u`` is clamped to ``[log_floor, 1]`` before the log, as in ``WNLLNet``.

    Returns:
        ``(loss, u)``: the scalar loss (value = mean NLL of the WNLL output) and the detached ``(B, C)``
        label functions.
    """
    if gradient == "surrogate":
        with torch.no_grad():
            u = wnll_interpolate(
                feats.detach(), template_feats.detach(), template_labels, num_classes=num_classes, **options
            )
        log_u = torch.log(u.clamp(log_floor, 1.0))
        log_p = F.log_softmax(head(feats).float(), dim=1)
        scores = log_p + (log_u - log_p).detach()
    elif gradient == "exact":
        u = wnll_interpolate(feats, template_feats, template_labels, num_classes=num_classes, **options)
        scores = torch.log(u.clamp(log_floor, 1.0))
    else:
        raise ValueError(f"gradient must be 'surrogate' or 'exact', got {gradient!r}")
    return F.cross_entropy(scores, labels), u.detach()


def wnll_step(
    *,
    embed: Embed,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    template_inputs: torch.Tensor,
    template_labels: torch.Tensor,
    gradient: Gradient,
    options: Mapping[str, Any],
    num_classes: int,
    weight: float = 1.0,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> tuple[float, int]:
    """One SGD step on the WNLL loss of a batch solved with a template (see :func:`wnll_loss`).

    With ``"surrogate"`` the template is embedded without grad (its features carry no gradient); with
    ``"exact"`` batch and template are embedded in one pass with grad.

    Args:
        embed: Inputs -> ``(·, D)`` features of the buffer block.
        head: The linear head.
        optimizer: Optimiser over the trainable parameters.
        inputs: ``(B, ...)`` batch, on the training device.
        labels: ``(B,)`` int64 labels.
        template_inputs: ``(M, ...)`` template inputs, same device.
        template_labels: ``(M,)`` int64 template labels, every class present.
        gradient: ``"surrogate"`` or ``"exact"``.
        options: Options of :func:`wnll_interpolate`.
        num_classes: Number of classes ``C``.
        weight: Factor on the loss (the linear step has weight 1).
        autocast: Factory of the mixed-precision context of the forward pass (the solve runs in float32).

    Returns:
        ``(loss, correct)``: the NLL of the WNLL output and the number of correct WNLL predictions.
    """
    optimizer.zero_grad(set_to_none=True)
    n = inputs.shape[0]
    with autocast():
        if gradient == "surrogate":
            with torch.no_grad():
                template_feats = embed(template_inputs)
            feats = embed(inputs)
        else:
            both = embed(torch.cat([inputs, template_inputs]))
            feats, template_feats = both[:n], both[n:]
    loss, u = wnll_loss(
        feats.float(), template_feats.float(), template_labels, labels,
        head=head, gradient=gradient, options=options, num_classes=num_classes,
    )  # fmt: skip
    (weight * loss).backward()
    optimizer.step()
    return float(loss.detach()), int((u.argmax(1) == labels).sum())
