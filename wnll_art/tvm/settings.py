"""The one TVM configuration: a frozen, validated settings type used by every path that purifies.

C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
Transformations", ICLR 2018 (the defence and its settings: keep 50 % of the pixels, TV weight 0.03).
A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018
(BPDA gradients and EOT samples: how an attacker differentiates through it).

The training cache, the evaluation, the ART preprocessor, the Foolbox path, the defence module and the
checkpoints all take a :class:`TVMSettings`; its :meth:`TVMSettings.to_dict` is what every result
record and checkpoint stores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["PRESETS", "TVMSettings"]

Objective = Literal["art", "isotropic"]
TVMGradient = Literal["bpda", "unrolled"]

# ADMM iterations of the named presets (measured in wnll_art.tvm.algorithm's notes):
# "art-default" beats ART TotalVarMin(max_iter=10) on >= 99 % of images, "art-100" ART max_iter=100,
# "converged" is within 0.2 % of the minimum.
PRESETS: dict[str, int] = {"art-default": 3, "art-100": 20, "converged": 300}


@dataclasses.dataclass(frozen=True)
class TVMSettings:
    """Everything that decides what the TVM purifier computes and how attackers see it.

    The default is Guo et al.'s setting, the one every evaluation uses: keep 50 % of the pixel values,
    TV weight 0.03, ART's norm-2 objective, 20 ADMM iterations (the ``"art-100"`` preset), BPDA
    gradients and 2 EOT samples per attack gradient.

    Attributes:
        prob: Probability that a pixel value is *kept* (ART's meaning), in ``[0, 1]``.
        lamb: TV weight, finite, ``>= 0``.
        norm: ART's ``norm``, a positive int (the p of the row / column p-norms).
        objective: ``"art"`` (ART ``TotalVarMin``'s objective) or ``"isotropic"``.
        iterations: ADMM iterations (see :data:`PRESETS` and :meth:`from_preset`).
        gradient: ``"bpda"`` (identity backward, Athalye et al.) or ``"unrolled"`` (autograd through
            the iterations).
        eot_samples: TVM draws averaged per attack gradient (EOT); predictions use one draw.
    """

    prob: float = 0.5
    lamb: float = 0.03
    norm: int = 2
    objective: Objective = "art"
    iterations: int = 20
    gradient: TVMGradient = "bpda"
    eot_samples: int = 2

    def __post_init__(self) -> None:
        _check_unit_float(self.prob, "prob")
        if isinstance(self.lamb, bool) or not isinstance(self.lamb, (int, float)) or not math.isfinite(self.lamb):
            raise ValueError(f"TVMSettings.lamb must be a finite float >= 0, got {self.lamb!r}")
        if self.lamb < 0:
            raise ValueError(f"TVMSettings.lamb must be >= 0, got {self.lamb!r}")
        _check_positive_int(self.norm, "norm")
        _check_positive_int(self.iterations, "iterations")
        _check_positive_int(self.eot_samples, "eot_samples")
        if self.objective not in ("art", "isotropic"):
            raise ValueError(f"TVMSettings.objective must be 'art' or 'isotropic', got {self.objective!r}")
        if self.gradient not in ("bpda", "unrolled"):
            raise ValueError(f"TVMSettings.gradient must be 'bpda' or 'unrolled', got {self.gradient!r}")
        object.__setattr__(self, "prob", float(self.prob))
        object.__setattr__(self, "lamb", float(self.lamb))

    @classmethod
    def from_preset(cls, preset: str, **changes: Any) -> TVMSettings:
        """Settings with the iteration count of a named preset (``"art-default"``, ``"art-100"``, ...)."""
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        return cls(iterations=PRESETS[preset], **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TVMSettings:
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(data, Mapping):
            raise TypeError(f"TVM settings must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TVM settings {unknown}; known: {sorted(names)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (what records and checkpoints store)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TVMSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def solver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`wnll_art.tvm.total_variation_minimize` (no generator, no clip)."""
        return {"prob": self.prob, "lamb": self.lamb, "norm": self.norm, "objective": self.objective,
                "max_iter": self.iterations, "gradient": self.gradient}  # fmt: skip


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"TVMSettings.{name} must be a positive int, got {value!r}")


def _check_unit_float(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"TVMSettings.{name} must be a float in [0, 1], got {value!r}")
