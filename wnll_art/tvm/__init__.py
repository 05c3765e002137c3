"""Total variation minimisation (TVM) input purification, pure PyTorch (no ART import).

References:
    C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
    Transformations", ICLR 2018.
    L. I. Rudin, S. Osher, E. Fatemi, "Nonlinear total variation based noise removal algorithms",
    Physica D 60 (1992) 259-268.
    A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018
    (BPDA / EOT gradients).

The ART adapter is :class:`wnll_art.adapters.art_tvm.TotalVarMinimization`.
"""

from __future__ import annotations

from wnll_art.tvm.eot import eot_gradient
from wnll_art.tvm.masks import bernoulli_mask, make_generator
from wnll_art.tvm.objectives import art_objective, isotropic_objective
from wnll_art.tvm.solver import PRESETS, total_variation_minimize

__all__ = [
    "PRESETS",
    "art_objective",
    "bernoulli_mask",
    "eot_gradient",
    "isotropic_objective",
    "make_generator",
    "total_variation_minimize",
]
