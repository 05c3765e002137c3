"""The paper's Table 2: robust accuracy of each training-data variant, paper protocol vs adaptive protocol.

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018), Table 2. The adaptive protocol follows A. Athalye, N. Carlini,
D. Wagner (ICML 2018) and F. Tramer et al. (NeurIPS 2020); see :mod:`wnll_art.evaluation.protocols`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wnll_art._device import Dist
from wnll_art.evaluation.checks import Convergence
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import Batches, run_cells
from wnll_art.evaluation.protocols import (
    ALL,
    FAMILIES,
    PlanOptions,
    adaptive_minimum,
    plan,
)
from wnll_art.evaluation.records import CellRecord, RunStore
from wnll_art.evaluation.report import (
    attach_flags,
    flag_section,
    headline,
    markdown_table,
    pct,
    write_plots,
    write_text,
)
from wnll_art.evaluation.setup import load_batches, open_store, rows, run_settings, victim_flags, victims_of
from wnll_art.evaluation.victims import Victim

__all__ = ["Convergence", "ProtocolRecords", "defence_table"]

OnCell = Callable[[CellRecord], None] | None


@dataclass
class ProtocolRecords:
    """The records of one training-data variant: paper protocol, adaptive attacks, adaptive minima."""

    paper: list[CellRecord]
    adaptive_attacks: list[CellRecord]
    adaptive: list[CellRecord]


def defence_table(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    options: PlanOptions | None = None,
    adaptive_attacks: Sequence[str] | None = None,
    on_cell: OnCell = None,
    convergence: Convergence | None = None,
    victims: Sequence[tuple[str, str]] | None = None,
    trained: bool | Sequence[str] = False,
) -> dict[str, ProtocolRecords]:
    """The paper's Table 2 in the ``paper`` protocol and the ``adaptive`` protocol, side by side.

    For each training-data row (``"original"``: ``cfg.models`` on the public ResNet-56, the WNLL one a post-hoc
    head of template ``cfg.template_size``; or, with ``trained``, our shipped softmax / WNLL models per training
    data), every ``(model, defence)`` victim is attacked at each ``cfg.eps`` by the ``paper`` plan, then by the
    ``adaptive`` plan (:mod:`wnll_art.evaluation.protocols`); the adaptive number of a family is the per-image
    minimum over clean accuracy, its paper attack and every adaptive attack.

    Writes ``out_dir/<training data>/`` (a :class:`RunStore`: ``run.json``, ``cells/*.json`` for protocols
    ``paper`` and ``adaptive``, ``accuracy_vs_eps__*.png``) and ``out_dir/defence_table.md``. Resumable and
    shardable over ``torchrun`` processes like ``wnll-art evaluate``.

    Args:
        cfg: Images, eps, models, defences, WNLL and TVM settings.
        out_dir: Results directory.
        data_root: CIFAR-10 root.
        weights: The zoo ResNet-56 file (``None``: the torch hub cache).
        options: Sizes of the adaptive attacks (default: :class:`PlanOptions` with ``cfg``'s EOT samples).
        adaptive_attacks: Adaptive attack names (default: the protocol's default plan).
        on_cell: Called with each finished record.
        convergence: The convergence checks run per victim on its strongest attack (default:
            :class:`Convergence`'s; ``Convergence(steps=())`` skips them). Their curves go into every adaptive
            minimum's ``extra["convergence"]`` and their flags into its flags.
        victims: The ``(model, defence)`` cells to attack (default: all); the softmax model stays the transfer
            source either way.
        trained: Rows from our shipped models (:func:`~wnll_art.zoo_trained.training_rows`): ``True`` for every
            row, or the training-data names of some.

    Returns:
        ``{training data: ProtocolRecords}`` (on every rank).
    """
    options = options or PlanOptions(eot_samples=cfg.tvm.eot_samples)
    paper, adaptive = plan("paper", options), plan("adaptive", options, adaptive_attacks)[1:]
    conv = convergence or Convergence()
    wanted = _check_victims(cfg, victims)
    table = rows(cfg, trained)
    dist = Dist.from_env(cfg.device)
    batches = load_batches(cfg, data_root, dist)
    results = {}
    for row in table:
        cells, sources = victims_of(row, cfg, sources={"softmax"}, data_root=data_root, weights=weights)
        chosen = [v for v in cells if (v.model, v.defence) in wanted]
        settings = run_settings(cfg, dist, protocol="defence_table", training_data=row.name, **row.origin,
                                victims=[f"{m}+{d}" for m, d in sorted(wanted)], options=options.to_dict(),
                                paper=[s.settings() for s in paper], adaptive=[s.settings() for s in adaptive],
                                convergence=conv.to_dict())  # fmt: skip
        store = open_store(Path(out_dir) / row.name, settings, dist)
        common: dict[str, Any] = dict(sources=sources, eps_values=cfg.eps, batches=batches, store=store, seed=cfg.seed,
                                      run_settings=settings, on_cell=on_cell, tvm_draws=cfg.tvm_draws)  # fmt: skip
        paper_records = run_cells(victims=chosen, specs=paper, protocol="paper", **common)
        attack_records = run_cells(victims=chosen, specs=adaptive, protocol="adaptive", **common)
        sub_settings = {**settings, "run": {**settings["run"], "n": min(conv.images, cfg.n)}}
        checks = conv.run(chosen, sources, adaptive, attack_records, batches, open_store(
            Path(out_dir) / row.name / "convergence", sub_settings, dist), eps=min(cfg.eps), seed=cfg.seed,
            run_settings=sub_settings, tvm_draws=cfg.tvm_draws)  # fmt: skip
        results[row.name] = _finish(
            store, chosen, batches, options, paper_records, attack_records, row.name, checks
        )
    if dist.rank == 0:
        _write_defence_markdown(results, Path(out_dir) / "defence_table.md", cfg, options)
    dist.barrier()
    return results


def _check_victims(cfg: EvalConfig, victims: Sequence[tuple[str, str]] | None) -> set[tuple[str, str]]:
    """The chosen ``(model, defence)`` cells, checked against ``cfg.models`` x ``cfg.defences``."""
    grid: set[tuple[str, str]] = {(m, d) for m in cfg.models for d in cfg.defences}
    chosen = grid if victims is None else set(victims)
    if not chosen or not chosen <= grid:
        raise ValueError(f"victims must be a non-empty subset of {sorted(grid)}, got {sorted(chosen)}")
    return chosen


Checks = dict[tuple[str, str], tuple[dict[str, Any], list[str]]]


def _finish(
    store: RunStore, victims: Sequence[Victim], batches: Batches, options: PlanOptions,
    paper: list[CellRecord], attacks: list[CellRecord], name: str, checks: Checks,
) -> ProtocolRecords:  # fmt: skip
    """Flags, adaptive minima and plots (rank 0 writes; every rank returns the same records)."""
    rank0 = batches.dist.rank == 0
    vflags = victim_flags(victims, batches, eot_samples=options.eot_samples)
    flagged = attach_flags(store if rank0 else None, [*paper, *attacks], vflags)
    paper, attacks = flagged[: len(paper)], flagged[len(paper) :]
    minima = [
        replace(r, settings={**r.settings, "training_data": name},
                flags=sorted({*r.flags, *checks.get((r.model, r.defence), ({}, []))[1]}),
                extra={**r.extra, "convergence": checks.get((r.model, r.defence), ({}, []))[0] or None})
        for r in adaptive_minimum(paper, attacks)
    ]  # fmt: skip
    if rank0:
        for r in minima:
            store.put(r)
        write_plots([*paper, *minima], store.root)
    batches.dist.barrier()
    return ProtocolRecords(paper, attacks, minima)


def _family_rows(name: str, recs: ProtocolRecords, eps_values: Sequence[float]) -> list[list[str]]:
    """Rows ``training data | model | defence | family | clean | paper / adaptive per eps``."""
    clean = {(r.model, r.defence): r for r in recs.paper if r.attack == "clean"}
    paper = {(r.model, r.defence, r.attack, r.eps): r for r in recs.paper}
    ada = {(r.model, r.defence, r.attack, r.eps): r for r in recs.adaptive}
    rows = []
    for model, defence in sorted(clean):
        for family in FAMILIES:
            cells = []
            for e in eps_values:
                p, a = paper.get((model, defence, family, e)), ada.get((model, defence, family, e))
                cells.append(f"{pct(p.accuracy) if p else '-'} / {pct(a.accuracy) if a else '-'}")
            rows.append([name, model, defence, family, pct(clean[model, defence].accuracy), *cells])
    return rows


def _attack_rows(name: str, recs: ProtocolRecords, eps_values: Sequence[float]) -> list[list[str]]:
    """Rows ``training data | model | defence | adaptive attack | accuracy per eps``."""
    cells: dict[tuple[str, str, str], dict[float, CellRecord]] = {}
    for r in recs.adaptive_attacks:
        cells.setdefault((r.model, r.defence, r.attack), {})[r.eps] = r
    return [[name, *row, *(pct(by_eps[e].accuracy) if e in by_eps else "-" for e in eps_values)]
            for row, by_eps in sorted(cells.items())]  # fmt: skip


def _origin_text(settings: Mapping[str, Any]) -> str:
    """What a training-data row's models are, from its run settings."""
    row = settings.get("zoo")
    if row:
        return f"softmax `{row['softmax']}`, WNLL `{row['wnll']}` (shipped models, `wnll-art info`)"
    if settings.get("weights") == "zoo:resnet56":
        return "the public ResNet-56 (softmax) with a post-hoc WNLL head"
    return str(settings.get("weights"))


def _curve(points: Mapping[str, float]) -> str:
    """``"10: 5.0, 20: 0.0"`` from ``{"10": 0.05, "20": 0.0}`` (keys in numeric order)."""
    return ", ".join(f"{k}: {pct(a)}" for k, a in sorted(points.items(), key=lambda kv: int(kv[0])))


def _convergence_lines(results: Mapping[str, ProtocolRecords]) -> list[str]:
    """The ``## Convergence checks`` section: each victim's step / EOT ladders and unbounded check."""
    rows = []
    for name, recs in results.items():
        seen = {(r.model, r.defence): r.extra.get("convergence") for r in recs.adaptive if r.attack == ALL}
        for (model, defence), c in sorted(seen.items()):
            if c:
                single = c.get("single", {})
                ladders = [_curve(c[k]) + (f" (single runs: {_curve(single[k])})" if single.get(k) else "")
                           for k in ("steps", "eot")]  # fmt: skip
                rows.append([name, f"{model} + {defence}", c["attack"], f"{c['eps']:g}", str(c["n"]), ladders[0],
                             ladders[1] if c["eot"] else "-", pct(c["unbounded"]["accuracy"])])  # fmt: skip
    if not rows:
        return []
    return ["", "## Convergence checks (Carlini et al. 2019; accuracy %, sub-sample)", "",
            "Best so far: at each budget an image counts as robust only if the attack failed at every smaller budget "
            "too; `not_converged` fires when the last doubling still lowers it by more than 1 point. Single runs "
            "of a randomised defence scatter by a few images.", "",
            *markdown_table(["training data", "victim", "strongest attack", "eps", "n", "steps", "EOT samples",
                             "unbounded (eps 0.3)"], rows)]  # fmt: skip


def _write_defence_markdown(
    results: Mapping[str, ProtocolRecords], path: Path, cfg: EvalConfig, options: PlanOptions
) -> str:
    eps_values = sorted(cfg.eps)
    eps_head = [f"eps={e:g}" for e in eps_values]
    used = sorted({r.attack for recs in results.values() for r in recs.adaptive_attacks})
    worst = [r for recs in results.values() for r in recs.adaptive if r.attack == ALL]
    lines = ["# Robust accuracy (%), paper protocol / adaptive protocol (the paper's Table 2)", "",
             *headline(worst, what=f"every paper and adaptive attack (BPDA + EOT({options.eot_samples}) through TVM, "
                                   f"{options.steps} steps)"),
             "## Detail", "", "Each cell: **paper / adaptive**. Paper protocol: the paper's stated settings (IFGSM 10 steps of size "
             "eps, C&W c=10 kappa=0 with 10 steps, straight-through surrogate gradient on WNLL, TVM "
             "unseen by the attacker). Adaptive: per image, the minimum over clean accuracy, the family's paper "
             f"attack and every adaptive attack run ({', '.join(used) or 'none'}; EOT({options.eot_samples}) and BPDA "
             f"through TVM, {options.steps} steps), so adaptive <= paper by construction.", "",
             *markdown_table(["training data", "model", "defence", "attack", "clean", *eps_head],
                             [row for name, recs in results.items() for row in _family_rows(name, recs, eps_values)]),
             "", "## Adaptive attacks (components of the adaptive numbers)", "",
             *markdown_table(["training data", "model", "defence", "attack", *eps_head],
                             [row for name, recs in results.items() for row in _attack_rows(name, recs, eps_values)])]  # fmt: skip
    flags = sorted({(name, r.protocol, r.model, r.defence, r.attack, f) for name, recs in results.items()
                    for r in [*recs.paper, *recs.adaptive_attacks] for f in r.flags})  # fmt: skip
    lines += flag_section("/".join(fl[:5]) + f": {fl[5]}" for fl in flags)
    lines += _convergence_lines(results)
    origin = {name: recs.paper[0].settings for name, recs in results.items() if recs.paper}
    lines += ["", "## Training data", "", *(f"- {name}: {_origin_text(o)}" for name, o in origin.items()),
              f"- images per cell: {cfg.n} (test indices {cfg.start}..{cfg.start + cfg.n - 1}); WNLL batch "
              f"{cfg.wnll_batch_size}, template {cfg.template_size} (post-hoc heads; shipped models carry theirs), coupling {cfg.coupling}, kernel {cfg.kernel}, "
              f"seed {cfg.seed}; TVM {cfg.tvm}", "- records: <training data>/cells/*.json; settings: <training data>/run.json", ""]  # fmt: skip
    return write_text(path, lines)
