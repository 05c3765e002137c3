"""The one argument-parser builder of the run configuration, shared by ``wnll-art evaluate`` and the scripts in
``evaluations/``: the same options, types, checks and help everywhere, turned into an
:class:`~wnll_art.evaluation.config.EvalConfig` by :func:`config_from_args`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from typing import Any

from wnll_art import _argparse as ap
from wnll_art._files import results_lock
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.protocols import PlanOptions
from wnll_art.tvm.settings import PRESETS, TVMSettings

__all__ = ["add_run_options", "config_from_args", "plan_from_args", "run_script", "script_parser",
           "template_size"]  # fmt: skip


def template_size(text: str) -> int:
    """An ``argparse`` type: a positive multiple of 10 (the template is class-balanced)."""
    value = ap.positive_int(text)
    if value % 10:
        raise argparse.ArgumentTypeError(f"expected a multiple of 10 (one share per class), got {text!r}")
    return value


def add_run_options(
    p: argparse.ArgumentParser,
    *,
    out: str,
    n: int = 50,
    eps: tuple[float, ...] = (0.02, 0.04, 0.08),
    defences: tuple[str, ...] = ("none", "tvm"),
    defences_help: str = "test-time defences among none,tvm",
    eot_samples: int = 2,
    cw_steps: int = 10,
    steps: int = 20,
) -> argparse.ArgumentParser:
    """Adds the run configuration's options (images, eps, defences, WNLL, TVM, budgets, seed, device, data,
    weights, ``--deterministic``) to ``p`` with the given defaults; returns ``p``."""
    guo = TVMSettings()
    p.add_argument("--out", default=out, help="results directory (re-running with the same settings resumes)")
    # --num-images / --start-index: torchrun's own parser rejects --n and --start as ambiguous abbreviations
    p.add_argument("--n", "--num-images", dest="n", type=ap.positive_int, default=n,
                   help="test images, the first n from --start (--num-images under torchrun)")  # fmt: skip
    p.add_argument("--start", "--start-index", dest="start", type=ap.non_negative_int, default=0,
                   help="index of the first test image (--start-index under torchrun)")  # fmt: skip
    p.add_argument("--eps", type=ap.eps_list, default=eps, help="L-inf radii in (0, 1], comma-separated")
    p.add_argument("--defences", type=ap.name_list, default=defences, help=defences_help)
    p.add_argument("--wnll-batch-size", type=ap.positive_int, default=500,
                   help="transductive WNLL batch = attack batch")  # fmt: skip
    p.add_argument("--template-size", type=template_size, default=500,
                   help="class-balanced template from the train set")  # fmt: skip
    p.add_argument("--coupling", choices=("transductive", "inductive"), default="transductive")
    p.add_argument("--kernel", choices=("gaussian", "quartic"), default="gaussian")
    p.add_argument("--eot-samples", type=ap.positive_int, default=eot_samples,
                   help="EOT draws when attacking a randomised defence (sets the TVM settings' eot_samples)")  # fmt: skip
    p.add_argument("--cw-steps", type=ap.positive_int, default=cw_steps, help="C&W optimisation steps")
    p.add_argument(
        "--steps", type=ap.positive_int, default=steps, help="iterations of the adaptive iterative attacks"
    )
    p.add_argument("--restarts", type=ap.positive_int, default=1, help="random starts of PGD and APGD")
    p.add_argument(
        "--square-queries", type=ap.positive_int, default=100, help="iterations of the Square attack"
    )
    p.add_argument(
        "--tvm-prob", type=ap.unit_float, default=guo.prob, help="probability that a pixel is kept"
    )
    p.add_argument(
        "--tvm-lamb", type=ap.positive_float, default=guo.lamb, help="TV weight (Guo et al.: 0.03)"
    )
    p.add_argument("--tvm-objective", choices=("art", "isotropic"), default=guo.objective)
    p.add_argument("--tvm-preset", choices=sorted(PRESETS), default="art-100", help="ADMM iterations by name")
    p.add_argument("--tvm-iterations", type=ap.positive_int, default=None,
                   help="ADMM iterations (unset: the preset's count)")  # fmt: skip
    p.add_argument("--tvm-draws", type=ap.positive_int, default=3,
                   help="K: a TVM victim's image counts as robust only if correct under K independent TVM draws")  # fmt: skip
    p.add_argument("--seed", type=ap.non_negative_int, default=0,
                   help="template draw, TVM masks, attack random starts")  # fmt: skip
    p.add_argument("--device", type=ap.device, default="cpu", help="cpu, cuda or cuda:N (checked to exist)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic PyTorch kernels, no TF32 (recorded in every cell's device facts)")  # fmt: skip
    p.add_argument(
        "--data-root", default=None, help="CIFAR-10 root (default: $WNLL_ART_DATA or the user cache)"
    )
    p.add_argument("--weights", default=None, help="ResNet-56 checkpoint (default: the torch hub cache)")
    return p


def config_from_args(args: argparse.Namespace, **fields: Any) -> EvalConfig:
    """The :class:`EvalConfig` of options added by :func:`add_run_options`; ``fields`` (e.g. ``models``,
    ``attacks`` or ``defences``) override or add fields. Raises what :class:`EvalConfig` raises."""
    tvm = TVMSettings.from_preset(args.tvm_preset, prob=args.tvm_prob, lamb=args.tvm_lamb,
                                  objective=args.tvm_objective, eot_samples=args.eot_samples)  # fmt: skip
    if args.tvm_iterations is not None:
        tvm = tvm.replace(iterations=args.tvm_iterations)
    options: dict[str, Any] = dict(
        n=args.n, start=args.start, eps=args.eps, defences=args.defences, wnll_batch_size=args.wnll_batch_size,
        template_size=args.template_size, coupling=args.coupling, kernel=args.kernel, seed=args.seed, device=args.device, tvm=tvm, tvm_draws=args.tvm_draws,
    )  # fmt: skip
    return EvalConfig(**{**options, **fields})


def script_parser(prog: str, description: str, **defaults: Any) -> argparse.ArgumentParser:
    """A parser for a script in ``evaluations/``: :func:`add_run_options` with ``defaults`` (the script's
    own defaults: ``out``, ``n``, ``eps``, ``defences``, ...); the script adds its own options."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    return add_run_options(p, **{"n": 100, "eps": (0.02, 0.04, 0.06, 0.08, 0.1), "eot_samples": 4,
                                 "cw_steps": 30, **defaults})  # fmt: skip


