"""Attack plans by registration: every attack spec is declared once, with its protocol, its place in the default
plan and the masking checks it runs against other specs.

Protocols (:data:`PROTOCOLS`):

- ``main``: the ``wnll-art evaluate`` demo plan: white box with BPDA + EOT through TVM, plus BIM transferred
  from the softmax model.
- ``paper``: Wang et al. (2018) as stated: IFGSM 10 steps of size eps, C&W with c = 10 and kappa = 0 (Foolbox's
  Adam C&W, one whole WNLL batch per step, as the authors' code), WNLL attacked through the straight-through
  surrogate gradient, TVM unseen by the attacker (applied after the attack).
- ``adaptive``: what a defence must survive (Athalye et al. 2018; Tramer et al. 2020; Croce & Hein 2020): PGD
  (random start, step 2.5 eps / steps), APGD-CE and APGD-DLR, each on the WNLL's smooth view (score ``"smooth"``:
  deployed value, the gradient of the WNLL on a wider graph, which does not saturate) and on the straight-through
  view, all with BPDA through TVM and EOT over its masks; PGD transferred from the softmax model; and Square
  (gradient-free, on the deployed output) as a masking check. Spec names say the gradient: ``smooth``,
  ``exact`` (through the deployed solve) or ``surrogate`` (straight-through).

Adding an attack to a protocol is one :func:`register` call (see ``DEVELOPERS.md``). A protocol's robust accuracy
is the per-image minimum over clean accuracy and every attack run (``worst_case``; the paper / adaptive table also
takes it per family, :func:`adaptive_minimum`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from wnll_art.adapters.attacks import (
    ArtAPGD,
    ArtAutoAttack,
    ArtBIM,
    ArtCarliniL2,
    ArtFGSM,
    ArtMomentumIterative,
    ArtPGD,
    ArtSquare,
    FoolboxL2CW,
    FoolboxLinfPGD,
)
from wnll_art.attacks import Attack
from wnll_art.attacks.authors_protocol import AuthorsScript
from wnll_art.evaluation.records import CellRecord, per_image_minimum
from wnll_art.registry import Registry

if TYPE_CHECKING:
    from wnll_art.evaluation.victims import Victim

__all__ = ["ALL", "CLEAN", "FAMILIES", "PROTOCOLS", "SPECS", "WNLL_STEPS", "AttackSpec", "Check", "PlanOptions",
           "SpecEntry", "adaptive_minimum", "plan", "register", "registry_flags"]  # fmt: skip


@dataclass(frozen=True)
class AttackSpec:
    """One attack as run in a protocol.

    Attributes:
        name: Name in the records (e.g. ``"fgsm"``, ``"pgd_smooth_eot"``, ``"transfer_pgd"``).
        attack: The attack, or ``None`` for clean accuracy.
        gradient: WNLL gradient the attacker uses.
        tvm: How the attacker sees TVM: ``"bpda"``, ``"unrolled"`` or ``"oblivious"``.
        score: WNLL score the attacker differentiates (``"log"`` deployed, ``"log64"``, ``"smooth"``; see
            :mod:`wnll_art.wnll.score`). Ignored for softmax models.
        eot_samples: EOT draws (only used against a randomised defence).
        source: ``"self"`` (white box) or the model label of the undefended victim the adversarials are crafted
            on (a transfer attack: the same adversarials for every victim).
    """

    name: str
    attack: Attack | None
    gradient: Literal["exact", "surrogate"] = "exact"
    tvm: Literal["bpda", "unrolled", "oblivious"] = "bpda"
    score: Literal["log", "log64", "smooth"] = "log"
    eot_samples: int = 1
    source: str = "self"

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "attack": None if self.attack is None else self.attack.settings(),
                "gradient": self.gradient, "score": self.score, "tvm": self.tvm, "eot_samples": self.eot_samples,
                "source": self.source}  # fmt: skip


CLEAN = AttackSpec("clean", None)


@dataclass(frozen=True)
class PlanOptions:
    """How the attacks of a plan are sized (one default each; recorded in ``run.json``).

    Attributes:
        eot_samples: TVM draws averaged per gradient against a randomised defence.
        steps: Iterations of the adaptive iterative attacks (PGD, APGD, IFGSM).
        restarts: Random starts of PGD and APGD.
        square_queries: Iterations of the Square attack.
        cw_steps: C&W optimisation steps of the ``main`` and ``adaptive`` plans (the ``paper`` plan keeps the
            authors' 10).
    """

    eot_samples: int = 2
    steps: int = 20
    restarts: int = 1
    square_queries: int = 100
    cw_steps: int = 10

    def __post_init__(self) -> None:
        for name in ("eot_samples", "steps", "restarts", "square_queries", "cw_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """A masking check: the spec it is declared on (the challenger) must not beat ``reference`` at any eps.

    Attributes:
        reference: Attack name of the cells flagged when the challenger wins (same model, defence and eps).
        flag: The flag's first word (e.g. ``"black_box_stronger"``).
        why: What a win of the challenger means, in words.
        protocol: The reference's protocol (``None``: the challenger's).
    """

    reference: str
    flag: str
    why: str
    protocol: str | None = None


@dataclass(frozen=True)
class SpecEntry:
    """A registered spec (see :func:`register`)."""

    protocol: str
    name: str
    attack: Callable[[PlanOptions], Attack]
    view: dict[str, Any]
    eot: bool
    default: bool
    checks: tuple[Check, ...]
    skip: Callable[[Victim], bool] | None

    def build(self, options: PlanOptions) -> AttackSpec:
        return AttackSpec(self.name, self.attack(options), eot_samples=options.eot_samples if self.eot else 1,
                          **self.view)  # fmt: skip


SPECS: Registry[SpecEntry] = Registry("attack")
PROTOCOLS: Registry[str] = Registry("protocol")  # name -> one line of what it is


def register(
    protocol: str, name: str, attack: Callable[[PlanOptions], Attack], *, default: bool = True, eot: bool = True,
    checks: tuple[Check, ...] = (), skip: Callable[[Victim], bool] | None = None, **view: str,
) -> SpecEntry:  # fmt: skip
    """Registers spec ``name`` of ``protocol``: ``attack(options)`` run on the view ``view`` describes.

    Args:
        protocol: A name in :data:`PROTOCOLS`.
        name: The spec's name in the records (say the gradient: ``_smooth_``, ``_exact_``, ``_surrogate_``).
        attack: Builds the attack from the plan's sizes.
        default: Whether the protocol's default plan runs it (else by name only).
        eot: Average ``options.eot_samples`` draws per gradient against a randomised defence.
        checks: Masking checks: the cells of each ``Check.reference`` are flagged when this spec beats them.
        skip: The victims on which it would only repeat another cell.
        **view: :class:`AttackSpec` fields: ``gradient``, ``tvm``, ``score``, ``source``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; register it in PROTOCOLS first")
    entry = SpecEntry(protocol, name, attack, view, eot, default, checks, skip)
    SPECS.register(f"{protocol}:{name}", entry)
    return entry


