"""Explicit randomness: seeds derived from names, generators made from seeds, and the one scoped door to the
global RNGs that third-party attacks draw from.

Everything in ``wnll_art`` draws from an explicit ``torch.Generator``. ART and Foolbox draw their random starts
(and ART's ``TotalVarMin`` its masks) from Python's, NumPy's and torch's *global* generators: those draws go
through :func:`seeded_globals`, which seeds the three for one block and gives back their previous states.
Modules that draw hold a ``generator``; their ``drawing`` blocks replace it through :func:`drawing_from`.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["as_generator", "derive_seed", "drawing_from", "seed_generator", "seeded_globals"]


def derive_seed(*parts: object) -> int:
    """A reproducible 31-bit seed from any printable parts (same on every rank and run).

    Args:
        *parts: Anything with a stable ``str`` (names, ints, floats), joined by ``"/"``.

    Returns:
        ``crc32`` of the joined text, in ``[0, 2**31 - 1]``.
    """
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def _check_seed(seed: object, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__}")
    return seed


def seed_generator(seed: int) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with ``seed`` (``torch.Generator().manual_seed(seed)``).

    Raises:
        TypeError: ``seed`` is not an int.
    """
    return torch.Generator().manual_seed(_check_seed(seed))


def as_generator(
    seed_or_generator: int | torch.Generator, name: str = "seed_or_generator"
) -> torch.Generator:
    """``seed_or_generator`` itself when it is a ``torch.Generator``, else :func:`seed_generator` of it.

    Raises:
        TypeError: Neither an int nor a ``torch.Generator`` (``name`` is the argument named in the message).
    """
    if isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    if isinstance(seed_or_generator, bool) or not isinstance(seed_or_generator, int):
        raise TypeError(f"{name} must be an int or a torch.Generator, got {type(seed_or_generator).__name__}")
    return seed_generator(seed_or_generator)


@contextlib.contextmanager
def drawing_from(owner: object, seed_or_generator: int | torch.Generator) -> Iterator[None]:
    """Sets ``owner.generator`` to :func:`as_generator` of ``seed_or_generator`` for one block and puts the previous
    generator back on exit (also when the block raises); the body of every module's ``drawing``.

    Args:
        owner: An object with a ``generator`` attribute (a purifier).
        seed_or_generator: An int (a fresh generator seeded with it) or a ``torch.Generator`` (used as is).

    Raises:
        TypeError: ``seed_or_generator`` is neither an int nor a ``torch.Generator`` (on entering the block).
    """
    previous = owner.generator  # type: ignore[attr-defined]
    owner.generator = as_generator(seed_or_generator)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        owner.generator = previous  # type: ignore[attr-defined]


@contextlib.contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Seeds Python's ``random``, NumPy's global RNG and torch's global RNG(s) with ``seed`` for one block, then
    restores the states they had before it (also when the block raises).

    Inside the block: ``random.seed(seed)``, ``np.random.seed(seed % 2**32)``, ``torch.manual_seed(seed)`` (which
    also seeds every CUDA device). On exit the Python and NumPy states and torch's CPU state are restored, and the
    CUDA states too when CUDA was initialised on entry (``torch.random.fork_rng`` over every device).

    Args:
        seed: Non-negative int (a :func:`derive_seed` value).

    Raises:
        TypeError: ``seed`` is not an int.
    """
    seed = _check_seed(seed)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        try:
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
