"""The two alternating optimisation steps of WNLL training: a linear-head step, then a WNLL step.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018), Sec. 3, and
B. Wang, X. Luo, Z. Li, W. Zhu, Z. Shi, S. Osher, "Deep Neural Nets with Interpolating Function as Output
Activation", NeurIPS 2018: the network (backbone -> FC+ReLU buffer block) carries two parallel heads, a
linear (softmax) head and the WNLL interpolation against a labelled template drawn from the training set.
Training alternates a softmax cross-entropy step on the linear head with a step on the loss of the WNLL
output, whose gradient is taken either straight through the linear head (the paper's surrogate) or exactly
through the WNLL solve (``net.gradient``).

The WNLL output is scored by :func:`wnll_art.wnll.score.wnll_scores`, the function ``WNLLNet`` returns:
``log(u + floor)``. Fed to :func:`torch.nn.functional.cross_entropy` as logits, its value is the NLL of
the WNLL output (plus ``log(1 + C * floor)`` < 1e-5) and, with the surrogate, its gradient with respect to
the linear-head logits is ``u - e_y``: the softmax cross-entropy gradient with the WNLL probabilities in
place of the softmax ones. (``nll_loss`` on the straight-through output would give ``softmax - e_y``,
exactly the linear step's gradient, whatever the WNLL output is.)

The public code of the authors never updated the network in its WNLL stage (its optimiser held the
parameters of a model object that was then replaced by one loaded from disk); here the WNLL step is a
real optimiser step on every trainable parameter reached by the gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.score import wnll_scores
from wnll_art.wnll.solver import wnll_interpolate_checked
from wnll_art.wnll.template import balanced_template

__all__ = ["draw_template_indices", "linear_step", "take", "wnll_loss", "wnll_step"]

Embed = Callable[[torch.Tensor], torch.Tensor]
Autocast = Callable[[], AbstractContextManager[Any]]


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
        labels: ``(N,)`` int64 labels of the pool, any device (read on the CPU).
        per_class: Template points per class.
        generator: CPU generator, the only source of randomness.
        num_classes: Number of classes ``C``.
        exclude: Optional ``(B,)`` int64 pool indices (any device) that must not be drawn (the current
            batch, so that no batch point is its own labelled neighbour).

    Returns:
        ``(C * per_class,)`` int64 indices into the pool, ordered by class, on ``labels.device``. Index
        other tensors with :func:`take`, which moves them to the device of the tensor indexed.
    """
    labels_cpu = labels.cpu()
    pool = torch.arange(labels_cpu.shape[0])
    if exclude is not None and exclude.numel() > 0:
        keep = torch.ones(labels_cpu.shape[0], dtype=torch.bool)
        keep[exclude.cpu()] = False
        pool = pool[keep]
    chosen, _ = balanced_template(
        pool, labels_cpu[pool], per_class, generator=generator, num_classes=num_classes
    )
    return chosen.to(labels.device)


def take(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor[index]`` with ``index`` moved to ``tensor.device`` first (the result stays there)."""
    return tensor[index.to(tensor.device)]


def linear_step(
    *,
    net: WNLLNet,
    embed: Embed,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    autocast: Autocast = nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the softmax cross-entropy of ``net.linear_head`` (no host synchronisation).

    Args:
        net: The model (its linear head is used).
        embed: Inputs -> ``(B, D)`` features of the buffer block (with grad).
        optimizer: Optimiser over the trainable parameters.
        inputs: ``(B, ...)`` batch accepted by ``embed``, on the training device.
        labels: ``(B,)`` int64 labels on the same device.
        autocast: Factory of the mixed-precision context of the forward pass.

    Returns:
        ``(loss, correct)``: detached 0-d tensors on the training device, the batch-mean loss and the number
        of correct linear predictions.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        logits = net.linear_head(embed(inputs)).float()
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) == labels).sum()


def wnll_loss(
    feats: torch.Tensor,
    template_feats: torch.Tensor,
    template_labels: torch.Tensor,
    labels: torch.Tensor,
    *,
    net: WNLLNet,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``net``'s WNLL scores of a batch solved together with a template.

    The kNN graph, the solve and the scores are computed in float32 with autocast disabled, whatever
    the dtype of the features and any autocast context around the call.

    Args:
        feats: ``(B, D)`` batch features (with grad), any floating dtype, on the training device.
        template_feats: ``(M, D)`` template features, same device (with grad for ``"exact"``).
        template_labels: ``(M,)`` int64 template labels on the same device; every class present.
        labels: ``(B,)`` int64 labels of the batch.
        net: Supplies the gradient mode (``net.gradient``), the solver options, the class count, the
            log floor and the linear head carrying the surrogate gradient.

    Returns:
        ``(loss, u)``: the scalar loss (the NLL of the WNLL output ``net`` would return) and the
        detached ``(B, C)`` float32 label functions.
    """

    def solve(x: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        # the model's options were checked when it was built; the template is drawn from labelled data
        return wnll_interpolate_checked(x, template, template_labels, num_classes=net.num_classes, k=net.k,
                                        sigma_neighbor=net.sigma_neighbor, kernel=net.kernel, gamma=net.gamma,
                                        solver=net.solver)  # fmt: skip

    with torch.autocast(feats.device.type, enabled=False):
        feats, template_feats = feats.float(), template_feats.float()
        linear = None
        if net.gradient == "surrogate":
            with torch.no_grad():
                u = solve(feats.detach(), template_feats.detach())
            linear = net.linear_head(feats)
        else:
            u = solve(feats, template_feats)
        scores = wnll_scores(u, gradient=net.gradient, linear_logits=linear, log_floor=net.log_floor)
        return F.cross_entropy(scores, labels), u.detach()


def wnll_step(
    *,
    net: WNLLNet,
    embed: Embed,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    template_inputs: torch.Tensor,
    template_labels: torch.Tensor,
    weight: float = 1.0,
    autocast: Autocast = nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the WNLL loss of a batch solved with a template (see :func:`wnll_loss`); no host
    read of its own (the solver's checks may synchronise).

    With ``net.gradient == "surrogate"`` the template is embedded without grad (its features carry no
    gradient); with ``"exact"`` batch and template are embedded in one pass with grad.

    Args:
        net: The model (gradient mode, solver options, linear head).
        embed: Inputs -> ``(·, D)`` features of the buffer block.
        optimizer: Optimiser over the trainable parameters.
        inputs: ``(B, ...)`` batch, on the training device.
        labels: ``(B,)`` int64 labels, same device.
        template_inputs: ``(M, ...)`` template inputs, same device.
        template_labels: ``(M,)`` int64 template labels, same device, every class present.
        weight: Factor on the loss (the linear step has weight 1).
        autocast: Factory of the mixed-precision context of the forward pass (the solve runs in float32).

    Returns:
        ``(loss, correct)``: detached 0-d tensors on the training device, the NLL of the WNLL output and the
        number of correct WNLL predictions.
    """
    optimizer.zero_grad(set_to_none=True)
    n = inputs.shape[0]
    with autocast():
        if net.gradient == "surrogate":
            with torch.no_grad():
                template_feats = embed(template_inputs)
            feats = embed(inputs)
        else:
            both = embed(torch.cat([inputs, template_inputs]))
            feats, template_feats = both[:n], both[n:]
    loss, u = wnll_loss(feats, template_feats, template_labels, labels, net=net)
    (weight * loss).backward()
    optimizer.step()
    return loss.detach(), (u.argmax(1) == labels).sum()
