"""The run configuration every evaluation job shares: one frozen :class:`EvalConfig`, checked when built.

This is the lowest layer of :mod:`wnll_art.evaluation`: it imports nothing of it. What a job adds is its own
(the attack plan's sizes are :class:`~wnll_art.evaluation.protocols.PlanOptions`); model and defence names are
checked against their registries when the victims are built (:mod:`wnll_art.evaluation.victims`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from wnll_art._device import check_device
from wnll_art.tvm.settings import TVMSettings

__all__ = ["Coupling", "EvalConfig", "Kernel"]

Coupling = Literal["transductive", "inductive"]
Kernel = Literal["gaussian", "quartic"]


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation run (all recorded in ``run.json`` and every cell).

    Every field is checked when the object is built (``TypeError``/``ValueError`` naming the field).

    Attributes:
        n: Test images (the first ``n`` from ``start``).
        start: Index of the first test image.
        eps: L-inf radii in (0, 1] pixel units.
        models: Model labels (``"softmax"``, ``"wnll"`` or trained zoo names; see
            :data:`~wnll_art.evaluation.victims.MODELS`).
        defences: Purifier names (``"none"``, ``"tvm"``, ART's; see :data:`~wnll_art.evaluation.victims.PURIFIERS`).
        wnll_batch_size: Transductive WNLL batch = attack batch = sharding unit.
        template_size: Class-balanced template drawn from the training set (a multiple of 10).
        coupling: ``"transductive"`` or ``"inductive"``.
        kernel: ``"gaussian"`` or ``"quartic"``.
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
    models: tuple[str, ...] = ("softmax", "wnll")
    defences: tuple[str, ...] = ("none", "tvm")
    wnll_batch_size: int = 500
    template_size: int = 500
    coupling: Coupling = "transductive"
    kernel: Kernel = "gaussian"
    tvm: TVMSettings = field(default_factory=TVMSettings)
    tvm_draws: int = 3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("eps", "models", "defences"):  # lists from JSON or callers become tuples
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _check_ints(self)
        _check_names(self)
        if not isinstance(self.tvm, TVMSettings):
            raise TypeError(f"tvm must be a TVMSettings, got {type(self.tvm).__name__}")
        if not isinstance(self.device, str):  # recorded as JSON
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {self.device!r}")
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
    for name, low in (("wnll_batch_size", 1), ("tvm_draws", 1), ("seed", 0)):
        value = getattr(cfg, name)
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not _is_int(cfg.template_size) or cfg.template_size < 10 or cfg.template_size % 10:
        raise ValueError(
            f"template_size must be a positive multiple of 10 (one share per class), got {cfg.template_size!r}"
        )


def _check_names(cfg: EvalConfig) -> None:
    if (
        not isinstance(cfg.eps, tuple)
        or not cfg.eps
        or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 < e <= 1.0 for e in cfg.eps)
    ):
        raise ValueError(f"eps must be one or more radii in (0, 1], got {cfg.eps}")
    if len(set(cfg.eps)) != len(cfg.eps):
        raise ValueError(f"eps must not repeat a radius (each is one cell), got {cfg.eps}")
    for name in ("models", "defences"):
        value = getattr(cfg, name)
        if not value or not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
            raise ValueError(f"{name} must be one or more distinct names, got {value}")
    if cfg.coupling not in get_args(Coupling) or cfg.kernel not in get_args(Kernel):
        raise ValueError(
            f"coupling/kernel must be transductive|inductive / gaussian|quartic, got {cfg.coupling!r} / {cfg.kernel!r}"
        )
