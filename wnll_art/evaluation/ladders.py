"""The comparison's convergence evidence read back from a run folder: the ladders on a sub-sample and the full-budget
re-run they call for.

N. Carlini et al., "On Evaluating Adversarial Robustness" (2019): an attack whose accuracy still falls when its
step budget grows has not reached its worst case. ``evaluations/compare_defences.py convergence`` re-runs a victim's
strongest gradient attack on the first 20 images at steps 10, 20, 50, 100 (``<run>/convergence/cells``, protocol
``"convergence"``). When the best-so-far accuracy at the ladder's top is below the one at the plan's own step count
by more than 1 point (:func:`budget_due`), the plan's number is loose: ``compare_defences.py budget`` re-runs that
attack at the top budget on every image of the run (``<run>/budget/cells``, protocol ``"budget"``, named
``<attack>__steps<k>``), and the row's worst case takes it in (:mod:`wnll_art.evaluation.comparison`).

Limits: only the step ladder calls for a re-run (a randomised victim whose EOT ladder still falls gets its flag, not
a re-run); the ladder is best so far, so against a randomised victim a draw that breaks one more of the 20 images at
the top rung can call for it too (one image of 20 is 5 points); a ladder stopped before its unbounded check (written
last) is unfinished and calls for nothing yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wnll_art.evaluation.checks import convergence_flags
from wnll_art.evaluation.records import CellRecord

__all__ = ["BUDGET_TOLERANCE", "Convergence", "budget_due", "convergence_of"]

BUDGET_TOLERANCE = 0.01  # a fall of more than 1 point past the plan's steps calls for the full-budget re-run


@dataclass(frozen=True)
class Convergence:
    """A victim's convergence ladders read back from its convergence cells (best so far, as
    :meth:`wnll_art.evaluation.checks.Convergence.run` computes them).

    Attributes:
        attack: The re-run attack (the victim's strongest gradient attack).
        eps: Its eps.
        n: Images of the sub-sample.
        steps: ``{steps: accuracy}``, best so far.
        eot: ``{EOT samples: accuracy}``, best so far (empty for a deterministic victim).
        unbounded: ``(eps, accuracy)`` of the unbounded check, if run.
        flags: ``not_converged`` / ``unbounded_not_zero`` lines.
    """

    attack: str
    eps: float
    n: int
    steps: dict[int, float]
    eot: dict[int, float]
    unbounded: tuple[float, float] | None
    flags: tuple[str, ...]


def _ladder(records: Iterable[CellRecord], attack: str, kind: str) -> dict[int, float]:
    """Best-so-far accuracy per budget of one ladder (``kind``: ``"steps"`` or ``"eot"``)."""
    rungs = {int(r.attack.rsplit(kind, 1)[1]): r for r in records if r.attack.startswith(f"{attack}__{kind}")}
    robust: list[int] | None = None
    curve = {}
    for budget in sorted(rungs):
        now = rungs[budget].per_image_correct
        robust = now if robust is None else [a & b for a, b in zip(robust, now, strict=True)]
        curve[budget] = sum(robust) / len(robust)
    return curve


def convergence_of(records: Sequence[CellRecord], model: str, defence: str) -> Convergence | None:
    """The convergence ladders of ``model + defence`` among convergence ``records`` (``None``: not run)."""
    mine = [r for r in records if (r.model, r.defence) == (model, defence) and "__" in r.attack]
    if not mine:
        return None
    attack = sorted(mine, key=lambda r: r.attack)[0].attack.split("__")[0]
    mine = [r for r in mine if r.attack.split("__")[0] == attack]
    eps = next((r.eps for r in mine if "__unbounded" not in r.attack), mine[0].eps)
    steps, eot = _ladder(mine, attack, "steps"), _ladder(mine, attack, "eot")
    unbounded = next(((r.eps, r.accuracy) for r in mine if r.attack.endswith("__unbounded")), None)
    flags = convergence_flags(steps, what=f"{attack} steps at eps={eps:g}")
    flags += convergence_flags(eot, what=f"{attack} EOT samples at eps={eps:g}")
    if unbounded is not None and unbounded[1] > 0:
        flags.append(f"unbounded_not_zero: {attack} at eps={unbounded[0]:g} leaves {100 * unbounded[1]:.1f}% correct")
    return Convergence(attack, eps, mine[0].n, steps, eot, unbounded, tuple(flags))


def budget_due(convergence: Convergence | None, plan_steps: int, *, tolerance: float = BUDGET_TOLERANCE) -> int | None:
    """The step count at which to re-run the ladder's attack on every image, or ``None`` when none is called for.

    One is called for when the ladder is finished (its unbounded check, run last, is recorded) and its best-so-far
    accuracy at its largest step count is below the one at the plan's ``plan_steps`` (the largest rung not above
    it) by more than ``tolerance``: the plan's attack stopped short of what a larger budget finds on the sub-sample.

    Args:
        convergence: The victim's ladders (``None``: not run, nothing is due).
        plan_steps: Steps the laddered attack had in the run (:meth:`~wnll_art.evaluation.comparison.RunFolder.attack_steps`).
        tolerance: Largest fall (a fraction) still left alone.
    """
    if convergence is None or not convergence.steps or convergence.unbounded is None:  # not run, or unfinished
        return None
    top = max(convergence.steps)
    within = [k for k in convergence.steps if k <= plan_steps]
    if top <= plan_steps or not within:
        return None
    fall = convergence.steps[max(within)] - convergence.steps[top]
    return top if fall > tolerance + 1e-9 else None  # 1e-9: a fall of exactly `tolerance` in float arithmetic
