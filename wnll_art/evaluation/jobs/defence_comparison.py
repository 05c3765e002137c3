"""WNLL + TVM against ART's input-transformation defences, on the same model, attacks and images.

Defences: none, our TVM (:class:`~wnll_art.tvm.module.TVMPurifier`), and ART's ``TotalVarMin`` (C. Guo et al.,
ICLR 2018), ``JpegCompression`` (G. K. Dziugaite et al. 2016; Guo et al. 2018), ``SpatialSmoothing`` and
``FeatureSqueezing`` (W. Xu, D. Evans, Y. Qi, NDSS 2018), each in front of the softmax and the WNLL model.

Gradients: BPDA through every preprocessor (ART's own ``estimate_gradient``, see
:mod:`wnll_art.adapters.art_preprocessors`); randomised defences (both TVMs) are attacked with EOT over their draws.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from wnll_art.adapters.art_preprocessors import DEFAULT_OPTIONS, GRADIENTS, art_defence
from wnll_art.defence import Defence
from wnll_art.evaluation.checks import eps_monotonicity_flags, stronger_flags
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import Dist, run_cells
from wnll_art.evaluation.protocols import CLEAN, adaptive_specs, select_specs, specs_for_victim
from wnll_art.evaluation.records import CellRecord, per_image_minimum
from wnll_art.evaluation.report import (
    attach_flags,
    flag_section,
    markdown_table,
    merge_flags,
    pct,
    write_text,
)
from wnll_art.evaluation.setup import check_tvm, load_victims, open_run, victim_flags
from wnll_art.evaluation.victims import Victim

__all__ = ["DEFAULT_ATTACKS", "DEFENCES", "compare_defences"]

DEFENCES = ("none", "tvm", "art_tvm", "jpeg", "spatial_smoothing", "feature_squeezing")
DEFAULT_ATTACKS = ("fgsm_exact_eot", "ifgsm_exact_eot", "transfer_ifgsm")


def _victims(
    cfg: EvalConfig, defences: Sequence[str], base: Sequence[Victim], options: Mapping[str, Mapping[str, Any]]
) -> list[Victim]:
    out = []
    for v in base:
        for d in defences:
            if d not in ("none", "tvm"):
                module = Defence(v.classifier, purifier=art_defence(d, seed=cfg.seed, **options.get(d, {})))
            else:
                module = Defence(v.classifier, tvm=cfg.tvm if d == "tvm" else None, seed=cfg.seed)
            module.training = False
            out.append(Victim(v.model, d, module))
    return out


def compare_defences(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    defences: Sequence[str] = DEFENCES,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    steps: int = 10,
    defence_options: Mapping[str, Mapping[str, Any]] | None = None,
    on_cell: Callable[[CellRecord], None] | None = None,
) -> list[CellRecord]:
    """Robust accuracy of softmax and WNLL behind each defence, under the same adaptive attacks and images.

    Attacks are :func:`~wnll_art.evaluation.protocols.adaptive_specs` entries (white box with BPDA through
    every preprocessor, EOT over the randomised ones, plus transfer from the undefended softmax model); a
    ``worst_case`` record per (model, defence, eps) takes the per-image minimum over them. ART's
    ``TotalVarMin`` costs ~5-40 ms per image per call (SciPy L-BFGS-B per channel), times the EOT draws and
    attack steps: leave ``"art_tvm"`` out of ``defences`` for large runs.

    Writes ``out_dir/`` (a :class:`RunStore`: ``cells/*.json``, protocol ``"compare"``) and
    ``out_dir/compare_defences.md``. ``cfg.defences`` is unused (see ``defences``). Resumable, shardable.

    Args:
        cfg: Images, eps, WNLL, TVM (ours), EOT and C&W settings.
        defences: Subset of :data:`DEFENCES`.
        attacks: Names among the adaptive attacks (``fgsm_exact_eot``, ``ifgsm_exact_eot``, ``pgd_exact_eot``,
            ``cw_l2_exact_eot``, ``transfer_ifgsm``, ``autoattack``; the surrogate one applies to WNLL only).
        steps: Iterations of the iterative attacks.
        defence_options: Per-defence overrides of :data:`DEFAULT_OPTIONS` (e.g. ``{"jpeg": {"quality": 50}}``).

    Returns:
        All records, the ``worst_case`` ones included.
    """
    unknown = set(defences) - set(DEFENCES)
    if unknown or not defences:
        raise ValueError(f"defences must be a non-empty subset of {list(DEFENCES)}, got {list(defences)}")
    check_tvm(defences, needing=("tvm", "art_tvm"))
    adaptive = adaptive_specs(eot_samples=cfg.tvm.eot_samples, steps=steps, cw_steps=cfg.cw_steps)
    chosen = select_specs(adaptive, attacks, what="attacks")
    options = {**{d: {} for d in DEFENCES}, **(defence_options or {})}
    dist = Dist.from_env(cfg.device)
    settings, store, batches = open_run(
        cfg, out_dir, data_root, dist=dist, protocol="compare_defences",
        run={**cfg.to_dict(), "defences": list(defences)}, attacks=[s.settings() for s in chosen], steps=steps,
        defence_options={d: {**DEFAULT_OPTIONS.get(d, {}), **options[d]} for d in defences},
    )  # fmt: skip
    base, softmax = load_victims(replace(cfg, defences=("none",)), data_root, weights)
    victims = _victims(cfg, defences, base, options)
    records = [r for v in victims
               for r in run_cells(victims=[v], softmax=softmax, specs=[CLEAN, *specs_for_victim(v, chosen)],
                                  eps_values=cfg.eps, batches=batches, store=store, protocol="compare", seed=cfg.seed,
                                  run_settings=settings, on_cell=on_cell, tvm_draws=cfg.tvm_draws)]  # fmt: skip
    cell = merge_flags(eps_monotonicity_flags(records), stronger_flags(
        records, reference="ifgsm_exact_eot", challenger="transfer_ifgsm", flag="black_box_stronger",
        why="transfer beats white box"))  # fmt: skip
    rank0 = dist.rank == 0
    records = attach_flags(store if rank0 else None, records, cell_flags=cell,
                           victim_flags=victim_flags(victims, batches, eot_samples=cfg.tvm.eot_samples))  # fmt: skip
    # robust = correct clean and under every attack, so a worst case never exceeds clean accuracy
    worst = per_image_minimum(records, attack="worst_case", protocol="compare", include_clean=True)
    if rank0:
        for r in worst:
            store.put(r)
        _write_markdown([*records, *worst], Path(out_dir) / "compare_defences.md", cfg, defences, settings)
    dist.barrier()
    return [*records, *worst]


def _write_markdown(
    records: Sequence[CellRecord],
    path: Path,
    cfg: EvalConfig,
    defences: Sequence[str],
    settings: dict[str, Any],
) -> str:
    eps_values = sorted(cfg.eps)
    index = {(r.model, r.defence, r.attack, r.eps): r for r in records}
    eps_head = [f"eps={e:g}" for e in eps_values]

    def accuracies(model: str, defence: str, attack: str) -> list[str]:
        return [pct(index[model, defence, attack, e].accuracy) if (model, defence, attack, e) in index else "-"
                for e in eps_values]  # fmt: skip

    worst = [[m, d, GRADIENTS[d], pct(index[m, d, "clean", 0.0].accuracy), *accuracies(m, d, "worst_case")]
             for m in ("softmax", "wnll") for d in defences if (m, d, "clean", 0.0) in index]  # fmt: skip
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
             "", "## Settings", "", f"- defence options: {settings['defence_options']}",
             f"- our TVM: {cfg.tvm}; EOT draws: {cfg.tvm.eot_samples}; iterative steps: {settings['steps']}",
             f"- images per cell: {cfg.n}; WNLL batch {cfg.wnll_batch_size}, template {cfg.template_size}, seed {cfg.seed}",
             "- ART TotalVarMin (art_tvm) runs SciPy L-BFGS-B per image and channel (~5-40 ms per image per call, "
             "times EOT draws and steps): it dominates the run time; keep n small or drop it.", ""]  # fmt: skip
    return write_text(path, lines)