def plan(protocol: str, options: PlanOptions, names: Sequence[str] | None = None) -> list[AttackSpec]:
    """Clean accuracy, then ``protocol``'s specs named in ``names`` (``None``: its default plan), in
    registration order.

    Raises:
        ValueError: An unknown protocol, an empty ``names`` or one naming no spec of the protocol (all listed).
    """
    PROTOCOLS[protocol]  # noqa: B018 - raises on an unknown protocol, listing the known ones
    entries = [SPECS[k] for k in SPECS if SPECS[k].protocol == protocol]
    known = [e.name for e in entries]
    if names is not None:
        unknown = sorted(set(names) - set(known))
        if unknown or not names:
            raise ValueError(
                f"{protocol} attacks: unknown {unknown} or none given; choose from {', '.join(known)}"
            )
    chosen = [e for e in entries if (e.default if names is None else e.name in names)]
    return [CLEAN, *(e.build(options) for e in chosen)]


def skipped(protocol: str, spec: AttackSpec, victim: Victim) -> bool:
    """Whether ``spec`` would only repeat another cell on ``victim`` (declared by its entry's ``skip``)."""
    key = f"{protocol}:{spec.name}"
    return key in SPECS and SPECS[key].skip is not None and SPECS[key].skip(victim)  # type: ignore[misc]


