"""Command-line options the examples share (imported as ``_common``: the examples run as scripts, so their folder
is ``sys.path[0]``)."""

from __future__ import annotations

import argparse

__all__ = ["example_parser", "fraction", "parse_example_args"]


def fraction(text: str) -> float:
    """``"8/255"`` or ``"0.03"`` as a float (argparse type)."""
    try:
        num, _, den = text.partition("/")
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError) as err:
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {text!r}") from err


def example_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc`` (the example's docstring), with the options both
    examples take: ``--n``, ``--eps``, ``--steps``, ``--step-size``, ``--model``, ``--weights``, ``--data-root``,
    ``--seed``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n", 1)[0])
    p.add_argument("--n", type=int, default=50, help="test images, solved as one WNLL batch (default 50)")
    p.add_argument("--eps", type=fraction, default=8 / 255, help="L-inf radius (default 8/255)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    p.add_argument("--step-size", type=fraction, default=2 / 255, help="PGD step (default 2/255)")
    p.add_argument(
        "--model", default="resnet56", help="zoo name for wnll_art.load_defence (default resnet56)"
    )
    p.add_argument("--weights", default=None, help="ResNet-56 weights file (default: the torch hub cache)")
    p.add_argument("--data-root", default=None, help="CIFAR-10 root (default: $WNLL_ART_DATA)")
    p.add_argument("--seed", type=int, default=0, help="template draw and TVM masks (default 0)")
    return p


def parse_example_args(p: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``p.parse_args(argv)``, exiting with a usage error unless ``--n`` and ``--steps`` are positive."""
    args = p.parse_args(argv)
    if args.n < 1 or args.steps < 1:
        p.error("--n and --steps must be positive")
    return args
