"""Total variation minimisation (TVM) input purification, pure PyTorch (no ART import).

References:
    C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
    Transformations", ICLR 2018.
    L. I. Rudin, S. Osher, E. Fatemi, "Nonlinear total variation based noise removal algorithms",
    Physica D 60 (1992) 259-268.
    A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018
    (BPDA gradients).

The algorithm (masks, options, the one ADMM loop, ``total_variation_minimize``) is
:mod:`wnll_art.tvm.algorithm`, its pieces (objective values, differences, DCT solve, proximal maps)
:mod:`wnll_art.tvm.operators`; the ART adapter is :class:`wnll_art.adapters.art_tvm.TotalVarMinimization`.
"""

from __future__ import annotations

from wnll_art.tvm.algorithm import (
    bernoulli_mask,
    check_clip_values,
    check_tvm_options,
    make_generator,
    resolve_iterations,
    total_variation_minimize,
)
from wnll_art.tvm.operators import art_objective, isotropic_objective
from wnll_art.tvm.settings import PRESETS, TVMSettings

__all__ = [
    "PRESETS",
    "TVMSettings",
    "art_objective",
    "bernoulli_mask",
    "check_clip_values",
    "check_tvm_options",
    "isotropic_objective",
    "make_generator",
    "resolve_iterations",
    "total_variation_minimize",
]
