"""The run configuration of every evaluation job: one frozen :class:`EvalConfig`, checked when built.

This is the lowest layer of :mod:`wnll_art.evaluation`: it imports nothing of it. The names of the main
job's attacks live here (:data:`MAIN_ATTACKS`) so a configuration can be checked before any attack exists;
:func:`wnll_art.evaluation.protocols.main_specs` builds exactly these.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from wnll_art import _argparse
from wnll_art.tvm.settings import TVMSettings

__all__ = ["MAIN_ATTACKS", "MAIN_DEFAULT", "Coupling", "DefenceName", "EvalConfig", "Kernel", "ModelName", "check_device"]

ModelName = Literal["softmax", "wnll"]
DefenceName = Literal["none", "tvm"]
Coupling = Literal["transductive", "inductive"]
Kernel = Literal["gaussian", "quartic"]

# the main job's attacks, in plan order (clean accuracy is always measured)
MAIN_ATTACKS = ("fgsm", "bim", "cw_l2", "linf_pgd", "fb_cw_l2", "transfer_bim")
# run when none are named (the README's quick demo, <= 5 minutes on 2 CPU cores): the iterative white-box attack
# is Foolbox's PGD (random start, 10 steps of 2.5 eps / 10), which subsumes ART's BIM; the paper's C&W is
# Foolbox's (whole-batch Adam steps, as the authors' code), ART's line-search C&W ("cw_l2") costing several times
# its forward passes; "bim" and "cw_l2" stay available by name
MAIN_DEFAULT = ("fgsm", "linf_pgd", "fb_cw_l2", "transfer_bim")


def check_device(device: str) -> str:
    """Returns ``device`` if it is a torch device usable here, else raises ``ValueError`` with a remedy."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        return _argparse.device(device)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"device {exc}") from None


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation run (all recorded in ``run.json`` and every cell).

    Every field is checked when the object is built (``TypeError``/``ValueError`` naming the field).

    Attributes:
        n: Test images (the first ``n`` from ``start``).
        start: Index of the first test image.
        eps: L-inf radii in (0, 1] pixel units.
        models: Subset of ``("softmax", "wnll")`` holding ``"softmax"``.
        defences: Subset of ``("none", "tvm")``.
        attacks: Names among :data:`MAIN_ATTACKS` (``None``: :data:`MAIN_DEFAULT`); used by the main job only.
        wnll_batch_size: Transductive WNLL batch = attack batch = sharding unit.
        template_size: Class-balanced template drawn from the training set (a multiple of 10).
        coupling: ``"transductive"`` or ``"inductive"``.
        kernel: ``"gaussian"`` or ``"quartic"``.
        cw_steps: Optimisation steps of the C&W attacks (the authors' code: 10).
        tvm: The TVM settings (default: Guo et al.'s); ``tvm.eot_samples`` is the one EOT draw count of
            the run, used whenever an attack differentiates a randomised defence.
        tvm_draws: K: a randomised (TVM) victim's image counts as correct only if K independent TVM draws
            classify it correctly (records also keep the mean over the draws).
        seed: Seed of the template draw, TVM masks and attack random starts.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (checked to exist on this machine).
    """

    n: int = 50
    start: int = 0
    eps: tuple[float, ...] = (0.02, 0.04, 0.08)
    models: tuple[ModelName, ...] = ("softmax", "wnll")
    defences: tuple[DefenceName, ...] = ("none", "tvm")
    attacks: tuple[str, ...] | None = None
    wnll_batch_size: int = 500
    template_size: int = 500
    coupling: Coupling = "transductive"
    kernel: Kernel = "gaussian"
    cw_steps: int = 10
    tvm: TVMSettings = field(default_factory=TVMSettings)
    tvm_draws: int = 3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("eps", "models", "defences", "attacks"):  # lists from JSON or callers become tuples
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _check_ints(self)
        _check_names(self)
        if not isinstance(self.tvm, TVMSettings):
            raise TypeError(f"tvm must be a TVMSettings, got {type(self.tvm).__name__}")
        check_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (what ``run.json`` and every record store under ``run``)."""
        return {**asdict(self), "tvm": self.tvm.to_dict()}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_ints(cfg: EvalConfig) -> None:
    if not _is_int(cfg.n) or not _is_int(cfg.start):
        raise TypeError(f"n and start must be ints, got n={cfg.n!r}, start={cfg.start!r}")
    if cfg.n < 1 or cfg.start < 0 or cfg.start + cfg.n > 10000:
        raise ValueError(f"need 1 <= n and start + n <= 10000, got start={cfg.start}, n={cfg.n}")
    for name, low in (("wnll_batch_size", 1), ("cw_steps", 1), ("tvm_draws", 1), ("seed", 0)):
        value = getattr(cfg, name)
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not _is_int(cfg.template_size) or cfg.template_size < 10 or cfg.template_size % 10:
        raise ValueError(
            f"template_size must be a positive multiple of 10 (one share per class), got {cfg.template_size!r}"
        )


def _check_names(cfg: EvalConfig) -> None:
    if not isinstance(cfg.eps, tuple) or not cfg.eps or any(
        isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 < e <= 1.0 for e in cfg.eps
    ):
        raise ValueError(f"eps must be one or more radii in (0, 1], got {cfg.eps}")
    if len(set(cfg.eps)) != len(cfg.eps):
        raise ValueError(f"eps must not repeat a radius (each is one cell), got {cfg.eps}")
    if not set(cfg.models) <= set(get_args(ModelName)) or "softmax" not in cfg.models:
        raise ValueError(f"models must include 'softmax' and be within ('softmax', 'wnll'), got {cfg.models}")
    if not cfg.defences or not set(cfg.defences) <= set(get_args(DefenceName)):
        raise ValueError(f"defences must be one or more of ('none', 'tvm'), got {cfg.defences}")
    if cfg.coupling not in get_args(Coupling) or cfg.kernel not in get_args(Kernel):
        raise ValueError(
            f"coupling/kernel must be transductive|inductive / gaussian|quartic, got {cfg.coupling!r} / {cfg.kernel!r}"
        )
    if cfg.attacks is not None:
        if not cfg.attacks:
            raise ValueError("attacks: give at least one attack (or None for the default plan)")
        unknown = set(cfg.attacks) - set(MAIN_ATTACKS)
        if unknown:
            raise ValueError(f"unknown attacks {sorted(unknown)}; choose from {list(MAIN_ATTACKS)}")
