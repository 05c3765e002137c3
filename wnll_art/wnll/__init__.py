"""WNLL: weighted nonlocal Laplacian interpolation (Shi, Osher, Zhu 2017; Wang et al. 2018)."""

from __future__ import annotations

from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.solver import wnll_interpolate
from wnll_art.wnll.template import balanced_template

__all__ = ["WNLLNet", "balanced_template", "wnll_interpolate"]