def plan_from_args(args: argparse.Namespace) -> PlanOptions:
    """The :class:`PlanOptions` of the options added by :func:`add_run_options` (EOT samples and attack sizes)."""
    return PlanOptions(eot_samples=args.eot_samples, cw_steps=args.cw_steps, steps=args.steps, restarts=args.restarts,
                       square_queries=args.square_queries)  # fmt: skip


def run_script(body: Callable[[], object], prog: str, args: argparse.Namespace, *, lock: bool = True) -> int:
    """Runs a script body after the shared option checks (``--out`` writable, ``--deterministic`` applied),
    holding ``--out``'s lock (:func:`~wnll_art._files.results_lock`; under ``torchrun`` rank 0 holds it;
    ``lock=False``: the body takes it itself, as :func:`~wnll_art.evaluation.jobs.main.evaluate` does), with
    ``wnll-art``'s one-line errors and exit statuses (:func:`~wnll_art._argparse.run_command`)."""

    def checked() -> None:
        ap.check_out_dir(args.out)
        if args.deterministic:
            from wnll_art._device import set_deterministic

            set_deterministic(True)
        with results_lock(args.out) if lock and os.environ.get("RANK", "0") == "0" else contextlib.nullcontext():
            body()

    kept = f"finished cells are kept in {args.out}; re-run the same command to resume"
    return ap.run_command(prog, checked, resume=True, kept=kept)
