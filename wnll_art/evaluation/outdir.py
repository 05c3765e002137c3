"""The results folder of an evaluation: a folder that is not ours is refused; files and the lock are
:mod:`wnll_art._files`'s (:func:`atomic_write`, :func:`results_lock`), shared with ``wnll-art train``.

:func:`check_results_dir` refuses, before anything is written, an ``--out`` that holds files but no run of ours
(no ``run.json``, no ``cells/``): the user's own ``results.md`` or PNGs are never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from wnll_art._argparse import UsageError
from wnll_art._files import LOCK_NAME, LockHeldError, atomic_write, results_lock

__all__ = ["LOCK_NAME", "LockHeldError", "atomic_write", "check_results_dir", "results_lock"]

_OURS = ("run.json", "cells")  # what makes a folder a run of ours


def check_results_dir(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """Refuses, writing nothing, a folder that holds files but no run of ours.

    A folder is ours when it is missing, empty (a lock file and temporary files aside), or holds ``run.json``
    or ``cells/``; whether its settings fit the run is :class:`~wnll_art.evaluation.records.RunStore`'s check.

    Raises:
        UsageError: ``path`` holds files and neither ``run.json`` nor ``cells/``.
    """
    out = Path(path)
    if not out.is_dir() or any((out / name).exists() for name in _OURS):
        return
    # a lock, and temporary files of an interrupted write (".<name>.<hex>.tmp"), are not the user's
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name != LOCK_NAME and not (p.name.startswith(".") and p.name.endswith(".tmp")))  # fmt: skip
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UsageError(f"{flag} {out} holds files that are not a wnll-art run ({shown}); choose a new or empty "
                         f"folder, or the folder of an earlier run")  # fmt: skip
