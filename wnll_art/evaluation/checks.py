"""Sanity checks before a robustness number is trusted (in the spirit of AutoAttack's checks).

F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020; A. Athalye, N. Carlini, D. Wagner, ICML 2018 (signs of obfuscated
gradients); F. Tramer et al., "On Adaptive Attacks to Adversarial Example Defenses", NeurIPS 2020.

Each check returns human-readable flags; the jobs store them with the records and the tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wnll_art.evaluation.engine import Batches, run_cells
from wnll_art.evaluation.protocols import AttackSpec
from wnll_art.evaluation.records import CellRecord, RunStore
from wnll_art.evaluation.victims import Victim

__all__ = ["VANISHING", "Convergence", "convergence_flags", "convergence_specs", "eps_monotonicity_flags",
           "model_flags", "unbounded_flags", "undecided_flags"]  # fmt: skip

# A loss gradient whose largest entry is below this is useless to sign- and step-based attacks in float32
# (the softmax ResNet-56's median on CIFAR-10 is ~1e-3; saturated WNLL outputs reach ~1e-13).
VANISHING = 1e-8


def _outputs_are_probabilities(scores: torch.Tensor) -> bool:
    in_range = bool(((scores >= 0) & (scores <= 1)).all())
    return in_range and bool(torch.allclose(scores.sum(1), torch.ones_like(scores[:, 0]), atol=1e-4))


def model_flags(predict: nn.Module, attack_view: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """Flags of one victim on clean inputs: softmax outputs, zero gradients, randomness.

    Args:
        predict: The deployed model (a :class:`~wnll_art.defence.Defence`: two draws, seeded 1 and 2, through
            its ``drawing``; any other module is called twice).
        attack_view: The module attacks differentiate.
        x: ``(N, 3, H, W)`` clean images in [0, 1] (one WNLL batch).
        y: ``(N,)`` labels.

    Returns:
        Flags (empty when nothing is suspicious).
    """
    flags = []
    drawing = getattr(predict, "drawing", lambda seed: contextlib.nullcontext())
    with torch.no_grad(), drawing(1):
        first = predict(x)
    with drawing(2):  # the gradient continues the second draw's masks (a view shares the purifier)
        with torch.no_grad():
            second = predict(x)
        x_req = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(attack_view(x_req), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_req)
    if _outputs_are_probabilities(first):
        flags.append("softmax_outputs: the model returns probabilities; CE/DLR attacks need logits")
    changed = float((first.argmax(1) != second.argmax(1)).float().mean())
    if not torch.equal(first, second):
        flags.append(
            f"randomised_defence: outputs change between draws ({100 * changed:.1f}% of labels); "
            "gradient attacks must use EOT"
        )
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


def undecided_flags(records: Sequence[CellRecord]) -> dict[str, list[str]]:
    """``undecided_images`` on cells where some images got all-equal scores (no graph path to the template, see
    :func:`~wnll_art.evaluation.victims.predict_labels`): counted as errors, never as class 0, and named here."""
    return {r.key: [f"undecided_images: {r.extra['undecided_images']} of {r.n} images had all scores equal (no graph "
                    "path to the template) and count as errors"] for r in records if r.extra.get("undecided_images")}  # fmt: skip


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


# ------------------------------------------------------------------------------------ convergence
def convergence_specs(
    spec: AttackSpec, *, steps: Sequence[int], eot: Sequence[int]
) -> list[tuple[str, int, AttackSpec]]:
    """The ladders of N. Carlini et al., "On Evaluating Adversarial Robustness" (2019): ``spec`` re-run with
    each step count (its attack must have a ``steps`` field) and each EOT sample count.

    Returns:
        ``(ladder, budget, spec)`` triples, ladder ``"steps"`` or ``"eot"``, named ``<spec>__steps<k>`` /
        ``<spec>__eot<k>``.
    """
    if spec.attack is None or not hasattr(spec.attack, "steps"):
        raise ValueError(f"{spec.name}: convergence ladders need an attack with a `steps` setting")
    out = [("steps", k, dataclasses.replace(spec, name=f"{spec.name}__steps{k}",
                                             attack=dataclasses.replace(spec.attack, steps=k)))  # type: ignore[call-arg]
           for k in sorted(set(steps))]  # fmt: skip
    return out + [
        ("eot", k, dataclasses.replace(spec, name=f"{spec.name}__eot{k}", eot_samples=k))
        for k in sorted(set(eot))
    ]


def convergence_flags(curve: Mapping[int, float], *, what: str, tolerance: float = 0.01) -> list[str]:
    """``not_converged`` when the last step of a budget ladder (e.g. steps 50 -> 100) still lowers accuracy by
    more than ``tolerance`` (1 point): the attack has not reached its worst case.

    Args:
        curve: ``{budget: accuracy in [0, 1]}`` (steps or EOT samples) on one sub-sample.
        what: The ladder, in words (``"pgd_exact_eot steps"``).
        tolerance: Largest accuracy drop over the last doubling still called converged.
    """
    budgets = sorted(curve)
    if len(budgets) < 2:
        return []
    before, last = budgets[-2], budgets[-1]
    drop = curve[before] - curve[last]
    if drop <= tolerance:
        return []
    return [f"not_converged: {what}: accuracy falls from {100 * curve[before]:.1f}% at {before} to "
            f"{100 * curve[last]:.1f}% at {last} (more than {100 * tolerance:g} points): raise the budget"]  # fmt: skip


def unbounded_flags(accuracy: float, *, eps: float, what: str) -> list[str]:
    """``unbounded_not_zero`` when an attack at a large eps (e.g. 0.3, where images are unrecognisable) leaves
    any image correct: a sign of masked gradients or a broken attack (Carlini et al. 2019)."""
    if accuracy <= 0:
        return []
    return [f"unbounded_not_zero: {what} at eps={eps:g} leaves {100 * accuracy:.1f}% correct (expected 0)"]


@dataclasses.dataclass(frozen=True)
class Convergence:
    """The convergence checks (N. Carlini et al. 2019) of each victim's strongest gradient attack.

    Attributes:
        steps: Step-count ladder (flag when the last doubling still lowers the best-so-far accuracy by > 1
            point); ``()``: no checks.
        eot: EOT-sample ladder (against a randomised defence).
        images: Sub-sample: the first ``images`` evaluated images.
        unbounded_eps: Radius of the unbounded check (flag unless accuracy reaches 0).
    """

    steps: tuple[int, ...] = (10, 20, 50, 100)
    eot: tuple[int, ...] = (1, 2, 4)
    images: int = 20
    unbounded_eps: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "eot": list(self.eot), "images": self.images,
                "unbounded_eps": self.unbounded_eps}  # fmt: skip

    def run(
        self, victims: Sequence[Victim], sources: Mapping[str, Victim], specs: Sequence[AttackSpec],
        records: Sequence[CellRecord], batches: Batches, store: RunStore, *, eps: float, seed: int,
        run_settings: dict[str, Any], tvm_draws: int,
    ) -> dict[tuple[str, str], tuple[dict[str, Any], list[str]]]:  # fmt: skip
        """``{(model, defence): (curves, flags)}``: each victim's strongest gradient attack among ``records``
        (lowest accuracy at ``eps``) re-run on the sub-sample with the ladders (cells in ``store``, protocol
        ``"convergence"``, so a resumed run reads them back), then at :attr:`unbounded_eps`.

        The curves are best so far (an image counts as robust at budget k only if the attack failed at every
        budget <= k), on which the flags are computed; ``single`` holds each rung's own accuracy.
        """
        ladder = {s.name: s for s in specs if s.source == "self" and hasattr(s.attack, "steps")}
        if not self.steps or not ladder:
            return {}
        m = min(self.images, len(batches.indices))
        sub = Batches(batches.x[:m], batches.y[:m], batches.indices[:m], batches.batch_size, batches.dist)
        common: dict[str, Any] = dict(sources=sources, batches=sub, store=store, protocol="convergence", seed=seed,
                                      run_settings=run_settings, tvm_draws=tvm_draws)  # fmt: skip
        out = {}
        for v in victims:
            cells = [r for r in records if (r.model, r.defence, r.eps) == (v.model, v.defence, eps) and r.attack in ladder]
            if not cells:
                continue
            spec = ladder[min(cells, key=lambda r: (r.accuracy, list(ladder).index(r.attack))).attack]
            raw: dict[str, dict[int, float]] = {"steps": {}, "eot": {}}
            curves: dict[str, dict[int, float]] = {"steps": {}, "eot": {}}
            robust: dict[str, list[int]] = {}
            eot = self.eot if v.module.randomised else ()  # EOT only matters against a randomised defence
            for name, budget, s in convergence_specs(spec, steps=self.steps, eot=eot):
                (rec,) = run_cells(victims=[v], specs=[s], eps_values=[eps], **common)
                raw[name][budget] = rec.accuracy
                # best so far: single rungs against a randomised defence scatter by a few images; the flag asks
                # whether a larger budget finds adversarials that no smaller one found
                now = [a & b for a, b in zip(robust.get(name, rec.per_image_correct), rec.per_image_correct, strict=True)]
                robust[name], curves[name][budget] = now, sum(now) / len(now)
            unbounded = dataclasses.replace(spec, name=f"{spec.name}__unbounded")
            (rec,) = run_cells(victims=[v], specs=[unbounded], eps_values=[self.unbounded_eps], **common)
            flags = convergence_flags(curves["steps"], what=f"{spec.name} steps at eps={eps:g}")
            flags += convergence_flags(curves["eot"], what=f"{spec.name} EOT samples at eps={eps:g}") if eot else []
            flags += unbounded_flags(rec.accuracy, eps=self.unbounded_eps, what=spec.name)
            out[v.model, v.defence] = ({"attack": spec.name, "eps": eps, "n": m, **curves, "single": raw,
                                        "unbounded": {"eps": self.unbounded_eps, "accuracy": rec.accuracy}}, flags)  # fmt: skip
        return out
