"""WNLL + TVM against ART's input-transformation defences, on the same models, attacks and images.

Defences: any registered in :data:`~wnll_art.evaluation.victims.PURIFIERS`: none, our TVM
(:class:`~wnll_art.tvm.module.TVMPurifier`), and ART's ``TotalVarMin`` (C. Guo et al., ICLR 2018),
``JpegCompression`` (G. K. Dziugaite et al. 2016; Guo et al. 2018), ``SpatialSmoothing`` and ``FeatureSqueezing``
(W. Xu, D. Evans, Y. Qi, NDSS 2018), each in front of every model of the run.

Gradients: BPDA through every preprocessor (ART's own ``estimate_gradient``, see
:mod:`wnll_art.adapters.art_preprocessors`); randomised defences are attacked with EOT over their draws.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wnll_art.evaluation.checks import eps_monotonicity_flags
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import Dist, run_cells
from wnll_art.evaluation.protocols import PlanOptions, plan, registry_flags
from wnll_art.evaluation.records import CellRecord, per_image_minimum
from wnll_art.evaluation.report import attach_flags, flag_section, markdown_table, merge_flags, pct, write_text
from wnll_art.evaluation.setup import open_run, rows, victim_flags, victims_of

__all__ = ["DEFAULT_ATTACKS", "compare_defences"]

DEFAULT_ATTACKS = ("fgsm_exact_eot", "ifgsm_exact_eot", "transfer_ifgsm")


def compare_defences(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    options: PlanOptions | None = None,
    defence_options: Mapping[str, Mapping[str, Any]] | None = None,
    on_cell: Callable[[CellRecord], None] | None = None,
) -> list[CellRecord]:
    """Robust accuracy of every model behind each defence of ``cfg.defences``, under the same ``adaptive``
    attacks (white box with BPDA through every preprocessor, EOT over the randomised ones, transfer from the
    undefended softmax model) and images; a ``worst_case`` record per (model, defence, eps) takes the per-image
    minimum over clean and every attack. ART's ``TotalVarMin`` costs ~5-40 ms per image per call (SciPy
    L-BFGS-B per channel), times the EOT draws and attack steps: leave ``"art_tvm"`` out for large runs.

    Writes ``out_dir/`` (a :class:`RunStore`: ``cells/*.json``, protocol ``"adaptive"``) and
    ``out_dir/compare_defences.md``. Resumable, shardable.

    Args:
        cfg: Images, eps, models, defences (names in ``PURIFIERS``), WNLL and TVM settings.
        attacks: Names of ``adaptive`` protocol attacks.
        options: Sizes of the attacks (default: 10 steps, ``cfg``'s EOT samples).
        defence_options: Per-defence options (e.g. ``{"jpeg": {"quality": 50}}``).

    Returns:
        All records, the ``worst_case`` ones included.
    """
    options = options or PlanOptions(eot_samples=cfg.tvm.eot_samples, steps=10)
    specs = plan("adaptive", options, list(attacks))
    (row,) = rows(cfg)
    dist = Dist.from_env(cfg.device)
    settings, store, batches = open_run(cfg, out_dir, data_root, dist=dist, protocol="compare_defences",
                                        options=options.to_dict(), attacks=[s.settings() for s in specs],
                                        defence_options={k: dict(v) for k, v in (defence_options or {}).items()})  # fmt: skip
    victims, sources = victims_of(row, cfg, sources={s.source for s in specs if s.source != "self"},
                                  options=defence_options, data_root=data_root, weights=weights)  # fmt: skip
    records = run_cells(victims=victims, sources=sources, specs=specs, eps_values=cfg.eps, batches=batches,
                        store=store, protocol="adaptive", seed=cfg.seed, run_settings=settings, on_cell=on_cell,
                        tvm_draws=cfg.tvm_draws)  # fmt: skip
    cell = merge_flags(eps_monotonicity_flags(records), registry_flags(records))
    rank0 = dist.rank == 0
    records = attach_flags(store if rank0 else None, records, cell_flags=cell,
                           victim_flags=victim_flags(victims, batches, eot_samples=options.eot_samples))  # fmt: skip
    # robust = correct clean and under every attack, so a worst case never exceeds clean accuracy
    worst = per_image_minimum(records, attack="worst_case", protocol="adaptive", include_clean=True)
    if rank0:
        for r in worst:
            store.put(r)
        _write_markdown([*records, *worst], Path(out_dir) / "compare_defences.md", cfg, options)
    dist.barrier()
    return [*records, *worst]


def _write_markdown(
    records: Sequence[CellRecord],
    path: Path,
    cfg: EvalConfig,
    options: PlanOptions,
) -> str:
    eps_values = sorted(cfg.eps)
    index = {(r.model, r.defence, r.attack, r.eps): r for r in records}
    eps_head = [f"eps={e:g}" for e in eps_values]

    def accuracies(model: str, defence: str, attack: str) -> list[str]:
        return [pct(index[model, defence, attack, e].accuracy) if (model, defence, attack, e) in index else "-"
                for e in eps_values]  # fmt: skip

    gradient = {(r.model, r.defence): (r.settings["victim"].get("purifier") or {}).get("gradient", "-")
                for r in records if r.attack == "clean"}  # fmt: skip
    worst = [[m, d, g, pct(index[m, d, "clean", 0.0].accuracy), *accuracies(m, d, "worst_case")]
             for (m, d), g in gradient.items()]  # fmt: skip
    each = [[m, d, a, *accuracies(m, d, a)] for m, d, a in
            sorted({(r.model, r.defence, r.attack) for r in records if r.attack not in ("clean", "worst_case")})]  # fmt: skip
    flags = sorted(
        {(r.model, r.defence, r.attack, f) for r in records if r.attack != "worst_case" for f in r.flags}
    )
    lines = ["# Defences compared on the same model, attacks and images (robust accuracy, %)", "",
             "Worst case = per image, the minimum over the attacks below (all adaptive: BPDA through every "
             "preprocessor, EOT over randomised ones, transfer from the undefended softmax model).", "",
             *markdown_table(["model", "defence", "attacker's gradient through the defence", "clean", *eps_head], worst),
             "", "## Each attack", "", *markdown_table(["model", "defence", "attack", *eps_head], each),
             *flag_section(f"{m}/{d}/{a}: {f}" for m, d, a, f in flags),
             "", "## Settings", "", "- each defence's settings: cells/*.json (settings.victim.purifier)",
             f"- our TVM: {cfg.tvm}; EOT draws: {options.eot_samples}; iterative steps: {options.steps}",
             f"- images per cell: {cfg.n}; WNLL batch {cfg.wnll_batch_size}, template {cfg.template_size}, seed {cfg.seed}",
             "- ART TotalVarMin (art_tvm) runs SciPy L-BFGS-B per image and channel (~5-40 ms per image per call, "
             "times EOT draws and steps): it dominates the run time; keep n small or drop it.", ""]  # fmt: skip
    return write_text(path, lines)
