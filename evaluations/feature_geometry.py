"""The paper's Fig. 4: first two principal components of the 64-D features of clean, IFGSM and TVM-purified
images, softmax model vs WNLL model, coloured by class (PNG + JSON summary).

Run ``python evaluations/feature_geometry.py --help``; see ``evaluations/README.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "feature_geometry"


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs :func:`wnll_art.evaluation.jobs.geometry.feature_geometry`; returns the exit status."""
    from wnll_art._argparse import positive_int, unit_float
    from wnll_art.evaluation.parser import config_from_args, run_script, script_parser

    p = script_parser(PROG, __doc__ or "", n=500, eps=(0.02,), out="results/feature_geometry")
    p.add_argument("--steps", type=positive_int, default=10, help="IFGSM iterations")
    p.add_argument("--step-fraction", type=unit_float, default=0.25, help="IFGSM step size as a fraction of eps")
    p.add_argument(
        "--gradient", choices=("exact", "surrogate"), default="exact", help="WNLL gradient of the IFGSM"
    )
    args = p.parse_args(argv)

    def body() -> None:
        from wnll_art.evaluation.jobs.geometry import feature_geometry

        feature_geometry(config_from_args(args), out_dir=args.out, data_root=args.data_root, weights=args.weights,
                         steps=args.steps, step_fraction=args.step_fraction, gradient=args.gradient)  # fmt: skip
        print((Path(args.out) / "feature_geometry.md").read_text())

    return run_script(body, PROG, args)


if __name__ == "__main__":
    sys.exit(main())
