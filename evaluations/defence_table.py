"""The paper's Table 2 in two protocols side by side: the paper's stated attack settings and adaptive attacks.

Run ``python evaluations/defence_table.py --help``; see ``evaluations/README.md``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "defence_table"


def int_list(text: str) -> tuple[int, ...]:
    """An ``argparse`` type: comma-separated positive ints (possibly none)."""
    from wnll_art._argparse import positive_int

    return tuple(positive_int(t) for t in text.split(",") if t)


def victim_list(text: str) -> tuple[tuple[str, str], ...]:
    """An ``argparse`` type: comma-separated ``MODEL+DEFENCE`` cells (e.g. ``wnll+tvm,softmax+tvm``)."""
    import argparse

    cells = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        model, sep, defence = item.partition("+")
        if not sep or not model or not defence:
            raise argparse.ArgumentTypeError(f"expected MODEL+DEFENCE (e.g. wnll+tvm), got {item!r}")
        cells.append((model, defence))
    if not cells:
        raise argparse.ArgumentTypeError("expected at least one MODEL+DEFENCE cell")
    return tuple(cells)


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs :func:`wnll_art.evaluation.jobs.defence_table.defence_table`; returns the exit status."""
    from wnll_art._argparse import positive_int
    from wnll_art.evaluation.parser import config_from_args, plan_from_args, run_script, script_parser

    p = script_parser(PROG, __doc__ or "", out="results/defence_table")
    p.add_argument("--adaptive-attacks", default=None,
                   help="comma-separated adaptive attacks (default: pgd, apgd_ce, apgd_dlr on the smooth and surrogate "
                        "views, transfer_pgd, square; also: fgsm_exact_eot,pgd_fb_exact_eot,ifgsm_exact_eot,"
                        "ifgsm_surrogate_eot,cw_l2_exact_eot,transfer_ifgsm,autoattack)")  # fmt: skip
    p.add_argument("--convergence-steps", type=int_list, default=(10, 20, 50, 100),
                   help="step ladder of the convergence check ('' to skip the checks)")  # fmt: skip
    p.add_argument("--convergence-eot", type=int_list, default=(1, 2, 4), help="EOT-sample ladder")
    p.add_argument("--convergence-images", type=positive_int, default=20, help="sub-sample of the convergence checks")
    p.add_argument("--trained", nargs="?", const="all", default=None, metavar="ROWS",
                   help="rows from our shipped models (softmax / WNLL trained on original, TVM, original+tvm images; "
                        "all, or a comma-separated subset) instead of the public ResNet-56 with a post-hoc WNLL head")  # fmt: skip
    p.add_argument("--victims", type=victim_list, default=None,
                   help="comma-separated MODEL+DEFENCE cells to attack, e.g. wnll+tvm (default: all models x defences)")  # fmt: skip
    args = p.parse_args(argv)

    def body() -> None:
        attacks = (
            None if args.adaptive_attacks is None else [a for a in args.adaptive_attacks.split(",") if a]
        )
        from wnll_art.evaluation.jobs.defence_table import Convergence, defence_table

        conv = Convergence(steps=args.convergence_steps, eot=args.convergence_eot, images=args.convergence_images)
        options = plan_from_args(args)
        defence_table(config_from_args(args), out_dir=args.out, data_root=args.data_root, weights=args.weights,
                      options=options, adaptive_attacks=attacks, convergence=conv, victims=args.victims,
                      trained=args.trained == "all" or [r for r in (args.trained or "").split(",") if r])  # fmt: skip
        if os.environ.get("RANK", "0") == "0":
            print((Path(args.out) / "defence_table.md").read_text())

    return run_script(body, PROG, args)


if __name__ == "__main__":
    sys.exit(main())