def registry_flags(records: Sequence[CellRecord]) -> dict[str, list[str]]:
    """``{cell key: flags}`` of every registered :class:`Check` whose challenger beats its reference."""
    index = {(r.protocol, r.attack, r.model, r.defence, r.eps): r for r in records}
    flags: dict[str, list[str]] = {}
    for r in records:
        key = f"{r.protocol}:{r.attack}"
        for check in SPECS[key].checks if key in SPECS else ():
            ref = index.get((check.protocol or r.protocol, check.reference, r.model, r.defence, r.eps))
            if ref is not None and r.accuracy < ref.accuracy:
                flags.setdefault(ref.key, []).append(
                    f"{check.flag}: {r.attack} gives {100 * r.accuracy:.1f}% < {check.reference} "
                    f"{100 * ref.accuracy:.1f}% at eps={r.eps:g} ({check.why})")  # fmt: skip
    return flags


def _no_wnll(victim: Victim) -> bool:  # the surrogate gradient is the exact one on a softmax model
    return victim.module.wnll is None


def _is_source(victim: Victim) -> bool:  # transfer from the undefended softmax onto itself is white box
    return victim.model == "softmax" and victim.defence == "none"


_TRANSFER = "transfer beats white box"
_SURROGATE = "exact WNLL gradient weaker than the straight-through one"

# ------------------------------------------------------------------------------------------------ main
PROTOCOLS.register("main", "the wnll-art evaluate demo: white box, BPDA + EOT through TVM, BIM from softmax")
register("main", "fgsm", lambda o: ArtFGSM())
register("main", "bim", lambda o: ArtBIM(steps=10, step_fraction=0.25), default=False)
# ART's line-search C&W costs several times Foolbox's forward passes: by name only
register("main", "cw_l2", lambda o: ArtCarliniL2(steps=o.cw_steps, learning_rate=0.01), default=False)
# straight-through WNLL gradient: on the 200-image adaptive run the exact one (saturated) left 39.5% where this
# one left 2% (evaluations/results/adaptive_n200.md); identical on softmax
register("main", "linf_pgd", lambda o: FoolboxLinfPGD(steps=10, rel_stepsize=0.25), gradient="surrogate")
register("main", "fb_cw_l2", lambda o: FoolboxL2CW(steps=o.cw_steps, stepsize=0.01))
register("main", "transfer_bim", lambda o: ArtBIM(steps=10, step_fraction=0.25), eot=False, source="softmax",
         tvm="oblivious", checks=(Check("bim", "black_box_stronger", _TRANSFER), Check("linf_pgd", "black_box_stronger", _TRANSFER)))  # fmt: skip

# ----------------------------------------------------------------------------------------------- paper
PROTOCOLS.register("paper", "Wang et al. (2018) as stated: surrogate gradient on WNLL, TVM unseen, IFGSM 10 x eps")
_PAPER: dict[str, Any] = {"eot": False, "gradient": "surrogate", "tvm": "oblivious"}
register("paper", "fgsm", lambda o: ArtFGSM(), **_PAPER, checks=(Check(
    "fgsm_exact_eot", "paper_attack_stronger", "surrogate / TVM-oblivious FGSM beats exact + BPDA + EOT", "adaptive"),))  # fmt: skip
register("paper", "ifgsm", lambda o: ArtBIM(steps=10, step_fraction=1.0), **_PAPER)
# Foolbox's C&W: whole-batch Adam steps, as in the authors' code (ART's line search predicts on subsets of the
# batch, which changes a transductive WNLL's graph); 10 steps as the authors' code
register("paper", "cw_l2", lambda o: FoolboxL2CW(initial_const=10.0, confidence=0.0, steps=10, stepsize=0.01), **_PAPER)  # fmt: skip
FAMILIES = ("fgsm", "ifgsm", "cw_l2")  # the paper's attack families (its table's rows)

