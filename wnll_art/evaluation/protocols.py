"""Attack plans: the main job's, the paper's stated protocol, and the adaptive protocol.

The paper protocol follows Wang et al. (2018) as stated: IFGSM 10 steps of size eps, C&W with c = 10 and
kappa = 0 (Foolbox's Adam C&W, one whole WNLL batch per step), WNLL attacked through the straight-through surrogate gradient, TVM unseen by the attacker
(applied after the attack). The adaptive protocol adds what a defence must survive (Athalye et al. 2018;
Tramer et al. 2020; Croce & Hein 2020): PGD (random start, step 2.5 eps / steps), APGD-CE and APGD-DLR, each
on the exact WNLL view (score ``"smooth"``: deployed value, gradient of the WNLL on a wider graph, which does
not saturate) and on the straight-through view, all with BPDA through TVM and EOT over its masks; PGD
transferred from the softmax model; and Square (gradient-free, on the deployed output) as a masking check.
Steps, restarts, EOT samples and Square queries are named settings recorded with every spec.
Its robust accuracy for a family (FGSM, IFGSM, CW) is the per-image minimum over the family's paper attack
and all adaptive attacks, and ``"all"`` is the minimum over clean, every paper and every adaptive attack
(the headline number), so adaptive can never exceed the paper-protocol number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from wnll_art.adapters.attacks import (
    ArtAPGD,
    ArtAutoAttack,
    ArtBIM,
    ArtCarliniL2,
    ArtFGSM,
    ArtPGD,
    ArtSquare,
    FoolboxL2CW,
    FoolboxLinfPGD,
)
from wnll_art.evaluation.config import MAIN_ATTACKS, MAIN_DEFAULT
from wnll_art.evaluation.engine import AttackSpec
from wnll_art.evaluation.records import CellRecord, per_image_minimum
from wnll_art.evaluation.victims import Victim

__all__ = ["ADAPTIVE_DEFAULT", "ALL", "CLEAN", "FAMILIES", "adaptive_minimum", "adaptive_specs", "main_specs", "paper_specs", "select_specs",
           "specs_for_victim"]

CLEAN = AttackSpec("clean", None)
# family -> paper spec name
FAMILIES = {"fgsm": "fgsm", "ifgsm": "ifgsm", "cw_l2": "cw_l2"}
ALL = "all"  # the adaptive minimum over clean, every paper attack and every adaptive attack
# the default adaptive plan (names in adaptive_specs); the others there are older, weaker attacks kept by name
ADAPTIVE_DEFAULT = ("pgd_exact_eot", "pgd_surrogate_eot", "apgd_ce_exact_eot", "apgd_ce_surrogate_eot",
                    "apgd_dlr_exact_eot", "apgd_dlr_surrogate_eot", "transfer_pgd", "square")  # fmt: skip


def main_specs(
    *, eot_samples: int, cw_steps: int = 30, attacks: Sequence[str] | None = None
) -> list[AttackSpec]:
    """The ``wnll-art evaluate`` plan: white box with BPDA + EOT through TVM (PGD with the straight-through WNLL
    gradient, the others exact), plus BIM transferred from the softmax model (a gradient-masking check); clean
    accuracy first, then the attacks named in ``attacks`` (a subset of
    :data:`~wnll_art.evaluation.config.MAIN_ATTACKS`; ``None``: :data:`~wnll_art.evaluation.config.MAIN_DEFAULT`)."""
    specs = [
        CLEAN,
        AttackSpec("fgsm", ArtFGSM(), eot_samples=eot_samples),
        AttackSpec("bim", ArtBIM(steps=10, step_fraction=0.25), eot_samples=eot_samples),
        AttackSpec("cw_l2", ArtCarliniL2(steps=cw_steps, learning_rate=0.01), eot_samples=eot_samples),
        # straight-through WNLL gradient: on the 200-image adaptive run the exact one (saturated) left 39.5%
        # where this one left 2% (evaluations/results/adaptive_n200.md); identical on softmax
        AttackSpec("linf_pgd", FoolboxLinfPGD(steps=10, rel_stepsize=0.25), gradient="surrogate",
                   eot_samples=eot_samples),
        AttackSpec("fb_cw_l2", FoolboxL2CW(steps=cw_steps, stepsize=0.01), eot_samples=eot_samples),
        AttackSpec("transfer_bim", ArtBIM(steps=10, step_fraction=0.25), source="softmax", tvm="oblivious"),
    ]
    attacks = MAIN_DEFAULT if attacks is None else attacks
    unknown = set(attacks) - set(MAIN_ATTACKS)
    if unknown:
        raise ValueError(f"unknown attacks {sorted(unknown)}; choose from {list(MAIN_ATTACKS)}")
    return [s for s in specs if s.attack is None or s.name in attacks]


def paper_specs(*, cw_steps: int = 10) -> list[AttackSpec]:
    """The paper's stated settings (surrogate gradient on WNLL, TVM unseen by the attacker)."""
    return [
        CLEAN,
        AttackSpec("fgsm", ArtFGSM(), gradient="surrogate", tvm="oblivious"),
        AttackSpec("ifgsm", ArtBIM(steps=10, step_fraction=1.0), gradient="surrogate", tvm="oblivious"),
        # Foolbox's C&W: whole-batch Adam steps, as in the authors' code (ART's line search predicts on subsets of
        # the batch, which changes a transductive WNLL's graph, and costs about 10x the forward passes)
        AttackSpec("cw_l2", FoolboxL2CW(initial_const=10.0, confidence=0.0, steps=cw_steps, stepsize=0.01),
                   gradient="surrogate", tvm="oblivious"),
    ]  # fmt: skip


