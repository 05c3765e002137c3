"""wnll-art: the WNLL output activation and TVM input purification of Wang et al. (2018) for ART and Foolbox.

Paper: B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via
Data Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).

The core (data, models, WNLL, TVM algorithm) needs only PyTorch, NumPy and SciPy. The ART, Foolbox and
MAITE adapters are imported lazily on first attribute access, so ``import wnll_art`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from wnll_art.data import load_cifar10
from wnll_art.models.resnet import CifarResNet, resnet56
from wnll_art.zoo import ZOO, load_pretrained

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "wnll_interpolate": "wnll_art.wnll.solver",
    "Defence": "wnll_art.defence",
    "load_defence": "wnll_art.defence",
    "TVMSettings": "wnll_art.tvm.settings",
    "TVMPurifier": "wnll_art.tvm.module",
    "EOT": "wnll_art.eot",
    "WNLLNet": "wnll_art.wnll.model",
    "balanced_template": "wnll_art.wnll.template",
    "total_variation_minimize": "wnll_art.tvm",
    "WNLLClassifier": "wnll_art.adapters.art_estimator",
    "TotalVarMinimization": "wnll_art.adapters.art_tvm",
    "to_foolbox": "wnll_art.adapters.foolbox_model",
    "to_maite": "wnll_art.adapters.maite",
    "maite_cifar10": "wnll_art.adapters.maite",
}

__all__ = ["CifarResNet", "ZOO", "load_cifar10", "load_pretrained", "resnet56", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wnll_art' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
