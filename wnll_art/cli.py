"""The ``wnll-art`` command line: ``evaluate`` (the main job), ``train`` and ``info``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from wnll_art import _argparse as ap

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (problem and remedy), exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _template_size(text: str) -> int:
    """An ``argparse`` type: a positive multiple of 10 (the template is class-balanced)."""
    value = ap.positive_int(text)
    if value % 10:
        raise argparse.ArgumentTypeError(f"expected a multiple of 10 (one share per class), got {text!r}")
    return value


def _add_evaluate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("evaluate", help="robust accuracy grid (ART + Foolbox attacks), JSON + markdown + PNG",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--out", default="results/evaluate", help="results directory (re-running resumes)")
    # --num-images / --start-index: torchrun's own parser rejects --n and --start as ambiguous abbreviations
    p.add_argument("--n", "--num-images", dest="n", type=ap.positive_int, default=50,
                   help="test images (--n 10000 --device cuda for the full run; --num-images under torchrun)")  # fmt: skip
    p.add_argument("--start", "--start-index", dest="start", type=ap.non_negative_int, default=0,
                   help="index of the first test image (--start-index under torchrun)")  # fmt: skip
    p.add_argument("--eps", type=ap.eps_list, default=(0.02, 0.04, 0.08), help="L-inf radii, comma-separated")
    p.add_argument("--models", type=ap.name_list, default=("softmax", "wnll"))
    p.add_argument("--defences", type=ap.name_list, default=("none", "tvm"))
    p.add_argument("--attacks", type=ap.name_list, default=None,
                   help="subset of fgsm,bim,cw_l2,linf_pgd,fb_cw_l2,transfer_bim (default: all)")  # fmt: skip
    p.add_argument(
        "--wnll-batch-size", type=ap.positive_int, default=500, help="transductive WNLL batch = attack batch"
    )
    p.add_argument("--template-size", type=_template_size, default=500)
    p.add_argument("--coupling", choices=("transductive", "inductive"), default="transductive")
    p.add_argument("--kernel", choices=("gaussian", "quartic"), default="gaussian")
    p.add_argument(
        "--eot-samples", type=ap.positive_int, default=2, help="EOT draws when attacking through TVM"
    )
    p.add_argument("--cw-steps", type=ap.positive_int, default=20)
    p.add_argument("--tvm-prob", type=ap.unit_float, default=0.5, help="probability that a pixel is kept")
    p.add_argument("--tvm-lamb", type=ap.positive_float, default=0.03, help="TV weight (Guo et al.: 0.03)")
    p.add_argument("--tvm-objective", choices=("art", "isotropic"), default="art")
    p.add_argument("--tvm-preset", choices=("art-default", "art-100", "converged"), default="art-100")
    p.add_argument("--seed", type=ap.non_negative_int, default=0)
    p.add_argument("--device", type=ap.device, default="cpu", help="cpu, cuda or cuda:N (checked to exist)")
    p.add_argument(
        "--data-root", default=None, help="CIFAR-10 root (default: $WNLL_ART_DATA or the user cache)"
    )
    p.add_argument("--weights", default=None, help="ResNet-56 checkpoint (default: the torch hub cache)")
    p.add_argument("--no-progress", action="store_true")


def _run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from wnll_art.evaluation.harness import EvalConfig, evaluate
    from wnll_art.tvm.settings import TVMSettings

    cfg = EvalConfig(
        n=args.n, start=args.start, eps=args.eps, models=args.models, defences=args.defences, attacks=args.attacks,
        wnll_batch_size=args.wnll_batch_size, template_size=args.template_size, coupling=args.coupling,
        kernel=args.kernel, eot_samples=args.eot_samples, cw_steps=args.cw_steps, seed=args.seed, device=args.device,
        tvm=TVMSettings.from_preset(args.tvm_preset, prob=args.tvm_prob, lamb=args.tvm_lamb,
                                    objective=args.tvm_objective, eot_samples=args.eot_samples),
    )  # fmt: skip
    bar = tqdm(desc="cells", unit="cell", disable=args.no_progress)

    def on_cell(record: object) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{record.model}/{record.defence}/{record.attack}@{record.eps:g}: "  # type: ignore[attr-defined]
                            f"{100 * record.accuracy:.1f}%")  # type: ignore[attr-defined]  # fmt: skip

    evaluate(cfg, out_dir=args.out, data_root=args.data_root, weights=args.weights, on_cell=on_cell)
    bar.close()
    table = Path(args.out) / "results.md"
    if table.is_file():
        print(table.read_text())
        print(f"results: {Path(args.out).resolve()} (cells/*.json, results.md, accuracy_vs_eps__*.png)")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    import torch

    import wnll_art
    from wnll_art.data import default_data_root
    from wnll_art.evaluation.records import library_versions
    from wnll_art.zoo import ZOO, cached_weights_path

    zoo = {name: {"reference_accuracy": e.reference_accuracy, "sha256": e.sha256, "url": e.url,
                  "cached": str(cached_weights_path(e)), "is_cached": cached_weights_path(e).is_file()}
           for name, e in ZOO.items()}  # fmt: skip
    info = {"wnll_art": wnll_art.__version__, "data_root": str(default_data_root()), "zoo": zoo,
            "cuda": torch.cuda.is_available(), "versions": library_versions()}  # fmt: skip
    print(json.dumps(info, indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wnll-art", description="WNLL + TVM defence (Wang et al. 2018) for ART/Foolbox")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_evaluate(sub)
    sub.add_parser("info", help="versions, data root, model zoo and cache status (JSON)")
    try:
        train_cli = importlib.import_module("wnll_art.train.cli")
    except ImportError:  # pragma: no cover - the training package ships with the library
        train_cli = None
    if train_cli is not None:
        train_cli.add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wnll-art`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            ap.check_out_dir(args.out)
            return _run_evaluate(args)
        if args.command == "info":
            return _run_info(args)
        return int(importlib.import_module("wnll_art.train.cli").run_train(args))
    except (ValueError, FileNotFoundError, KeyError, ConnectionError, ap.UsageError) as exc:
        print(f"wnll-art {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