def adaptive_specs(
    *, eot_samples: int, steps: int = 20, restarts: int = 1, square_queries: int = 100, cw_steps: int = 30,
    score: Literal["log", "log64", "smooth"] = "smooth",
) -> list[AttackSpec]:
    """Every adaptive attack by name (all white box against the deployed model unless named ``transfer_``);
    :data:`ADAPTIVE_DEFAULT` names the default plan, the rest (FGSM, IFGSM of ``steps`` x eps/10, C&W,
    Foolbox PGD, AutoAttack) stay available by name.

    Args:
        eot_samples: TVM draws averaged per gradient (against a randomised defence).
        steps: Iterations of the iterative attacks.
        restarts: Random starts of PGD and APGD.
        square_queries: Iterations of the Square attack.
        cw_steps: C&W steps.
        score: WNLL score of the exact views (``"smooth"``: does not saturate; see :mod:`wnll_art.wnll.score`).
    """
    pgd, eot = ArtPGD(steps=steps, step_scale=2.5, restarts=restarts), eot_samples
    specs = [AttackSpec("pgd_exact_eot", pgd, eot_samples=eot, score=score),
             AttackSpec("pgd_surrogate_eot", pgd, gradient="surrogate", eot_samples=eot)]
    for short, loss in (("ce", "cross_entropy"), ("dlr", "difference_logits_ratio")):
        apgd = ArtAPGD(loss=loss, steps=steps, restarts=restarts)
        specs += [AttackSpec(f"apgd_{short}_exact_eot", apgd, eot_samples=eot, score=score),
                  AttackSpec(f"apgd_{short}_surrogate_eot", apgd, gradient="surrogate", eot_samples=eot)]
    return specs + [
        AttackSpec("transfer_pgd", pgd, source="softmax", tvm="oblivious"),
        AttackSpec("square", ArtSquare(queries=square_queries, restarts=restarts)),  # the deployed output, no EOT
        AttackSpec("fgsm_exact_eot", ArtFGSM(), eot_samples=eot),
        AttackSpec("pgd_fb_exact_eot", FoolboxLinfPGD(steps=steps, rel_stepsize=0.1), eot_samples=eot),
        AttackSpec("ifgsm_exact_eot", ArtBIM(steps=steps, step_fraction=0.1), eot_samples=eot),
        AttackSpec("ifgsm_surrogate_eot", ArtBIM(steps=steps, step_fraction=0.1), gradient="surrogate",
                   eot_samples=eot),
        AttackSpec("cw_l2_exact_eot", ArtCarliniL2(steps=cw_steps, learning_rate=0.01), eot_samples=eot),
        AttackSpec("transfer_ifgsm", ArtBIM(steps=steps, step_fraction=0.1), source="softmax", tvm="oblivious"),
        AttackSpec("autoattack", ArtAutoAttack(steps=steps), eot_samples=eot),
    ]  # fmt: skip


def adaptive_minimum(paper: Sequence[CellRecord], adaptive: Sequence[CellRecord]) -> list[CellRecord]:
    """Per family and eps: the per-image minimum over clean accuracy, the paper attack and every adaptive attack.

    Args:
        paper: Records of the paper protocol.
        adaptive: Records of the adaptive attacks (protocol ``"adaptive"``).

    Returns:
        New records with protocol ``"adaptive"`` and attack = the family name, plus :data:`ALL` per eps: the
        minimum over clean, every paper attack and every adaptive attack.
    """
    by_cell: dict[tuple[str, str, float], list[CellRecord]] = {}
    for r in adaptive:
        by_cell.setdefault((r.model, r.defence, r.eps), []).append(r)
    clean = [r for r in paper if r.attack == "clean"]
    out = []
    for p in paper:
        if p.attack in FAMILIES:
            # robust = correct clean and under every attack, so it never exceeds clean or paper accuracy
            parts = [r for r in clean if (r.model, r.defence) == (p.model, p.defence)]
            parts += [p, *by_cell.get((p.model, p.defence, p.eps), [])]
            out += per_image_minimum(parts, attack=p.attack, protocol="adaptive", include_clean=True)
    everything = [r for r in paper if r.attack != "clean" and r.eps > 0] + list(adaptive)
    # one group per (model, defence, eps), each with its victim's clean record
    out += per_image_minimum([*clean, *everything], attack=ALL, protocol="adaptive", include_clean=True)
    return out


def specs_for_victim(victim: Victim, specs: Sequence[AttackSpec]) -> list[AttackSpec]:
    """``specs`` without those that would only repeat a cell on ``victim``: on a softmax model the surrogate
    gradient is the exact one, and transfer from the undefended softmax model onto itself is white box."""
    if victim.model != "softmax":
        return list(specs)
    return [
        s
        for s in specs
        if s.gradient != "surrogate" and not (s.source == "softmax" and victim.defence == "none")
    ]


def select_specs(specs: Sequence[AttackSpec], names: Sequence[str] | None, *, what: str) -> list[AttackSpec]:
    """The specs named in ``names``, in plan order (``None``: all of them).

    Raises:
        ValueError: ``names`` is empty or names an unknown spec (the message says which and lists ``what``
            can be chosen).
    """
    if names is None:
        return list(specs)
    known = [s.name for s in specs]
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise ValueError(f"{what}: unknown {unknown} or none given; choose a non-empty subset of {known}")
    return [s for s in specs if s.name in names]
