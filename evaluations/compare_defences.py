"""WNLL + TVM against ART's JpegCompression, SpatialSmoothing, FeatureSqueezing and TotalVarMin (and our TVM,
and no defence) on the same model, attacks and images.

Run ``python evaluations/compare_defences.py --help``; see ``evaluations/README.md``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "compare_defences"


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs :func:`wnll_art.evaluation.jobs.defence_comparison.compare_defences`."""
    from wnll_art._argparse import positive_int
    from wnll_art.evaluation.jobs.defence_comparison import DEFAULT_ATTACKS
    from wnll_art.evaluation.parser import config_from_args, plan_from_args, run_script, script_parser
    from wnll_art.evaluation.victims import PURIFIERS

    p = script_parser(PROG, __doc__ or "", n=50, eps=(0.02, 0.04, 0.08), defences=tuple(PURIFIERS),
                      defences_help=f"defences among {','.join(PURIFIERS)}", out="results/compare_defences")  # fmt: skip
    p.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS),
                   help="comma-separated adaptive attacks (also pgd_smooth_eot, cw_l2_exact_eot, autoattack, "
                        "ifgsm_surrogate_eot)")  # fmt: skip
    p.add_argument("--steps", type=positive_int, default=10, help="iterations of the iterative attacks")
    p.add_argument(
        "--defence-options",
        type=json.loads,
        default=None,
        help='JSON overrides, e.g. \'{"jpeg": {"quality": 50}, "art_tvm": {"max_iter": 5}}\'',
    )
    args = p.parse_args(argv)

    def body() -> None:
        from wnll_art.evaluation.jobs.defence_comparison import compare_defences

        compare_defences(config_from_args(args), out_dir=args.out, data_root=args.data_root, weights=args.weights,
                         options=plan_from_args(args, steps=args.steps),
                         attacks=[a for a in args.attacks.split(",") if a], defence_options=args.defence_options)  # fmt: skip
        if os.environ.get("RANK", "0") == "0":
            print((Path(args.out) / "compare_defences.md").read_text())

    return run_script(body, PROG, args)


if __name__ == "__main__":
    sys.exit(main())
