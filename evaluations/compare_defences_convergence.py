"""The convergence checks of the comparison of defences: N. Carlini et al. (2019)'s step and EOT ladders and the
unbounded check (:class:`wnll_art.evaluation.checks.Convergence`, as ``defence_table`` runs them) on the victims of
a finished or running ``wnll-art evaluate`` folder, re-running each victim's strongest gradient attack of that
run on its first images. Cells go to ``FOLDER/convergence/`` (a resumable store of its own, protocol
``"convergence"``), where the report reads them. Where a ladder shows the run's step count fell short
(:func:`wnll_art.evaluation.ladders.budget_due`), ``budget`` re-runs that attack at the ladder's top step count on
every image of the run into ``FOLDER/budget/`` (protocol ``"budget"``), and the report's worst case takes it in.

    python evaluations/compare_defences.py convergence --records FOLDER --victims softmax+jpeg,softmax+tvm
    python evaluations/compare_defences.py budget --records FOLDER --victims softmax+spatial_smoothing
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from wnll_art._device import Dist
    from wnll_art.evaluation.config import EvalConfig
    from wnll_art.evaluation.engine import Batches
    from wnll_art.evaluation.protocols import AttackSpec
    from wnll_art.evaluation.records import CellRecord
    from wnll_art.evaluation.victims import Victim

__all__ = ["budget_main", "config_of", "main", "run_budget", "run_convergence"]


def config_of(run: Mapping[str, Any], *, device: str | None = None) -> EvalConfig:
    """The :class:`~wnll_art.evaluation.config.EvalConfig` a ``run.json``'s ``run`` records (``device``: another)."""
    from wnll_art.evaluation.config import EvalConfig
    from wnll_art.tvm.settings import TVMSettings

    fields = {**run, "tvm": TVMSettings.from_dict(run["tvm"])}
    return EvalConfig(**{**fields, **({"device": device} if device else {})})


class _Job(NamedTuple):
    settings: dict[str, Any]  # run.json
    cfg: EvalConfig
    specs: list[AttackSpec]  # the run's plan
    chosen: list[Victim]
    sources: dict[str, Victim]
    dist: Dist
    batches: Batches


def _setup(folder: str | Path, victims: Sequence[tuple[str, str]], *, device: str | None,
           data_root: str | None, weights: str | None) -> _Job:  # fmt: skip
    """What a re-run on the run in ``folder`` needs: its settings, config, plan, the chosen victims, the transfer
    sources, the process group and the run's images.

    Raises:
        FileNotFoundError: ``folder`` holds no ``run.json``.
        ValueError: A victim not of the run.
    """
    from wnll_art._device import Dist
    from wnll_art.evaluation.protocols import PlanOptions, plan
    from wnll_art.evaluation.setup import load_batches, rows, victims_of

    settings = json.loads((Path(folder) / "run.json").read_text())
    cfg = config_of(settings["run"], device=device)
    grid = {(m, d) for m in cfg.models for d in cfg.defences}
    if not victims or not set(victims) <= grid:
        raise ValueError(f"victims must be among {sorted(grid)}, got {list(victims)}")
    names = [s["name"] for s in settings["plan"] if s["name"] != "clean"]
    specs = plan(settings["protocol"], PlanOptions(**settings["options"]), names)
    dist = Dist.from_env(cfg.device)
    (row,) = rows(cfg)
    cells, sources = victims_of(row, cfg, sources={s.source for s in specs if s.source != "self"},
                                defences=sorted({d for _, d in victims}), data_root=data_root, weights=weights)  # fmt: skip
    chosen = [v for v in cells if (v.model, v.defence) in set(victims)]
    return _Job(settings, cfg, specs, chosen, sources, dist, load_batches(cfg, data_root, dist))


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
    from wnll_art.evaluation.checks import Convergence
    from wnll_art.evaluation.records import read_records
    from wnll_art.evaluation.setup import open_store, run_settings

    job = _setup(folder, victims, device=device, data_root=data_root, weights=weights)
    cfg, settings = job.cfg, job.settings
    eps = eps if eps is not None else min(cfg.eps, key=lambda e: abs(e - 8 / 255))
    conv = Convergence(steps=tuple(steps), eot=tuple(eot), images=images)
    sub = replace(cfg, n=min(images, cfg.n))
    store_settings = run_settings(sub, job.dist, protocol="convergence", of=settings["protocol"], plan=settings["plan"],
                                  options=settings["options"], convergence=conv.to_dict())  # fmt: skip
    store = open_store(Path(folder) / "convergence", store_settings, job.dist)
    return conv.run(job.chosen, job.sources, job.specs, read_records(folder), job.batches, store, eps=eps,
                    seed=cfg.seed, run_settings=store_settings, tvm_draws=cfg.tvm_draws)  # fmt: skip


