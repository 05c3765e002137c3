"""ART preprocessor for TVM input purification: a fast, differentiable drop-in for ``TotalVarMin``.

References:
    C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
    Transformations", ICLR 2018 (the defence).
    B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via
    Data Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).
    A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018
    (BPDA and EOT: how the gradients below are meant to be used by attacks).

Thin: the algorithm is :func:`wnll_art.tvm.algorithm.total_variation_minimize`. Differences from ART's
``TotalVarMin``: ADMM instead of L-BFGS-B (``max_iter`` counts ADMM iterations; 3 already reach a
lower ``_loss_func`` value than ART's default 10 L-BFGS-B iterations on >= 99 % of CIFAR-10 images),
whole batches in PyTorch on the input's device, explicit seeding, NCHW by default, gradients by BPDA or
unrolling, and the result keeps the input's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from torch import Tensor

from wnll_art._checks import check_positive_int
from wnll_art.tvm.algorithm import (
    check_clip_values,
    make_generator,
    resolve_iterations,
    total_variation_minimize,
)
from wnll_art.tvm.settings import TVMSettings

__all__ = ["TotalVarMinimization"]

_SMALL_CHANNELS = (1, 3)


def _settings_field(field: str) -> Any:
    """A property reading ``self.settings.<field>``; assigning it replaces the (validated) settings."""

    def setter(self: Any, value: Any) -> None:
        self.settings = self.settings.replace(**{field: value})

    return property(lambda self: getattr(self.settings, field), setter)


class TotalVarMinimization(PreprocessorPyTorch):
    """TVM purification (Guo et al. 2018) as an ART ``PreprocessorPyTorch``.

    Computes the function of :class:`wnll_art.tvm.module.TVMPurifier` with the same
    :class:`~wnll_art.tvm.settings.TVMSettings` (default: Guo et al.'s, keep 50 %, lamb 0.03, 20 ADMM
    iterations). ART's parameter names override single fields of ``settings``.

    EOT is not done here: a preprocessor cannot average the model over draws without tiling the batch,
    which would change a transductive WNLL solve. For EOT, attack the defence module
    (``wnll_art.load_defence(..., tvm=True)`` in a ``WNLLClassifier``); this preprocessor is the
    standalone, one-draw-per-call TVM for ``preprocessing_defences``, differentiated by BPDA or unrolling.

    Args:
        prob: Probability that a pixel value is kept (ART's meaning: 0.3 keeps 30 %), drawn per pixel
            and channel; ``None``: ``settings.prob``.
        norm: ART's ``norm`` (positive int p of the "art" objective); ``None``: ``settings.norm``.
        lamb: ART's ``lamb``, TV weight ``>= 0``; ``None``: ``settings.lamb``.
        max_iter: ADMM iterations (ART counts L-BFGS-B iterations); exclusive with ``preset``;
            ``None``: ``settings.iterations``.
        clip_values: ``(min, max)``: inputs must lie in it and results are clipped to it, as in ART.
        apply_fit: Apply when fitting.
        apply_predict: Apply when predicting.
        verbose: Show a progress bar over chunks.
        settings: The TVM settings the other arguments start from (default :class:`TVMSettings`).
        seed: Seeds the CPU mask generator (successive calls still draw new masks); ``None``: OS entropy.
        generator: A ``torch.Generator`` to draw masks from (overrides ``seed``).
        objective: ``"art"`` (ART's ``_loss_func``, exactly) or ``"isotropic"``; ``None``: the settings'.
        preset: ``"art-default"``, ``"art-100"`` or ``"converged"`` (3, 20, 300 iterations).
        gradient: ``"bpda"`` (identity backward) or ``"unrolled"``; ``None``: the settings'.
        channels_first: ``True``: ``(N, C, H, W)``; ``False``: ``(N, H, W, C)`` as ART's ``TotalVarMin``.
        chunk_size: Images per solver call (``None``: 64 on CPU, whole batch elsewhere).
        compile: ``torch.compile`` the ADMM iteration (eager fallback with a warning).
        device_type: ``"gpu"`` or ``"cpu"``: where NumPy inputs of ``__call__`` are processed.

    Example:
        >>> tvm = TotalVarMinimization(clip_values=(0.0, 1.0), seed=0)
        >>> clf = PyTorchClassifier(model, loss, input_shape=(3, 32, 32), nb_classes=10,
        ...                         clip_values=(0.0, 1.0), preprocessing_defences=[tvm])
    """

    params = [
        "prob", "norm", "lamb", "max_iter", "clip_values", "verbose", "objective", "gradient",
        "channels_first", "chunk_size", "compile",
    ]  # fmt: skip

    def __init__(
        self,
        prob: float | None = None,
        norm: int | None = None,
        lamb: float | None = None,
        max_iter: int | None = None,
        clip_values: tuple[float, float] | None = None,
        apply_fit: bool = False,
        apply_predict: bool = True,
        verbose: bool = False,
        *,
        settings: TVMSettings | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        objective: str | None = None,
        preset: str | None = None,
        gradient: str | None = None,
        channels_first: bool = True,
        chunk_size: int | None = None,
        compile: bool = False,  # noqa: A002 - mirrors total_variation_minimize
        device_type: str = "gpu",
    ) -> None:
        super().__init__(
            device_type=device_type, is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict
        )
        base = TVMSettings() if settings is None else settings
        if not isinstance(base, TVMSettings):
            raise TypeError(f"settings must be a TVMSettings, got {type(base).__name__}")
        iterations = None if max_iter is None and preset is None else resolve_iterations(max_iter, preset)
        overrides = {"prob": prob, "norm": norm, "lamb": lamb, "objective": objective, "gradient": gradient,
                     "iterations": iterations}  # fmt: skip
        self.settings = base.replace(**{k: v for k, v in overrides.items() if v is not None})
        self.clip_values, self.verbose, self.channels_first = clip_values, verbose, channels_first
        self.chunk_size, self.compile = chunk_size, compile
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
        self.generator = generator if generator is not None else make_generator(seed)
        self._check_params()

    # ART's attribute names: views of the one settings object (ART's set_params assigns them)
    prob = _settings_field("prob")
    norm = _settings_field("norm")
    lamb = _settings_field("lamb")
    max_iter = _settings_field("iterations")
    objective = _settings_field("objective")
    gradient = _settings_field("gradient")

    def _check_params(self) -> None:
        check_clip_values(self.clip_values)
        if self.chunk_size is not None:
            check_positive_int(self.chunk_size, "chunk_size")
        for name in ("verbose", "channels_first", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(self.generator).__name__}")

    def _to_nchw(self, x: Tensor) -> Tensor:
        """Catches NCHW / NHWC mix-ups and returns an NCHW view (the solver checks the values)."""
        layout = "(N, C, H, W)" if self.channels_first else "(N, H, W, C)"
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor {layout}, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"x must have shape {layout}, got shape {tuple(x.shape)}")
        want, other = (1, 3) if self.channels_first else (3, 1)
        if x.shape[want] not in _SMALL_CHANNELS and x.shape[other] in _SMALL_CHANNELS:
            given = "(N, H, W, C)" if self.channels_first else "(N, C, H, W)"
            raise ValueError(
                f"x of shape {tuple(x.shape)} looks like {given}, but this TotalVarMinimization has "
                f"channels_first={self.channels_first}; transpose x or construct it with "
                f"channels_first={not self.channels_first}"
            )
        return x if self.channels_first else x.permute(0, 3, 1, 2)

    def _from_nchw(self, z: Tensor) -> Tensor:
        return z if self.channels_first else z.permute(0, 2, 3, 1)

    def _purify(self, x_nchw: Tensor) -> Tensor:
        return total_variation_minimize(
            x_nchw, **self.settings.solver_kwargs(), generator=self.generator, clip_values=self.clip_values,
            chunk_size=self.chunk_size, compile=self.compile, progress=self.verbose,
        )  # fmt: skip

    def forward(self, x: Tensor, y: Any | None = None) -> tuple[Tensor, Any | None]:
        """Purifies a batch in PyTorch (ART's all-PyTorch path; autograd per ``gradient``).

        Args:
            x: Images ``(N, C, H, W)`` (``(N, H, W, C)`` if ``channels_first=False``), floating,
                finite, within ``clip_values``; any device.
            y: Labels, passed through unchanged.

        Returns:
            ``(x_purified, y)``: same shape, layout, dtype and device as ``x`` (one draw per image).
        """
        return self._from_nchw(self._purify(self._to_nchw(x))), y

    def estimate_forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Differentiable estimate used by ART for gradients: the purified batch with ``gradient``'s
        backward (BPDA: identity; unrolled: through the iterations).

        Args:
            x: Images in this preprocessor's layout, shape ``(N, ...)``, floating.
            y: Unused.

        Returns:
            Same shape, dtype and device as ``x``.
        """
        return self._from_nchw(self._purify(self._to_nchw(x)))

    def __call__(self, x: np.ndarray, y: Any | None = None) -> tuple[np.ndarray, Any | None]:
        """Purifies a NumPy batch (standalone use).

        Args:
            x: Floating array ``(N, C, H, W)`` (``(N, H, W, C)`` if ``channels_first=False``).
            y: Labels, returned unchanged.

        Returns:
            ``(x_purified, y)`` with ``x_purified`` a new array of ``x``'s shape and dtype.
        """
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__} (use forward for tensors)")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(
                f"x must be a floating-point array, got dtype {x.dtype} (convert uint8 images with "
                "x.astype(np.float32) / 255)"
            )
        x_t = torch.tensor(x, device=self.device)  # a copy: the caller's array is never shared
        with torch.no_grad():
            z, _ = self.forward(x_t)
        return z.cpu().numpy().astype(x.dtype, copy=False), y
