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


def _add_evaluate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from wnll_art.evaluation.parser import add_run_options
    from wnll_art.evaluation.protocols import PROTOCOLS, SPECS
    from wnll_art.evaluation.victims import MODELS, PURIFIERS

    p = sub.add_parser("evaluate", help="robust accuracy grid (ART + Foolbox attacks), JSON + markdown + PNG",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    add_run_options(p, out="results/evaluate", defences_help=f"test-time defences among {','.join(PURIFIERS)}")
    p.add_argument("--protocol", choices=PROTOCOLS.names(), default="main",
                   help="; ".join(f"{n}: {PROTOCOLS[n]}" for n in PROTOCOLS))  # fmt: skip
    p.add_argument("--models", type=ap.name_list, default=("softmax", "wnll"),
                   help=f"any of {','.join(MODELS)} or trained models (wnll-art info)")  # fmt: skip
    by_protocol = {n: [k.split(":", 1)[1] for k in SPECS if SPECS[k].protocol == n] for n in PROTOCOLS}
    p.add_argument("--attacks", type=ap.name_list, default=None,
                   help="the protocol's attacks (unset: its default plan); " +
                        "; ".join(f"{n}: {','.join(a)}" for n, a in by_protocol.items()))  # fmt: skip
    p.add_argument("--no-progress", action="store_true")


def _run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from wnll_art._device import set_deterministic
    from wnll_art.evaluation.jobs.main import evaluate
    from wnll_art.evaluation.parser import config_from_args, plan_from_args

    if args.deterministic:  # before anything is built (the device facts of every record say so)
        set_deterministic(True)
    cfg = config_from_args(args, models=args.models)
    bars: list[tqdm] = []  # opened with the first cell: a run refused before it prints one line, not a bar

    def on_cell(record: object) -> None:
        if not bars:
            bars.append(tqdm(desc="cells", unit="cell", disable=args.no_progress))
        bar = bars[0]
        bar.update(1)
        bar.set_postfix_str(f"{record.model}/{record.defence}/{record.attack}@{record.eps:g}: "  # type: ignore[attr-defined]
                            f"{100 * record.accuracy:.1f}%")  # type: ignore[attr-defined]  # fmt: skip

    try:
        evaluate(cfg, out_dir=args.out, protocol=args.protocol, attacks=args.attacks, options=plan_from_args(args),
                 data_root=args.data_root, weights=args.weights, on_cell=on_cell)  # fmt: skip
    finally:
        for bar in bars:
            bar.close()
    table = Path(args.out) / "results.md"
    if table.is_file():
        print(table.read_text())
        print(f"results: {Path(args.out).resolve()} (cells/*.json, results.md, accuracy_vs_eps__*.png)")
    return 0


def _model_rows() -> list[dict[str, object]]:
    """One row per loadable model: the public zoo backbones and our shipped trained models."""
    from wnll_art.zoo import ZOO, cached_weights_path
    from wnll_art.zoo_trained import base_measurements, trained_models

    measured = base_measurements()
    rows: list[dict[str, object]] = []
    for name, e in ZOO.items():
        for output, key in (("softmax", name), ("wnll (post-hoc, template 500)", f"{name}+wnll")):
            m = measured.get(key, {})
            rows.append({"name": name, "output": output, "training_data": "original", "base": None,
                         "family": "public", "test_accuracy": m.get("test_accuracy", e.reference_accuracy / 100 if key == name else None),
                         "test_accuracy_tvm": m.get("test_accuracy_tvm"), "sha256": e.sha256, "url": e.url,
                         "weights_cached": cached_weights_path(e).is_file()})  # fmt: skip
    for name, t in trained_models().items():
        rows.append({"name": name, "output": t.output, "training_data": t.training_data, "base": t.base,
                     "family": t.family, "test_accuracy": t.record.get("test_accuracy"),
                     "test_accuracy_tvm": t.record.get("test_accuracy_tvm"), "sha256": t.sha256,
                     "train_wall_s": t.record.get("train_wall_s"), "command": t.record.get("command")})  # fmt: skip
    return rows


def _pct(value: object) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def _run_info(args: argparse.Namespace) -> int:
    import torch

    import wnll_art
    from wnll_art._device import library_versions
    from wnll_art.data import default_data_root

    rows = _model_rows()
    if args.json:
        info = {"wnll_art": wnll_art.__version__, "data_root": str(default_data_root()), "models": rows,
                "cuda": torch.cuda.is_available(), "versions": library_versions()}  # fmt: skip
        print(json.dumps(info, indent=1))
        return 0
    print(
        f"wnll-art {wnll_art.__version__}; data root {default_data_root()}; CUDA {torch.cuda.is_available()}"
    )
    print("accuracy on the 10,000 CIFAR-10 test images (TVM: Guo et al.'s settings, seed 0)\n")
    print("| model | kind | output | training data | clean | under TVM |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['family']} | {r['output']} | {r['training_data']} | {_pct(r['test_accuracy'])} "
              f"| {_pct(r['test_accuracy_tvm'])} |")  # fmt: skip
    return 0


def _parser() -> argparse.ArgumentParser:
    import wnll_art

    parser = _Parser(prog="wnll-art", description="WNLL + TVM defence (Wang et al. 2018) for ART/Foolbox")
    parser.add_argument("--version", action="version", version=f"%(prog)s {wnll_art.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_evaluate(sub)
    info = sub.add_parser("info", help="the models with their measured accuracies, versions, data root")
    info.add_argument("--json", action="store_true", help="everything as JSON (models, sha256, versions)")
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

    def body() -> int:
        if args.command == "evaluate":
            ap.check_out_dir(args.out)
            return _run_evaluate(args)
        if args.command == "info":
            return _run_info(args)
        return int(importlib.import_module("wnll_art.train.cli").run_train(args))

    return ap.run_command(f"wnll-art {args.command}", body, resume=args.command == "evaluate", kept=_kept(args))


def _kept(args: argparse.Namespace) -> str:
    """What an interrupted command leaves behind, and how to go on."""
    if args.command == "evaluate":
        return f"finished cells are kept in {Path(args.out) / 'cells'}; re-run the same command to resume"
    if args.command == "train":
        return f"{Path(args.out) / 'last.pt'} holds the last finished epoch; re-run with --resume to continue"
    return "nothing was written"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
