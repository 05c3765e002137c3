"""The convergence checks of the comparison of defences: N. Carlini et al. (2019)'s step and EOT ladders and the
unbounded check (:class:`wnll_art.evaluation.checks.Convergence`, as ``defence_table`` runs them) on the victims of
a finished or running ``wnll-art evaluate`` folder, re-running each victim's strongest gradient attack of that
run on its first images. Cells go to ``FOLDER/convergence/`` (a resumable store of its own, protocol
``"convergence"``), where the report reads them.

    python evaluations/compare_defences.py convergence --records FOLDER --victims softmax+jpeg,softmax+tvm
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wnll_art.evaluation.config import EvalConfig

__all__ = ["config_of", "main", "run_convergence"]


def config_of(run: Mapping[str, Any], *, device: str | None = None) -> EvalConfig:
    """The :class:`~wnll_art.evaluation.config.EvalConfig` a ``run.json``'s ``run`` records (``device``: another)."""
    from wnll_art.evaluation.config import EvalConfig
    from wnll_art.tvm.settings import TVMSettings

    fields = {**run, "tvm": TVMSettings.from_dict(run["tvm"])}
    return EvalConfig(**{**fields, **({"device": device} if device else {})})


def run_convergence(folder: str | Path, victims: Sequence[tuple[str, str]], *, steps: Sequence[int] = (10, 20, 50, 100),
                    eot: Sequence[int] = (1, 2, 4), images: int = 20, eps: float | None = None,
                    device: str | None = None, data_root: str | None = None, weights: str | None = None,
                    ) -> dict[tuple[str, str], tuple[dict[str, Any], list[str]]]:  # fmt: skip
    """Runs the ladders on ``victims`` of the run in ``folder`` (its settings, plan and records; ``eps``: the run's
    eps closest to 8/255 by default); returns :meth:`~wnll_art.evaluation.checks.Convergence.run`'s curves and flags.

    Raises:
        FileNotFoundError: ``folder`` holds no ``run.json``.
        ValueError: A victim not of the run.
    """
    from wnll_art._device import Dist
    from wnll_art.evaluation.checks import Convergence
    from wnll_art.evaluation.protocols import PlanOptions, plan
    from wnll_art.evaluation.records import read_records
    from wnll_art.evaluation.setup import load_batches, open_store, rows, run_settings, victims_of

    settings = json.loads((Path(folder) / "run.json").read_text())
    cfg = config_of(settings["run"], device=device)
    grid = {(m, d) for m in cfg.models for d in cfg.defences}
    if not victims or not set(victims) <= grid:
        raise ValueError(f"victims must be among {sorted(grid)}, got {list(victims)}")
    names = [s["name"] for s in settings["plan"] if s["name"] != "clean"]
    specs = plan(settings["protocol"], PlanOptions(**settings["options"]), names)
    eps = eps if eps is not None else min(cfg.eps, key=lambda e: abs(e - 8 / 255))
    conv = Convergence(steps=tuple(steps), eot=tuple(eot), images=images)
    dist = Dist.from_env(cfg.device)
    (row,) = rows(cfg)
    cells, sources = victims_of(row, cfg, sources={s.source for s in specs if s.source != "self"},
                                defences=sorted({d for _, d in victims}), data_root=data_root, weights=weights)  # fmt: skip
    chosen = [v for v in cells if (v.model, v.defence) in set(victims)]
    sub = replace(cfg, n=min(images, cfg.n))
    store_settings = run_settings(sub, dist, protocol="convergence", of=settings["protocol"], plan=settings["plan"],
                                  options=settings["options"], convergence=conv.to_dict())  # fmt: skip
    store = open_store(Path(folder) / "convergence", store_settings, dist)
    return conv.run(chosen, sources, specs, read_records(folder), load_batches(cfg, data_root, dist), store, eps=eps,
                    seed=cfg.seed, run_settings=store_settings, tvm_draws=cfg.tvm_draws)  # fmt: skip


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t)


def main(argv: Sequence[str]) -> int:
    """Parses ``argv`` and runs :func:`run_convergence`, holding the convergence folder's lock; prints the flags."""
    from wnll_art import _argparse as ap
    from wnll_art._files import results_lock

    p = argparse.ArgumentParser(prog="compare_defences convergence", description=__doc__.splitlines()[0])
    p.add_argument("--records", required=True, help="the wnll-art evaluate folder (its run.json and cells)")
    p.add_argument("--victims", required=True, type=ap.name_list, help="MODEL+DEFENCE cells, comma-separated")
    p.add_argument("--convergence-steps", type=_ints, default=(10, 20, 50, 100), help="step ladder")
    p.add_argument("--convergence-eot", type=_ints, default=(1, 2, 4), help="EOT-sample ladder")
    p.add_argument("--convergence-images", type=ap.positive_int, default=20, help="the first images of the run")
    p.add_argument("--eps", type=float, default=None, help="the run's eps to check (default: the closest to 8/255)")
    p.add_argument("--device", type=ap.device, default=None, help="another device than the run's")
    p.add_argument("--data-root", default=None)
    p.add_argument("--weights", default=None)
    args = p.parse_args(argv)
    victims = [tuple(v.split("+", 1)) for v in args.victims]

    def body() -> None:
        out = Path(args.records) / "convergence"
        out.mkdir(parents=True, exist_ok=True)
        with results_lock(out):
            found = run_convergence(args.records, victims, steps=args.convergence_steps,  # type: ignore[arg-type]
                                    eot=args.convergence_eot, images=args.convergence_images, eps=args.eps,
                                    device=args.device, data_root=args.data_root, weights=args.weights)  # fmt: skip
        for (model, defence), (curves, flags) in found.items():
            print(f"{model}+{defence}: {curves['attack']} steps {curves['steps']} eot {curves['eot']} unbounded "
                  f"{curves['unbounded']}: {'; '.join(flags) or 'converged'}")  # fmt: skip

    return ap.run_command("compare_defences convergence", body, resume=True, kept=f"{args.records}/convergence")
