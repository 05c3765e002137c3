"""The ``wnll-art train`` subcommand: full WNLL training or the CPU buffer-block fine-tune.

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018). Wire it into a console script with::

    sub = parser.add_subparsers(dest="command")
    add_train_parser(sub)          # sets func=run_train on the "train" parser
    args = parser.parse_args(); sys.exit(args.func(args))
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_train_parser", "run_train"]


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
    p.add_argument("--mode", choices=["full", "head"], default="head",
                   help="full: whole network (GPU advised); head: buffer block + heads on frozen pretrained "
                        "features (CPU, minutes) [head]")  # fmt: skip
    p.add_argument("--data", choices=["original", "tvm", "original+tvm"], default="original",
                   help="training images (full mode) [original]")  # fmt: skip
    p.add_argument("--epochs", type=int, default=None, help="epochs [full: 200, head: 6]")
    p.add_argument("--batch-size", type=int, default=128, help="batch size [128]")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate [full: 0.1, head: 0.01]")
    p.add_argument("--lr-schedule", choices=["step", "authors"], default="step",
                   help="full mode: step (/10 at 50%%, 75%%) or the authors' code schedule [step]")  # fmt: skip
    p.add_argument("--gradient", choices=["surrogate", "exact"], default="surrogate",
                   help="WNLL-step gradient [surrogate]")  # fmt: skip
    p.add_argument("--out", required=True, help="output directory (checkpoints, metrics.jsonl, final.pt)")
    p.add_argument("--resume", action="store_true", help="full mode: continue from OUT/last.pt")
    p.add_argument("--data-root", default=None, help="CIFAR-10 root [$WNLL_ART_DATA or ~/.cache/wnll_art]")
    p.add_argument("--weights", default=None,
                   help="ResNet-56 weights: head mode's frozen backbone, full mode's initialisation "
                        "[head: hub cache; full: random init]")  # fmt: skip
    p.add_argument("--cache-dir", default=None, help="feature / TVM cache directory [OUT/cache]")
    p.add_argument("--seed", type=int, default=0, help="seed of every generator [0]")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda [cpu]")
    p.add_argument("--train-subset", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--template-size", type=int, default=500, help="template of the trained model [500]")
    p.add_argument("--tvm-prob", type=float, default=None, help="TVM keep probability (TVM data modes)")
    p.add_argument("--tvm-lamb", type=float, default=None, help="TVM total-variation weight")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (CUDA only)")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    p.set_defaults(func=run_train)
    return p


def _shared_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options that mean the same for the full recipe and the head fine-tune (unset ones keep the defaults)."""
    options: dict[str, Any] = {
        "batch_size": args.batch_size, "gradient": args.gradient, "seed": args.seed,
        "train_subset": args.train_subset, "test_subset": args.test_subset,
        "eval_template_size": args.template_size,
    }  # fmt: skip
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.lr is not None:
        options["lr"] = args.lr
    return options


def _full_config(args: argparse.Namespace) -> Any:
    import dataclasses

    from wnll_art.train.config import TrainConfig
    from wnll_art.train.tvm_cache import TVMSettings

    tvm_over = {k: v for k, v in (("prob", args.tvm_prob), ("lamb", args.tvm_lamb)) if v is not None}
    options = {**_shared_options(args), "data": args.data, "lr_schedule": args.lr_schedule, "bf16": args.bf16,
               "channels_last": args.channels_last, "tvm": dataclasses.replace(TVMSettings(), **tvm_over)}  # fmt: skip
    return TrainConfig(**options)


def _head_config(args: argparse.Namespace) -> Any:
    from wnll_art.train.head_finetune import HeadConfig

    return HeadConfig(**_shared_options(args))


def run_train(args: argparse.Namespace) -> int:
    """Runs the ``train`` subcommand; prints a JSON summary. Returns the exit status (0 on success).

    Configuration errors (bad values, missing data or weights) are reported on stderr with status 2.
    """
    try:
        if args.mode == "head":
            from wnll_art.train.head_finetune import finetune_head

            result = finetune_head(
                _head_config(args), out_dir=args.out, data_root=args.data_root, weights=args.weights,
                cache_dir=args.cache_dir, device=args.device, progress=not args.no_progress,
            )  # fmt: skip
            summary = {"mode": "head", "wnll_test_accuracy": result.test_accuracy,
                       "baseline_wnll_accuracy": result.baseline_accuracy,
                       "linear_test_accuracy": result.linear_accuracy, "wall_s": round(result.wall_s, 1),
                       "weights": str(result.final_weights), "zoo_record": str(result.zoo_record)}  # fmt: skip
        else:
            from wnll_art.train.recipe import train

            res = train(
                _full_config(args), out_dir=args.out, data_root=args.data_root, device=args.device,
                resume=args.resume, init_weights=args.weights, cache_dir=args.cache_dir,
                progress=not args.no_progress,
            )  # fmt: skip
            summary = {"mode": "full", "epochs": res.epochs_done, "wnll_test_accuracy": res.test_accuracy,
                       "weights": str(res.final_weights), "zoo_record": str(res.zoo_record)}  # fmt: skip
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"wnll-art train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