# -------------------------------------------------------------------------------------------- adaptive
PROTOCOLS.register("adaptive", "smooth / exact and straight-through gradients, BPDA + EOT, transfer, Square")
_PGD = "pgd_smooth_eot"
_SMOOTH: dict[str, Any] = {"score": "smooth"}
_SUR: dict[str, Any] = {"gradient": "surrogate", "skip": _no_wnll}
register("adaptive", _PGD, lambda o: ArtPGD(steps=o.steps, step_scale=2.5, restarts=o.restarts), **_SMOOTH)
register("adaptive", "pgd_surrogate_eot", lambda o: ArtPGD(steps=o.steps, step_scale=2.5, restarts=o.restarts),
         **_SUR, checks=(Check(_PGD, "surrogate_stronger", _SURROGATE),))  # fmt: skip
for _short, _loss in (("ce", "cross_entropy"), ("dlr", "difference_logits_ratio")):
    def _apgd(o: PlanOptions, loss: str = _loss) -> Attack:
        return ArtAPGD(loss=loss, steps=o.steps, restarts=o.restarts)

    register("adaptive", f"apgd_{_short}_smooth_eot", _apgd, **_SMOOTH)
    register("adaptive", f"apgd_{_short}_surrogate_eot", _apgd, **_SUR)
register("adaptive", "transfer_pgd", lambda o: ArtPGD(steps=o.steps, step_scale=2.5, restarts=o.restarts), eot=False,
         source="softmax", tvm="oblivious", skip=_is_source, checks=(Check(_PGD, "black_box_stronger", _TRANSFER),))  # fmt: skip
register("adaptive", "square", lambda o: ArtSquare(queries=o.square_queries, restarts=o.restarts), eot=False,
         checks=(Check(_PGD, "gradient_free_stronger", "Square beats smooth-gradient PGD: masked gradients"),))  # fmt: skip
# older, weaker attacks, by name only
register("adaptive", "fgsm_exact_eot", lambda o: ArtFGSM(), default=False)
register("adaptive", "pgd_fb_exact_eot", lambda o: FoolboxLinfPGD(steps=o.steps, rel_stepsize=0.1), default=False)
register("adaptive", "ifgsm_exact_eot", lambda o: ArtBIM(steps=o.steps, step_fraction=0.1), default=False)
register("adaptive", "ifgsm_surrogate_eot", lambda o: ArtBIM(steps=o.steps, step_fraction=0.1), default=False,
         **_SUR, checks=(Check("ifgsm_exact_eot", "surrogate_stronger", _SURROGATE),))  # fmt: skip
register("adaptive", "cw_l2_exact_eot", lambda o: ArtCarliniL2(steps=o.cw_steps, learning_rate=0.01), default=False)
register("adaptive", "transfer_ifgsm", lambda o: ArtBIM(steps=o.steps, step_fraction=0.1), default=False, eot=False,
         source="softmax", tvm="oblivious", skip=_is_source, checks=(Check("ifgsm_exact_eot", "black_box_stronger", _TRANSFER),))  # fmt: skip
register("adaptive", "autoattack", lambda o: ArtAutoAttack(steps=o.steps), default=False)
register("adaptive", "mifgsm_smooth_eot", lambda o: ArtMomentumIterative(steps=o.steps), **_SMOOTH, default=False,
         checks=(Check(_PGD, "momentum_stronger", "MI-FGSM beats PGD: a rugged loss surface, raise PGD's budget"),))  # fmt: skip

# --------------------------------------------------------------------------------------------- authors
def _script(*args: Any, **kwargs: Any) -> Callable[[PlanOptions], Attack]:  # AuthorsScript(*args, **kwargs), any sizes
    return lambda o: AuthorsScript(*args, **kwargs)


