"""The paper's Table 1: adversarial examples crafted on softmax or WNLL, classified by both activations.

Run ``python evaluations/transfer_table.py --help``; see ``evaluations/README.md``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "transfer_table"


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs :func:`wnll_art.evaluation.jobs.transfer_table.transfer_table`; returns the exit status."""
    from wnll_art.evaluation.parser import config_from_args, run_script, script_parser

    p = script_parser(PROG, __doc__ or "", defences=("none",), out="results/transfer_table")
    p.add_argument("--attacks", default="fgsm,ifgsm,cw_l2", help="comma-separated subset of fgsm,ifgsm,cw_l2")
    p.add_argument("--gradient", choices=("surrogate", "exact"), default="surrogate",
                   help="WNLL gradient when crafting on WNLL (surrogate: the paper's straight-through one)")  # fmt: skip
    p.add_argument("--trained", action="store_true",
                   help="one table per training-data row of our shipped models (original, TVM, original + TVM images) "
                        "instead of the public ResNet-56 with a post-hoc WNLL head")  # fmt: skip
    args = p.parse_args(argv)

    def body() -> None:
        from wnll_art.evaluation.jobs.transfer_table import transfer_table

        transfer_table(config_from_args(args), out_dir=args.out, data_root=args.data_root, weights=args.weights,
                       gradient=args.gradient, attacks=[a for a in args.attacks.split(",") if a],
                       trained=args.trained)  # fmt: skip
        if os.environ.get("RANK", "0") == "0":
            print((Path(args.out) / "transfer_table.md").read_text())

    return run_script(body, PROG, args)


if __name__ == "__main__":
    sys.exit(main())
