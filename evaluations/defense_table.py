"""The paper's Table 2 in two protocols side by side: the paper's stated attack settings and adaptive attacks.

Run ``python evaluations/defense_table.py --help``; see ``evaluations/README.md``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "defense_table"


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs :func:`wnll_art.evaluation.jobs.paper_tables.defense_table`; returns the exit status."""
    from wnll_art._argparse import positive_int
    from wnll_art.evaluation.parser import config_from_args, parse_checkpoints, run_script, script_parser

    p = script_parser(PROG, __doc__ or "", out="results/defense_table")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="a ResNet-56 state dict trained on other data (e.g. tvm=...); repeatable")  # fmt: skip
    p.add_argument("--steps", type=positive_int, default=20, help="iterations of the adaptive iterative attacks")
    p.add_argument("--paper-cw-steps", type=positive_int, default=10, help="C&W steps in the paper protocol")
    p.add_argument("--adaptive-attacks", default=None,
                   help="comma-separated subset of fgsm_exact_eot,pgd_exact_eot,ifgsm_exact_eot,"
                        "ifgsm_surrogate_eot,cw_l2_exact_eot,transfer_ifgsm,autoattack (default: all)")  # fmt: skip
    args = p.parse_args(argv)

    def body() -> None:
        from wnll_art.evaluation.jobs.paper_tables import defense_table

        attacks = (
            None if args.adaptive_attacks is None else [a for a in args.adaptive_attacks.split(",") if a]
        )
        defense_table(config_from_args(args), out_dir=args.out, data_root=args.data_root, weights=args.weights,
                      checkpoints=parse_checkpoints(args.checkpoint), steps=args.steps,
                      paper_cw_steps=args.paper_cw_steps, adaptive_attacks=attacks)  # fmt: skip
        if os.environ.get("RANK", "0") == "0":
            print((Path(args.out) / "defense_table.md").read_text())

    return run_script(body, PROG, args)


if __name__ == "__main__":
    sys.exit(main())
