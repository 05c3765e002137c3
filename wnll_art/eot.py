"""Expectation over Transformation (EOT): the one mechanism every path uses against a random defence.

A. Athalye, L. Engstrom, A. Ilyas, K. Kwok, "Synthesizing Robust Adversarial Examples", ICML 2018, and
A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018,
Sec. 4.3: against a randomised defence ``t``, an attacker follows ``grad_x E_t[f(t(x))]``.

The rule, used by :class:`wnll_art.defence.Defence` and by :class:`EOT` around any other module: while
autograd records a graph that reaches the input (an attack taking a gradient), the scores are the mean
over ``samples`` independent draws, each draw one call on the *whole batch*, so a transductive WNLL
solve sees exactly the batch that ``predict`` sees; otherwise (predictions) one draw, the deployed model.
Copies are never tiled into one batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from wnll_art._checks import check_positive_int

__all__ = ["EOT", "eot_forward"]


def eot_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, samples: int) -> torch.Tensor:
    """Scores of a randomised ``fn`` on ``x``: the mean of ``samples`` draws when differentiating.

    Args:
        fn: Randomised function of a batch ``(N, ...) -> (N, C)``; each call draws afresh.
        x: The batch, passed whole to every draw (never tiled).
        samples: Draws averaged when ``torch.is_grad_enabled()`` and ``x.requires_grad``.

    Returns:
        ``(N, C)``: ``fn(x)`` (one draw) when not differentiating, else ``mean_k fn(x)``.
    """
    if samples == 1 or not (torch.is_grad_enabled() and x.requires_grad):
        return fn(x)
    return torch.stack([fn(x) for _ in range(samples)]).mean(0)


class EOT(nn.Module):
    """Wraps a randomised module (one without EOT of its own) with the rule of :func:`eot_forward`.

    Args:
        inner: The randomised module (e.g. ``nn.Sequential(TVMPurifier(...), classifier)``).
        samples: Draws averaged per gradient.
    """

    randomised = True

    def __init__(self, inner: nn.Module, *, samples: int) -> None:
        super().__init__()
        self.inner = inner
        self.samples = check_positive_int(samples, "samples")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return eot_forward(self.inner, x, self.samples)
