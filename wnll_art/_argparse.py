"""Argument types shared by the ``wnll-art`` command line and the ``evaluations/`` scripts."""

from __future__ import annotations

import argparse

__all__ = ["float_list", "name_list"]


def float_list(text: str) -> tuple[float, ...]:
    """``"0.02,0.08"`` -> ``(0.02, 0.08)``; an ``argparse`` type."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def name_list(text: str) -> tuple[str, ...]:
    """``"none, tvm"`` -> ``("none", "tvm")``; an ``argparse`` type."""
    return tuple(v.strip() for v in text.split(",") if v.strip())
