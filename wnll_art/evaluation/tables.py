"""Shared pieces of the table scripts in ``evaluations/`` (the paper's tables and the comparisons beyond them).

The scripts are thin: each parses its options and calls one library function:

- :func:`wnll_art.evaluation.paper_tables.defense_table` (the paper's Table 2, paper vs adaptive protocol),
- :func:`wnll_art.evaluation.paper_tables.transfer_table` (the paper's Table 1),
- :func:`wnll_art.evaluation.defence_comparison.compare_defences` (WNLL + TVM vs ART's preprocessors),
- :func:`wnll_art.evaluation.geometry.feature_geometry` (the paper's Fig. 4).

This module holds what they share: opening a results store on every rank, per-image minima over attacks,
"a weaker attack beats a stronger one" flags, and attaching flags to stored records.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from wnll_art._argparse import float_list, name_list
from wnll_art.evaluation.engine import AttackSpec, Dist
from wnll_art.evaluation.harness import EvalConfig
from wnll_art.evaluation.records import CellRecord, RunStore, per_image_minimum
from wnll_art.evaluation.victims import Victim
from wnll_art.tvm.settings import TVMSettings

__all__ = [
    "attach_flags",
    "open_store",
    "parse_checkpoints",
    "pct",
    "per_image_minimum",
    "run_script",
    "script_config",
    "script_parser",
    "specs_for_victim",
    "stronger_flags",
    "tvm_available",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def tvm_available() -> bool:
    """Whether the TVM purifier (:mod:`wnll_art.tvm.module` and its solver) can be imported."""
    try:
        import wnll_art.tvm.module  # noqa: F401
    except ImportError:
        return False
    return True


def parse_checkpoints(entries: Iterable[str]) -> dict[str, Path]:
    """Parses ``NAME=PATH`` options (ResNet-56 state dicts trained on other data) into ``{name: path}``.

    Raises:
        ValueError: On a malformed entry, a name that is not file-name safe, ``"original"`` (the zoo
            model's name) or a repeated name.
        FileNotFoundError: If a path does not exist.
    """
    out: dict[str, Path] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--checkpoint expects NAME=PATH, got {entry!r}")
        if not _NAME.match(name) or name == "original" or name in out:
            raise ValueError(
                f"checkpoint name {name!r} must be unique, file-name safe and not 'original' (the zoo model)"
            )
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {name!r}: no file at {p}")
        out[name] = p
    return out


def open_store(out_dir: str | os.PathLike[str], run_settings: dict[str, Any], dist: Dist) -> RunStore:
    """A :class:`RunStore` opened on every rank (rank 0 first; it alone writes or sets files aside)."""
    store = RunStore(out_dir, run_settings) if dist.rank == 0 else None
    dist.barrier()
    return store if store is not None else RunStore(out_dir, run_settings, writer=False)


def stronger_flags(
    records: Sequence[CellRecord], *, reference: str, challenger: str, flag: str, why: str
) -> dict[str, list[str]]:
    """Flags ``reference`` cells that a (supposedly weaker) ``challenger`` attack beats at the same eps.

    E.g. reference = the exact-gradient IFGSM, challenger = the surrogate-gradient IFGSM or a transfer
    attack: if the challenger wins, the reference's gradient is probably masked. Returns ``key -> flags``.
    """
    index = {(r.protocol, r.model, r.defence, r.attack, r.eps): r for r in records}
    flags: dict[str, list[str]] = {}
    for (protocol, model, defence, attack, eps), rec in index.items():
        ref = index.get((protocol, model, defence, reference, eps)) if attack == challenger else None
        if ref is not None and rec.accuracy < ref.accuracy:
            flags.setdefault(ref.key, []).append(
                f"{flag}: {challenger} gives {pct(rec.accuracy)}% < {reference} {pct(ref.accuracy)}% at "
                f"eps={eps:g} ({why})"
            )
    return flags


def attach_flags(
    store: RunStore | None,
    records: Sequence[CellRecord],
    *,
    victim_flags: Mapping[tuple[str, str], Sequence[str]] | None = None,
    cell_flags: Mapping[str, Sequence[str]] | None = None,
) -> list[CellRecord]:
    """Sets each record's flags to its victim's plus its own (replacing what it had, so a resumed run does
    not keep stale flags), rewriting changed records in ``store`` (``None``: write nothing, as on ranks > 0);
    returns the new records."""
    out = []
    for r in records:
        flags = set((victim_flags or {}).get((r.model, r.defence), ())) | set(
            (cell_flags or {}).get(r.key, ())
        )
        if sorted(flags) != r.flags:
            r = replace(r, flags=sorted(flags))
            if store is not None:
                store.put(r)
        out.append(r)
    return out


def specs_for_victim(victim: Victim, specs: Sequence[AttackSpec]) -> list[AttackSpec]:
    """``specs`` without those that would only repeat a cell on ``victim``: on a softmax model the surrogate
    gradient is the exact one, and transfer from the undefended softmax model onto itself is white box."""
    if victim.model != "softmax":
        return list(specs)
    return [
        s
        for s in specs
        if s.gradient != "surrogate" and not (s.source == "softmax" and victim.defence == "none")
    ]


def pct(value: float) -> str:
    """An accuracy in [0, 1] as a percentage with one decimal."""
    return f"{100 * value:.1f}"


def script_parser(
    prog: str,
    description: str,
    *,
    n: int = 100,
    eps: tuple[float, ...] = (0.02, 0.04, 0.06, 0.08, 0.1),
    defences: tuple[str, ...] = ("none", "tvm"),
    defences_help: str = "test-time defences among none,tvm",
    out: str,
) -> argparse.ArgumentParser:
    """The options every script in ``evaluations/`` shares (data, weights, WNLL, TVM, budgets, seed)."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    # --num-images / --start-index: torchrun's own parser rejects --n and --start as ambiguous abbreviations
    p.add_argument(
        "--n", "--num-images", dest="n", type=int, default=n, help="test images (the first n from --start)"
    )
    p.add_argument(
        "--start", "--start-index", dest="start", type=int, default=0, help="index of the first test image"
    )
    p.add_argument(
        "--eps", type=float_list, default=eps, help="L-inf radii in [0, 1] pixel units, comma-separated"
    )
    p.add_argument("--defences", type=name_list, default=defences, help=defences_help)
    p.add_argument("--out", default=out, help="results directory (re-running with the same settings resumes)")
    p.add_argument(
        "--data-root", default=None, help="CIFAR-10 root (default: $WNLL_ART_DATA or the user cache)"
    )
    p.add_argument("--weights", default=None, help="ResNet-56 checkpoint (default: the torch hub cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="template draw, TVM masks, attack random starts")
    p.add_argument("--wnll-batch-size", type=int, default=500, help="transductive WNLL batch = attack batch")
    p.add_argument(
        "--template-size", type=int, default=500, help="class-balanced template from the train set"
    )
    p.add_argument("--coupling", choices=("transductive", "inductive"), default="transductive")
    p.add_argument("--kernel", choices=("gaussian", "quartic"), default="gaussian")
    p.add_argument("--eot-samples", type=int, default=4, help="EOT draws when attacking a randomised defence")
    p.add_argument("--cw-steps", type=int, default=30, help="C&W optimisation steps (adaptive attacks)")
    guo = TVMSettings()
    p.add_argument("--tvm-prob", type=float, default=guo.prob, help="probability that a pixel is kept")
    p.add_argument("--tvm-lamb", type=float, default=guo.lamb, help="TV weight (Guo et al.: 0.03)")
    p.add_argument("--tvm-objective", choices=("art", "isotropic"), default=guo.objective)
    p.add_argument("--tvm-iterations", type=int, default=guo.iterations, help="ADMM iterations (Guo: 20)")
    return p


def script_config(args: argparse.Namespace, *, defences: tuple[str, ...] | None = None) -> EvalConfig:
    """The :class:`EvalConfig` of parsed :func:`script_parser` options (both models, always)."""
    return EvalConfig(
        n=args.n, start=args.start, eps=args.eps, models=("softmax", "wnll"),
        defences=args.defences if defences is None else defences, wnll_batch_size=args.wnll_batch_size,
        template_size=args.template_size, coupling=args.coupling, kernel=args.kernel,
        eot_samples=args.eot_samples, cw_steps=args.cw_steps, seed=args.seed, device=args.device,
        tvm=TVMSettings(prob=args.tvm_prob, lamb=args.tvm_lamb, objective=args.tvm_objective,
                        iterations=args.tvm_iterations, eot_samples=args.eot_samples),
    )  # fmt: skip


def run_script(body: Callable[[], object], prog: str) -> int:
    """Runs a script body, turning user errors into a one-line message and exit status 2."""
    try:
        body()
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
