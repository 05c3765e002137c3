"""Argument types shared by the ``wnll-art`` command line and the ``evaluations/`` scripts."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "UsageError", "check_out_dir", "device", "eps_list", "float_list", "name_list", "non_negative_int",
    "os_error_line", "positive_float", "positive_int", "unit_float",
]  # fmt: skip


def float_list(text: str) -> tuple[float, ...]:
    """``"0.02,0.08"`` -> ``(0.02, 0.08)``; an ``argparse`` type."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def eps_list(text: str) -> tuple[float, ...]:
    """``"0.02,0.08"`` -> ``(0.02, 0.08)``: one or more L-inf radii in ``(0, 1]``; an ``argparse`` type."""
    values = float_list(text)
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected one or more radii in (0, 1], comma-separated, got {text!r}"
        )
    return values


def name_list(text: str) -> tuple[str, ...]:
    """``"none, tvm"`` -> ``("none", "tvm")``; an ``argparse`` type."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


class UsageError(Exception):
    """A user error found after parsing (device, output folder, data): printed as one line, exit 2."""


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An ``argparse`` type: an int ``>= 1``."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An ``argparse`` type: an int ``>= 0``."""
    return _int_at_least(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """An ``argparse`` type: a finite float ``> 0`` (``nan``, ``inf``, ``0`` and negatives refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """An ``argparse`` type: a float in ``[0, 1]``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def device(text: str) -> str:
    """An ``argparse`` type: a torch device that exists here (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    from wnll_art._device import device_problem

    problem = device_problem(text, cpu_remedy="--device cpu")
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def check_out_dir(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Checks, without writing anything, that ``path`` is (or can become) a writable folder.

    Raises:
        UsageError: ``path`` is empty text (which would mean the current directory), a file, or it (or its
            nearest existing parent) is not writable.
        NotADirectoryError: ``path`` (or a missing parent of it) is a symbolic link to nothing: an I/O fault
            rather than a usage error (the command line exits 1 on it, as on a full disk).
    """
    if isinstance(path, str) and not path.strip():
        raise UsageError(f"{flag} is empty; name a results folder (e.g. {flag} results/run1)")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out} is a file, not a folder; choose another {flag}")
    probe = out
    while not probe.exists():
        if probe.is_symlink():
            raise NotADirectoryError(f"{flag} {out}: {probe} is a symbolic link to {os.readlink(probe)}, which does "
                                     f"not exist; create its target or choose another {flag}")  # fmt: skip
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: {probe} is not writable; choose a writable {flag}")
    return out


def os_error_line(exc: OSError, *, resume: bool) -> str:
    """One line for an I/O fault (exit status 1); ``resume``: say that finished results are kept."""
    text = exc.strerror if exc.errno is not None and exc.strerror else str(exc)
    if exc.filename is not None and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    text = " ".join(text.split())
    if resume and exc.errno is not None:  # a fault while writing, not one found before the run
        text += "; the results finished so far are kept, and the same command resumes"
    return text


def run_command(prog: str, body: Callable[[], int | None], *, resume: bool, kept: str) -> int:
    """Runs a command's ``body`` with the project's exit statuses: its return value (0 for ``None``); 2 and one line
    for a user error (bad option, missing data, a held lock); 1 and one line for an I/O fault (a full disk, a
    dangling ``--out``) or adversarials outside the threat model (the engine's ``ThreatModelError``); 130 on
    Ctrl-C, saying what is ``kept``. ``resume``: the command resumes (finished results are kept)."""
    try:
        return int(body() or 0)
    except (ValueError, FileNotFoundError, KeyError, ConnectionError, UsageError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # what is finished stays on disk
        print(f"{prog}: error: {os_error_line(exc, resume=resume)}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # the engine's threat-model check (named, not imported: a low layer)
        if type(exc).__name__ != "ThreatModelError":
            raise
        print(f"{prog}: error: {exc}; that cell was not written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the shell's status for SIGINT
        print(f"\n{prog}: interrupted; {kept}", file=sys.stderr)
        return 130
