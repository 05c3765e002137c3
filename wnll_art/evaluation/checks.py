"""Sanity checks before a robustness number is trusted (in the spirit of AutoAttack's checks).

F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020; A. Athalye, N. Carlini, D. Wagner, ICML 2018 (signs of obfuscated
gradients); F. Tramer et al., "On Adaptive Attacks to Adversarial Example Defenses", NeurIPS 2020.

Each check returns human-readable flags; the jobs store them with the records and the tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wnll_art.evaluation.records import CellRecord

__all__ = ["VANISHING", "eps_monotonicity_flags", "model_flags", "stronger_flags", "transfer_flags"]

# A loss gradient whose largest entry is below this is useless to sign- and step-based attacks in float32
# (the softmax ResNet-56's median on CIFAR-10 is ~1e-3; saturated WNLL outputs reach ~1e-13).
VANISHING = 1e-8


def _outputs_are_probabilities(scores: torch.Tensor) -> bool:
    in_range = bool(((scores >= 0) & (scores <= 1)).all())
    return in_range and bool(torch.allclose(scores.sum(1), torch.ones_like(scores[:, 0]), atol=1e-4))


def model_flags(
    predict: nn.Module, attack_view: nn.Module, x: torch.Tensor, y: torch.Tensor, *, reseed: object = None
) -> list[str]:
    """Flags of one victim on clean inputs: softmax outputs, zero gradients, randomness.

    Args:
        predict: The deployed model.
        attack_view: The module attacks differentiate.
        x: ``(N, 3, H, W)`` clean images in [0, 1] (one WNLL batch).
        y: ``(N,)`` labels.
        reseed: Optional callable ``seed -> None`` restarting the defence's randomness.

    Returns:
        Flags (empty when nothing is suspicious).
    """
    flags = []
    with torch.no_grad():
        if callable(reseed):
            reseed(1)
        first = predict(x)
        if callable(reseed):
            reseed(2)
        second = predict(x)
    if _outputs_are_probabilities(first):
        flags.append("softmax_outputs: the model returns probabilities; CE/DLR attacks need logits")
    changed = float((first.argmax(1) != second.argmax(1)).float().mean())
    if not torch.equal(first, second):
        flags.append(
            f"randomised_defence: outputs change between draws ({100 * changed:.1f}% of labels); "
            "gradient attacks must use EOT"
        )
    x_req = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(attack_view(x_req), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_req)
    largest = grad.flatten(1).abs().amax(1)
    zero = float((largest == 0).float().mean())
    if zero > 0:
        flags.append(f"zero_gradients: {100 * zero:.1f}% of images have an exactly zero loss gradient")
    vanishing = float(((largest > 0) & (largest < VANISHING)).float().mean())
    if vanishing > 0:
        flags.append(
            f"vanishing_gradients: {100 * vanishing:.1f}% of images have a loss gradient below {VANISHING:g} "
            "(saturated outputs): trust surrogate/transfer attacks over exact-gradient ones"
        )
    return flags


def eps_monotonicity_flags(records: Sequence[CellRecord], *, slack: int = 1) -> dict[str, list[str]]:
    """Robust accuracy must not grow with eps (beyond ``slack`` images): key -> flags."""
    groups: dict[tuple[str, str, str, str], list[CellRecord]] = {}
    for r in records:
        if r.attack != "clean":
            groups.setdefault((r.protocol, r.model, r.defence, r.attack), []).append(r)
    flags: dict[str, list[str]] = {}
    for recs in groups.values():
        recs = sorted(recs, key=lambda r: r.eps)
        for small, large in zip(recs, recs[1:], strict=False):
            if sum(large.per_image_correct) > sum(small.per_image_correct) + slack:
                flags.setdefault(large.key, []).append(
                    f"non_monotone_eps: accuracy rises from {100 * small.accuracy:.1f}% at eps={small.eps:g} "
                    f"to {100 * large.accuracy:.1f}% at eps={large.eps:g}"
                )
    return flags


def stronger_flags(
    records: Sequence[CellRecord], *, reference: str, challenger: str, flag: str, why: str
) -> dict[str, list[str]]:
    """Flags ``reference`` cells that a (supposedly weaker) ``challenger`` attack beats at the same eps.

    E.g. reference = the exact-gradient IFGSM, challenger = the surrogate-gradient IFGSM or a transfer
    attack: if the challenger wins, the reference's gradient is probably masked.

    Args:
        records: Records of one run (cells are matched on protocol, model, defence and eps).
        reference: Attack name of the cells to flag.
        challenger: Attack name of the cells that should not be stronger.
        flag: Flag name (first word of the message).
        why: What a win of the challenger means, in words.

    Returns:
        ``{reference cell key: flags}``.
    """
    index = {(r.protocol, r.model, r.defence, r.attack, r.eps): r for r in records}
    flags: dict[str, list[str]] = {}
    for (protocol, model, defence, attack, eps), rec in index.items():
        ref = index.get((protocol, model, defence, reference, eps)) if attack == challenger else None
        if ref is not None and rec.accuracy < ref.accuracy:
            flags.setdefault(ref.key, []).append(
                f"{flag}: {challenger} gives {100 * rec.accuracy:.1f}% < {reference} {100 * ref.accuracy:.1f}% at "
                f"eps={eps:g} ({why})"
            )
    return flags


def transfer_flags(
    records: Sequence[CellRecord], *, white_box: str = "bim", transfer: str = "transfer_bim"
) -> dict[str, list[str]]:
    """A black-box (transfer) attack stronger than the white-box one signals masked gradients."""
    return stronger_flags(records, reference=white_box, challenger=transfer, flag="black_box_stronger",
                          why="transfer from softmax beats white box")  # fmt: skip
