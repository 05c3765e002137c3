"""Library-neutral attack interface: :class:`Attack` (the ``@final`` template method) and :func:`project_linf`.

The ART and Foolbox attacks built on it are in :mod:`wnll_art.adapters.attacks`.
"""

from __future__ import annotations

from wnll_art.attacks.base import Attack, project_linf

__all__ = ["Attack", "project_linf"]
