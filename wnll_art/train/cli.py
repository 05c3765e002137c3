"""The ``wnll-art train`` subcommand: full WNLL training or the CPU buffer-block (head) training.

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018). Wire it into a console script with::

    sub = parser.add_subparsers(dest="command")
    add_train_parser(sub)          # sets func=run_train on the "train" parser
    args = parser.parse_args(); sys.exit(args.func(args))

Bad input never shows a traceback: every option is checked (argparse types, then the output folder,
weights, config, model and data) before anything is written, and reported as one line on stderr with exit
status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from wnll_art._argparse import UsageError, check_out_dir, device, positive_float, positive_int, unit_float

__all__ = ["add_train_parser", "run_train"]

PROG = "wnll-art train"


def non_negative_float(text: str) -> float:
    """An ``argparse`` type: ``0`` or a :func:`wnll_art._argparse.positive_float` (finite)."""
    try:
        if float(text) == 0.0:
            return 0.0
        return positive_float(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}") from None


def _one_line_error(message: str) -> NoReturn:
    """Replaces argparse's usage dump: one line naming the problem, exit status 2."""
    print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
    raise SystemExit(2)


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``train`` subcommand to an ``argparse`` subparsers object and returns its parser.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.
    """
    p = subparsers.add_parser(
        "train",
        help="train a WNLL ResNet-56 (full) or fine-tune its buffer block on cached features (head)",
        description="Alternating linear / WNLL training of Wang et al. (2018), arXiv:1809.08516.",
    )
    p.error = _one_line_error  # type: ignore[method-assign]
    p.add_argument("--mode", choices=["full", "head"], default="head",
                   help="full: whole network (GPU advised); head: buffer block + heads on frozen pretrained "
                        "features (CPU, minutes) [head]")  # fmt: skip
    p.add_argument("--data", choices=["original", "tvm", "original+tvm"], default="original",
                   help="training images: originals, TVM-purified copies, or both [original]")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs [full: 200, head: 6]")
    p.add_argument("--batch-size", type=positive_int, default=128, help="batch size, >= 2 [128]")
    p.add_argument(
        "--lr", type=positive_float, default=None, help="initial learning rate [full: 0.1, head: 0.01]"
    )
    p.add_argument("--lr-schedule", choices=["step", "authors"], default="step",
                   help="step (/10 at 50%%, 75%%) or the authors' code schedule [step]")  # fmt: skip
    p.add_argument("--gradient", choices=["surrogate", "exact"], default="surrogate",
                   help="WNLL-step gradient [surrogate]")  # fmt: skip
    p.add_argument("--out", required=True, help="output directory (checkpoints, metrics.jsonl, final.pt)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start a fresh run in an OUT that holds one (its last.pt, metrics.jsonl, final.* are "
                        "replaced); without --resume or --overwrite such an OUT is refused")  # fmt: skip
    p.add_argument("--data-root", default=None, help="CIFAR-10 root [$WNLL_ART_DATA or ~/.cache/wnll_art]")
    p.add_argument("--weights", default=None,
                   help="ResNet-56 weights: head mode's frozen backbone, full mode's initialisation "
                        "[head: hub cache; full: random init]")  # fmt: skip
    p.add_argument("--cache-dir", default=None, help="feature / TVM cache directory [OUT/cache]")
    p.add_argument("--seed", type=int, default=0, help="seed of every generator, >= 0 [0]")
    p.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda or cuda:N [cpu]")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads [torch's default]")
    p.add_argument("--train-subset", type=positive_int, default=None, help="use the first N training images")
    p.add_argument(
        "--test-subset", type=positive_int, default=None, help="evaluate on the first N test images"
    )
    p.add_argument("--template-size", type=positive_int, default=500,
                   help="template of the trained model, a multiple of the class count [500]")  # fmt: skip
    p.add_argument("--tvm-prob", type=unit_float, default=None, help="TVM keep probability [0.5, Guo et al.]")
    p.add_argument(
        "--tvm-lamb", type=non_negative_float, default=None, help="TVM TV weight [0.03, Guo et al.]"
    )
    p.add_argument("--tvm-iterations", type=positive_int, default=None, help="TVM ADMM iterations [20]")
    p.add_argument("--wnll-weight", type=non_negative_float, default=None,
                   help="factor on the WNLL loss; 0 trains the linear (softmax) head alone [1.0]")  # fmt: skip
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (full mode, CUDA only)")
    p.add_argument(
        "--channels-last", action="store_true", help="channels-last memory format (full mode, CUDA only)"
    )
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic PyTorch kernels, no TF32 (recorded in metrics.jsonl and final.json)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    p.set_defaults(func=run_train)
    return p


def _config(args: argparse.Namespace) -> Any:
    """The :class:`TrainConfig` / :class:`HeadConfig` of the options (unset ones keep the defaults)."""
    from wnll_art.train.config import HeadConfig, TrainConfig
    from wnll_art.tvm.settings import TVMSettings

    tvm = {k: v for k, v in (("prob", args.tvm_prob), ("lamb", args.tvm_lamb),
                             ("iterations", args.tvm_iterations)) if v is not None}  # fmt: skip
    options: dict[str, Any] = {
        "data": args.data, "tvm": TVMSettings(**tvm), "batch_size": args.batch_size, "gradient": args.gradient,
        "lr_schedule": args.lr_schedule, "seed": args.seed, "train_subset": args.train_subset,
        "test_subset": args.test_subset, "eval_template_size": args.template_size,
    }  # fmt: skip
    options.update({k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("wnll_weight", args.wnll_weight))
                    if v is not None})  # fmt: skip
    for flag, on in (("--bf16", args.bf16), ("--channels-last", args.channels_last)):
        if on and args.mode != "full":
            raise UsageError(f"{flag} applies to --mode full only")
        if on and not args.device.startswith("cuda"):
            raise UsageError(f"{flag} needs a CUDA --device (it would do nothing on {args.device}); drop {flag} "
                             "or use --device cuda")  # fmt: skip
    if args.mode == "full":
        return TrainConfig(**options, bf16=args.bf16, channels_last=args.channels_last)
    return HeadConfig(**options)


RUN_FILES = ("last.pt", "metrics.jsonl", "final.pt", "final.json")


def _check_paths(args: argparse.Namespace) -> None:
    """Output folders writable and not holding a run unless resumed or overwritten, weights and data root
    present (nothing is created)."""
    check_out_dir(args.out)
    if args.resume and args.overwrite:
        raise UsageError(
            "give --resume (continue the run in --out) or --overwrite (start it again), not both"
        )
    found = [name for name in RUN_FILES if (Path(args.out) / name).exists()]
    if found and not (args.resume or args.overwrite):
        raise UsageError(f"--out {args.out} already holds a run ({', '.join(found)}); pass --resume to continue "
                         "it or --overwrite to start again, or choose another --out")  # fmt: skip
    if args.cache_dir is not None:
        check_out_dir(args.cache_dir, "--cache-dir")
    if args.weights is not None and not Path(args.weights).is_file():
        raise UsageError(f"--weights {args.weights} is not a file; give the path of a ResNet-56 checkpoint")
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise UsageError(
            f"--data-root {args.data_root} is not a folder; give the folder holding cifar-10-batches-py/"
        )


def run_train(args: argparse.Namespace) -> int:
    """Runs the ``train`` subcommand; prints a JSON summary (accuracies as fractions).

    Returns:
        The exit status: 0 on success, 2 on bad input (one line on stderr, nothing written).
    """
    import torch

    from wnll_art._device import set_deterministic
    from wnll_art._files import results_lock
    from wnll_art.train.recipe import train

    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        _check_paths(args)
        config = _config(args)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.deterministic:  # before anything is built (the device facts of the records say so)
            set_deterministic(True)
        with results_lock(args.out):  # two trainings into one --out: the second exits 2 naming the first
            result = train(
                config, out_dir=args.out, data_root=args.data_root, weights=args.weights, device=args.device,
                resume=args.resume, cache_dir=args.cache_dir, progress=not args.no_progress,
            )  # fmt: skip
    except (UsageError, ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
        if args.deterministic and not was_deterministic:
            set_deterministic(False)
    summary = {"mode": config.mode, "epochs": result.epochs_done, "wnll_test_accuracy": result.test_accuracy,
               "linear_test_accuracy": result.linear_accuracy, "wall_s": round(result.wall_s, 1),
               "weights": str(result.final_weights), "zoo_record": str(result.zoo_record)}  # fmt: skip
    if result.test_accuracy is not None:
        print(f"{PROG}: WNLL test accuracy {result.test_accuracy:.2%}, linear head "
              f"{result.linear_accuracy or float('nan'):.2%}", file=sys.stderr)  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0