def run_budget(folder: str | Path, victims: Sequence[tuple[str, str]], *, steps: int | None = None,
               device: str | None = None, data_root: str | None = None, weights: str | None = None,
               ) -> dict[tuple[str, str], CellRecord]:  # fmt: skip
    """Re-runs each victim's convergence attack at ``steps`` (``None``: the ladder's top, where
    :func:`~wnll_art.evaluation.ladders.budget_due` calls for it) on every image of the run in ``folder``, at the
    ladder's eps, into ``folder/budget`` (protocol ``"budget"``, attack ``<attack>__steps<k>``; resumable). Returns
    the records written or read back; a victim for which no re-run is due is left out.

    Raises:
        FileNotFoundError: ``folder`` holds no ``run.json``.
        ValueError: A victim not of the run, or one without convergence ladders (run ``convergence`` first).
    """
    from wnll_art.evaluation.checks import convergence_specs
    from wnll_art.evaluation.comparison import load_folder
    from wnll_art.evaluation.engine import run_cells
    from wnll_art.evaluation.ladders import budget_due, convergence_of
    from wnll_art.evaluation.setup import open_store, run_settings

    run = load_folder(folder)
    if run is None:
        raise FileNotFoundError(f"{folder}: no run.json")
    if not victims or any(v not in run.victims for v in victims):
        raise ValueError(f"victims must be among {run.victims}, got {list(victims)}")
    found = {v: convergence_of(run.convergence, *v) for v in victims}
    if lacking := [f"{m}+{d}" for (m, d), c in found.items() if c is None]:
        raise ValueError(f"no convergence ladders for {lacking} in {folder}/convergence: run `convergence` first")
    ladders = {v: c for v, c in found.items() if c is not None}
    due = {v: k for v, c in ladders.items()
           if (k := steps if steps is not None else budget_due(c, run.attack_steps(*v, c.attack)))}
    if not due:
        return {}
    job = _setup(folder, list(due), device=device, data_root=data_root, weights=weights)
    store_settings = run_settings(job.cfg, job.dist, protocol="budget", of=job.settings["protocol"],
                                  plan=job.settings["plan"], options=job.settings["options"])  # fmt: skip
    store = open_store(Path(folder) / "budget", store_settings, job.dist)
    by_name = {s.name: s for s in job.specs}
    if stale := sorted({c.attack for v, c in ladders.items() if v in due and c.attack not in by_name}):
        raise ValueError(f"ladder attacks {stale} are not in the run's plan: re-run `convergence` on {folder}")
    out = {}
    for victim in job.chosen:
        key = (victim.model, victim.defence)
        ((_, _, spec),) = convergence_specs(by_name[ladders[key].attack], steps=(due[key],), eot=())
        (out[key],) = run_cells(victims=[victim], specs=[spec], eps_values=[ladders[key].eps], batches=job.batches,
                                store=store, protocol="budget", seed=job.cfg.seed, run_settings=store_settings,
                                sources=job.sources, tvm_draws=job.cfg.tvm_draws)  # fmt: skip
    return out


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t)


def _parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The options both subcommands take: the run folder, its victims, the device, the data and the weights."""
    from wnll_art import _argparse as ap

    p = argparse.ArgumentParser(prog=f"compare_defences {prog}", description=description)
    p.add_argument("--records", required=True, help="the wnll-art evaluate folder (its run.json and cells)")
    p.add_argument("--victims", required=True, type=ap.name_list, help="MODEL+DEFENCE cells, comma-separated")
    p.add_argument("--device", type=ap.device, default=None, help="another device than the run's")
    p.add_argument("--data-root", default=None)
    p.add_argument("--weights", default=None)
    return p


def main(argv: Sequence[str]) -> int:
    """Parses ``argv`` and runs :func:`run_convergence`, holding the convergence folder's lock; prints the flags."""
    from wnll_art import _argparse as ap
    from wnll_art._files import results_lock

    p = _parser("convergence", __doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--convergence-steps", type=_ints, default=(10, 20, 50, 100), help="step ladder")
    p.add_argument("--convergence-eot", type=_ints, default=(1, 2, 4), help="EOT-sample ladder")
    p.add_argument("--convergence-images", type=ap.positive_int, default=20, help="the first images of the run")
    p.add_argument("--eps", type=float, default=None, help="the run's eps to check (default: the closest to 8/255)")
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


def budget_main(argv: Sequence[str]) -> int:
    """Parses ``argv`` and runs :func:`run_budget`, holding the budget folder's lock; prints each re-run's accuracy."""
    from wnll_art import _argparse as ap
    from wnll_art._files import results_lock

    p = _parser("budget", run_budget.__doc__)
    p.add_argument("--steps", type=ap.positive_int, default=None,
                   help="steps of the re-run (default: the ladder's top, only where the ladder calls for it)")
    args = p.parse_args(argv)
    victims = [tuple(v.split("+", 1)) for v in args.victims]

    def body() -> None:
        out = Path(args.records) / "budget"
        out.mkdir(parents=True, exist_ok=True)
        with results_lock(out):
            found = run_budget(args.records, victims, steps=args.steps, device=args.device,  # type: ignore[arg-type]
                               data_root=args.data_root, weights=args.weights)  # fmt: skip
        for (model, defence), r in found.items():
            print(f"{model}+{defence}: {r.attack} at eps={r.eps:g} on {r.n} images: {100 * r.accuracy:.1f}%")
        if not found:
            print("no re-run is due: every ladder levels off by the run's step count")

    return ap.run_command("compare_defences budget", body, resume=True, kept=f"{args.records}/budget")