PROTOCOLS.register("authors", "the authors' attack scripts replicated (Fool_StandardDNN.py, Fool_WNLLDNN.py), bounds of their own")
_SCRIPT: dict[str, Any] = {"eot": False, "tvm": "oblivious"}  # Fool_StandardDNN.py on softmax victims, Fool_WNLLDNN.py on WNLL ones
for _method in FAMILIES:
    register("authors", _method, _script(method=_method), **_SCRIPT)
_SCRIPT["skip"] = lambda v: v.module.wnll is not None  # the ablation switches are the softmax script's
# the ablation (evaluations/paper_numbers.py): from the paper's attack, the script's steps switched on one at a time
for _name, _switches in (("fgsm_pixel_ascent", ("fgsm", 1, "pixel", "pixel")), ("fgsm_normalised_eps", ("fgsm", 1, "normalised", "pixel")),
                         ("fgsm_normalised_clamp", ("fgsm", 1, "normalised", "normalised")),
                         ("ifgsm_pixel", ("ifgsm", None, "pixel", "pixel")), ("ifgsm_normalised_eps", ("ifgsm", None, "normalised", "pixel"))):  # fmt: skip
    register("authors", _name, _script(*_switches), default=False, **_SCRIPT)
# the WNLL ablation (Fool_WNLLDNN.py; evaluations/authors_scripts.md section 8), on WNLL victims only
_SCRIPT["skip"] = _no_wnll
_VICTIM = {"wnll_graph": "victim", "wnll_template": "victim"}
WNLL_STEPS: dict[str, dict[str, str]] = {
    "wnll_fgsm_victim_graph": {"method": "fgsm", **_VICTIM, "wnll_loss": "paper"},
    "wnll_fgsm_script_loss": {"method": "fgsm", **_VICTIM},
    "wnll_fgsm_script_graph": {"method": "fgsm", "wnll_template": "victim"},
    "wnll_ifgsm_victim_graph": {"method": "ifgsm", **_VICTIM, "wnll_loss": "paper", "wnll_ball": "eps"},
    "wnll_ifgsm_script_loss": {"method": "ifgsm", **_VICTIM, "wnll_ball": "eps"},
    "wnll_ifgsm_script_ball": {"method": "ifgsm", **_VICTIM},
    "wnll_ifgsm_script_graph": {"method": "ifgsm", "wnll_template": "victim"},
    "wnll_cw_projected": {"method": "cw_l2", "cw_output": "projected"},
    "wnll_cw_raw": {"method": "cw_l2", "cw_output": "raw"},
}  # fmt: skip
for _name, _kw in WNLL_STEPS.items():
    register("authors", _name, _script(**_kw), default=False, **_SCRIPT)

ALL = "all"  # the adaptive minimum over clean, every paper attack and every adaptive attack


def adaptive_minimum(paper: Sequence[CellRecord], adaptive: Sequence[CellRecord]) -> list[CellRecord]:
    """Per family and eps: the per-image minimum over clean accuracy, the paper attack and every adaptive attack.

    Returns:
        New records with protocol ``"adaptive"`` and attack = the family name, plus :data:`ALL` per eps: the
        minimum over clean, every paper attack and every adaptive attack (so adaptive <= paper by construction).
    """
    by_cell: dict[tuple[str, str, float], list[CellRecord]] = {}
    for r in adaptive:
        by_cell.setdefault((r.model, r.defence, r.eps), []).append(r)
    clean = [r for r in paper if r.attack == "clean"]
    out = []
    for p in paper:
        if p.attack in FAMILIES:
            parts = [r for r in clean if (r.model, r.defence) == (p.model, p.defence)]
            parts += [p, *by_cell.get((p.model, p.defence, p.eps), [])]
            out += per_image_minimum(parts, attack=p.attack, protocol="adaptive", include_clean=True)
    everything = [r for r in paper if r.attack != "clean" and r.eps > 0] + list(adaptive)
    out += per_image_minimum([*clean, *everything], attack=ALL, protocol="adaptive", include_clean=True)
    return out
