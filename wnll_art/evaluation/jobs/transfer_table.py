"""The paper's Table 1: adversarials crafted on softmax or WNLL, classified by every victim (transfer).

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018), Table 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from wnll_art._device import Dist
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import run_cells
from wnll_art.evaluation.protocols import CLEAN, PlanOptions, plan
from wnll_art.evaluation.records import CellRecord
from wnll_art.evaluation.report import markdown_table, pct, write_text
from wnll_art.evaluation.setup import load_batches, open_store, rows, run_settings, victims_of

__all__ = ["transfer_table"]


def transfer_table(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    gradient: str = "surrogate",
    attacks: Sequence[str] = ("fgsm", "ifgsm", "cw_l2"),
    on_cell: Callable[[CellRecord], None] | None = None,
    trained: bool = False,
) -> list[CellRecord]:
    """The paper's Table 1: adversarials crafted on softmax or WNLL, classified by every victim.

    Attacks are the ``paper`` protocol's, crafted white box on each undefended model of the row (a transfer
    spec per source, named ``"<attack>_from_<source>"``; ``gradient`` is the WNLL gradient used when the source
    is WNLL: ``"surrogate"``, the paper's straight-through estimator, or ``"exact"``). Targets are every model
    with each defence of ``cfg.defences`` (TVM, if any, unseen by the attacker). Records: protocol
    ``"transfer"``, model/defence = the target; source = target cells are the white-box references. Writes
    ``out_dir/`` (a :class:`RunStore`) and ``out_dir/transfer_table.md``. Resumable and shardable.

    With ``trained``, the pairs are our shipped models, one per training-data row (original, TVM, original + TVM
    images), each in ``out_dir/<training data>/``, and ``out_dir/transfer_table.md`` holds one table per row;
    otherwise the pair is the public ResNet-56 and its post-hoc WNLL head.

    Returns:
        All records (clean ones included).
    """
    if "none" not in cfg.defences:
        raise ValueError(
            "defences must include 'none' (the adversarials are crafted on the undefended models)"
        )
    if gradient not in ("exact", "surrogate"):
        raise ValueError(f"gradient must be 'exact' or 'surrogate', got {gradient!r}")
    crafting = plan("paper", PlanOptions(eot_samples=cfg.tvm.eot_samples), list(attacks))[1:]
    dist = Dist.from_env(cfg.device)
    batches = load_batches(cfg, data_root, dist)
    records: list[CellRecord] = []
    sections: list[str] = []
    for row in rows(cfg, trained):
        specs = [replace(s, name=f"{s.name}_from_{src}", source=src, gradient=gradient)  # type: ignore[arg-type]
                 for src in row.models for s in crafting]  # fmt: skip
        root = Path(out_dir) / row.name if trained else Path(out_dir)
        settings = run_settings(cfg, dist, protocol="transfer_table", gradient=gradient,
                                attacks=[s.settings() for s in specs], **({"training_data": row.name, **row.origin} if trained else {}))  # fmt: skip
        store = open_store(root, settings, dist)
        victims, sources = victims_of(row, cfg, sources=row.models, data_root=data_root, weights=weights)
        mine = run_cells(victims=victims, sources=sources, specs=[CLEAN, *specs], eps_values=cfg.eps, batches=batches,
                         store=store, protocol="transfer", seed=cfg.seed, run_settings=settings, on_cell=on_cell,
                         tvm_draws=cfg.tvm_draws)  # fmt: skip
        records += mine
        if dist.rank == 0:
            pair = row.origin.get("zoo")
            what = (
                f"{row.name} (softmax `{pair['softmax']}`, WNLL `{pair['wnll']}`)" if trained and pair else ""
            )
            sections.append(_write_transfer_markdown(mine, root / "transfer_table.md", cfg, gradient, what))
    if dist.rank == 0 and trained:
        write_text(Path(out_dir) / "transfer_table.md", sections)
    dist.barrier()
    return records


def _write_transfer_markdown(
    records: Sequence[CellRecord], path: Path, cfg: EvalConfig, gradient: str, row: str = ""
) -> str:
    targets = sorted({(r.model, r.defence) for r in records}, key=lambda md: (md[1] != "none", md))
    labels = [m if d == "none" else f"{m} + {d}" for m, d in targets]
    index = {(r.model, r.defence, r.attack, r.eps): r for r in records}
    rows = [["clean", "-", "0", *(pct(index[m, d, "clean", 0.0].accuracy) for m, d in targets)]]
    for attack, eps in sorted({(r.attack, r.eps) for r in records if r.attack != "clean"}):
        base, _, source = attack.partition("_from_")
        rows.append([base, source, f"{eps:g}", *(pct(index[m, d, attack, eps].accuracy)
                                                 if (m, d, attack, eps) in index else "-" for m, d in targets)])  # fmt: skip
    lines = ["# Transfer of adversarial examples between activations (%; the paper's Table 1)"
             + (f": trained on {row}" if row else ""), "",
             f"Rows: attack crafted white box on the source model (paper-protocol attacks; WNLL gradient: {gradient}). "
             "Columns: accuracy of each classifier on those images (source = column: white-box reference).", "",
             *markdown_table(["attack", "crafted on", "eps", *labels], rows),
             "", f"Images per cell: {cfg.n}; WNLL batch {cfg.wnll_batch_size}, template {cfg.template_size}, "
             f"seed {cfg.seed}. Records: cells/*.json; settings: run.json.", ""]  # fmt: skip
    return write_text(path, lines)
