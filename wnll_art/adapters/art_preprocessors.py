"""ART's input-transformation defences as ``nn.Module`` purifiers with ART's own gradient estimate.

C. Guo et al., ICLR 2018 (``TotalVarMin``, ``JpegCompression``); G. K. Dziugaite et al. 2016 (JPEG);
W. Xu, D. Evans, Y. Qi, NDSS 2018 (``SpatialSmoothing``, ``FeatureSqueezing``).

ART's numpy preprocessors are not differentiable; ART's ``PyTorchClassifier(preprocessing_defences=...)``
back-propagates through them with each preprocessor's ``estimate_gradient``, which for all four is the identity
(BPDA, A. Athalye et al., ICML 2018). :class:`ArtPreprocessor` wraps a preprocessor as an ``nn.Module`` whose
backward *is* that ``estimate_gradient``, so ART and Foolbox attacks see the same function and gradient as
through ART's own classifier. A :class:`~wnll_art.defence.Defence` takes it as its ``purifier``.

A randomised preprocessor (``TotalVarMin``, which draws its masks from NumPy's global RNG) holds a
``torch.Generator``: each call draws one seed from it and runs ART inside
:func:`~wnll_art._random.seeded_globals` (the global states are restored afterwards); :meth:`ArtPreprocessor.drawing`
draws from another seed or generator for one block, as :meth:`wnll_art.tvm.module.TVMPurifier.drawing` does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from wnll_art._random import drawing_from, seed_generator, seeded_globals

__all__ = ["ART_PREPROCESSORS", "ArtEntry", "ArtPreprocessor", "art_defence"]


@dataclass(frozen=True)
class ArtEntry:
    """How one ART preprocessor is built and attacked (one entry of :data:`ART_PREPROCESSORS`).

    Attributes:
        art_class: Class name in ``art.defences.preprocessor``.
        options: Its options (``clip_values=(0, 1)`` is always added), each overridable per run.
        gradient: What the attacker differentiates through it, in words (recorded with every result).
        channels_first: The class takes ``channels_first=True`` (else its layout is fixed, see ``channels_last``).
        channels_last: The class wants ``(N, H, W, C)`` (``TotalVarMin`` has no layout option).
        randomised: It draws from NumPy's global RNG (EOT and the K-draw rule then apply).
        slow: It solves an optimisation per image in NumPy / SciPy on the CPU (hours at n = 500):
            ``evaluations/gpu_compare.sh`` runs it only on its first ``SLOW_N`` images.
        citation: The paper of the defence at these settings (the comparison's document cites it).
    """

    art_class: str
    options: dict[str, Any]
    gradient: str
    channels_first: bool = True
    channels_last: bool = False
    randomised: bool = False
    slow: bool = False
    citation: str = ""


# Adding an ART preprocessor to the comparison is one entry here: its name is then a defence everywhere, the
# comparison script (`evaluations/gpu_compare.sh`) included; `slow=True` runs it there on SLOW_N images only.
# Guo et al. 2018 (JPEG quality 75), ART defaults (window 3, TotalVarMin), Xu et al. 2018 (5 bits on CIFAR-10)
ART_PREPROCESSORS: dict[str, ArtEntry] = {
    "art_tvm": ArtEntry("TotalVarMin", {"prob": 0.3, "norm": 2, "lamb": 0.5, "solver": "L-BFGS-B", "max_iter": 10},
                        "BPDA: ART TotalVarMin.estimate_gradient (identity); EOT over its Bernoulli masks",
                        channels_first=False, channels_last=True, randomised=True, slow=True,
                        citation="C. Guo, M. Rana, M. Cisse, L. van der Maaten, ICLR 2018 (ART's default settings)"),
    "jpeg": ArtEntry("JpegCompression", {"quality": 75},
                     "BPDA: ART JpegCompression.estimate_gradient (identity); deterministic, no EOT",
                     citation="G. K. Dziugaite, Z. Ghahramani, D. Roy, arXiv:1608.00853 (2016); N. Das et al., "
                              "arXiv:1705.02900 (2017)"),
    "spatial_smoothing": ArtEntry("SpatialSmoothing", {"window_size": 3},
                                  "BPDA: ART SpatialSmoothing.estimate_gradient (identity); deterministic, no EOT",
                                  citation="W. Xu, D. Evans, Y. Qi, NDSS 2018 (median smoothing)"),
    "feature_squeezing": ArtEntry("FeatureSqueezing", {"bit_depth": 5},
                                  "BPDA: ART FeatureSqueezing.estimate_gradient (identity; the true gradient is 0 a.e.)",
                                  channels_first=False, citation="W. Xu, D. Evans, Y. Qi, NDSS 2018 (bit-depth reduction)"),
    # TotalVarMin at Guo et al.'s settings (keep 50 %, TV weight 0.03; ART's defaults are 30 % and 0.5)
    "art_tvm_guo": ArtEntry("TotalVarMin", {"prob": 0.5, "norm": 2, "lamb": 0.03, "solver": "L-BFGS-B", "max_iter": 10},
                            "BPDA: ART TotalVarMin.estimate_gradient (identity); EOT over its Bernoulli masks",
                            channels_first=False, channels_last=True, randomised=True, slow=True,
                            citation="C. Guo, M. Rana, M. Cisse, L. van der Maaten, ICLR 2018 (their settings)"),
    # Gaussian noise at test time (GaussianAugmentation without augmentation: every image replaced by a noisy one)
    "gaussian_noise": ArtEntry("GaussianAugmentation", {"sigma": 8 / 255, "augmentation": False},
                               "BPDA: identity through the added noise; EOT over its draws", channels_first=False,
                               randomised=True, citation="test-time randomisation (Gaussian noise; cf. X. Liu et al., "
                                                         "ECCV 2018; J. Cohen et al., ICML 2019)"),
}  # fmt: skip


class _BPDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: ArtPreprocessor) -> torch.Tensor:  # type: ignore[override]
        ctx.module, ctx.x_np = module, module._to_art(x)
        return module._from_art(module._run_art(ctx.x_np), x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        module: ArtPreprocessor = ctx.module
        estimate = module.preprocessor.estimate_gradient(ctx.x_np, module._to_art(grad))
        return module._from_art(np.asarray(estimate), grad), None


class ArtPreprocessor(nn.Module):
    """An ART numpy ``Preprocessor`` as an ``nn.Module`` with ART's gradient estimate as its backward.

    Args:
        name: Defence name in the records.
        preprocessor: The ART preprocessor (``clip_values=(0, 1)`` where it takes them).
        channels_last: The preprocessor expects ``(N, H, W, C)`` (ART's ``TotalVarMin`` does; it has no
            ``channels_first`` option and would otherwise smooth image columns as if they were channels).
        randomised: The preprocessor draws from NumPy's global generator (``TotalVarMin``); each call then
            draws one seed from :attr:`generator` and runs ART with the global RNGs seeded with it (and
            restored afterwards).
        seed: Seed of :attr:`generator` (never changed afterwards).
        gradient_note: What the attacker differentiates, in words (recorded in :meth:`settings`).

    Shapes:
        ``(N, 3, H, W)`` float in [0, 1] on any device -> same shape, dtype and device.

    Attributes:
        generator: The CPU generator each call of a randomised preprocessor draws its seed from (replaced
            inside a :meth:`drawing` block).
    """

    gradient = "bpda"

    def __init__(
        self,
        name: str,
        preprocessor: Any,
        *,
        channels_last: bool = False,
        randomised: bool = False,
        seed: int = 0,
        gradient_note: str = "BPDA: estimate_gradient",
    ) -> None:
        super().__init__()
        self.name, self.preprocessor, self.gradient_note = name, preprocessor, gradient_note
        self.channels_last, self.randomised = channels_last, randomised
        self.generator: torch.Generator = seed_generator(seed)  # checks seed
        self.seed: int = seed

    def drawing(self, seed_or_generator: int | torch.Generator) -> AbstractContextManager[None]:
        """Inside the block, calls draw from ``seed_or_generator`` (an int: a fresh generator seeded with it);
        the previous generator is back on exit (no effect on deterministic preprocessors).

        Raises:
            TypeError: ``seed_or_generator`` is neither an int nor a ``torch.Generator``.
        """
        return drawing_from(self, seed_or_generator)

    def with_gradient(self, gradient: str) -> ArtPreprocessor:
        if gradient != "bpda":
            raise ValueError(f"{self.name}: ART preprocessors offer only the BPDA gradient, not {gradient!r}")
        return self

    def _to_art(self, t: torch.Tensor) -> np.ndarray:
        a = t.detach().cpu().float().numpy()
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if self.channels_last else a

    def _from_art(self, a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            a = a.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)

    def _run_art(self, x: np.ndarray) -> np.ndarray:
        if not self.randomised:
            return np.asarray(self.preprocessor(x)[0])
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
        with seeded_globals(seed):
            return np.asarray(self.preprocessor(x)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _BPDAFunction.apply(x, self)
        return out

    def settings(self) -> dict[str, Any]:
        params = {k: getattr(self.preprocessor, k) for k in getattr(self.preprocessor, "params", [])}
        return {"name": self.name, "art_class": type(self.preprocessor).__name__, "params": params,
                "gradient": self.gradient_note, "randomised": self.randomised,
                "seed": self.seed}  # fmt: skip


def art_defence(name: str, *, seed: int = 0, **options: Any) -> ArtPreprocessor:
    """The ART preprocessor registered as ``name`` in :data:`ART_PREPROCESSORS`, with ``clip_values=(0, 1)`` and
    its entry's options overridden by ``options``.

    Raises:
        ValueError: An unknown name (the known ones listed).
    """
    import art.defences.preprocessor as art_pre

    if name not in ART_PREPROCESSORS:
        raise ValueError(f"unknown ART defence {name!r}; choose from {', '.join(ART_PREPROCESSORS)}")
    entry = ART_PREPROCESSORS[name]
    layout = {"channels_first": True} if entry.channels_first else {}
    preprocessor = getattr(art_pre, entry.art_class)(clip_values=(0.0, 1.0), **layout, **{**entry.options, **options})
    return ArtPreprocessor(name, preprocessor, channels_last=entry.channels_last, randomised=entry.randomised,
                           seed=seed, gradient_note=entry.gradient)  # fmt: skip
