"""WNLL + TVM against ART's JpegCompression, SpatialSmoothing, FeatureSqueezing and TotalVarMin (and our TVM,
and no defence) on the same models, attacks and images: ``wnll-art evaluate --protocol adaptive`` with every
registered defence.

Run ``python evaluations/compare_defences.py --help``; see ``evaluations/README.md``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "compare_defences"
DEFAULT_ATTACKS = "fgsm_exact_eot,ifgsm_exact_eot,transfer_ifgsm"


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs :func:`wnll_art.evaluation.jobs.main.evaluate` with the ``adaptive`` protocol."""
    from wnll_art import _argparse as ap
    from wnll_art.evaluation.parser import config_from_args, plan_from_args, run_script, script_parser
    from wnll_art.evaluation.victims import PURIFIERS

    p = script_parser(PROG, __doc__ or "", n=50, eps=(0.02, 0.04, 0.08), defences=tuple(PURIFIERS), steps=10,
                      defences_help=f"defences among {','.join(PURIFIERS)}", out="results/compare_defences")  # fmt: skip
    p.add_argument("--attacks", type=ap.name_list, default=DEFAULT_ATTACKS.split(","),
                   help="adaptive attacks (also pgd_smooth_eot, cw_l2_exact_eot, autoattack, ifgsm_surrogate_eot, ...)")  # fmt: skip
    p.add_argument(
        "--models", type=ap.name_list, default=("softmax", "wnll"), help="model labels or trained models"
    )
    p.add_argument("--defence-options", type=json.loads, default=None,
                   help='JSON overrides, e.g. \'{"jpeg": {"quality": 50}, "art_tvm": {"max_iter": 5}}\'')  # fmt: skip
    args = p.parse_args(argv)

    def body() -> None:
        from wnll_art.evaluation.jobs.main import evaluate

        evaluate(config_from_args(args, models=args.models), out_dir=args.out, protocol="adaptive", attacks=args.attacks,
                 options=plan_from_args(args), defence_options=args.defence_options, data_root=args.data_root,
                 weights=args.weights)  # fmt: skip
        if os.environ.get("RANK", "0") == "0":
            print((Path(args.out) / "results.md").read_text())

    return run_script(body, PROG, args, lock=False)  # evaluate holds --out's lock itself


if __name__ == "__main__":
    sys.exit(main())
