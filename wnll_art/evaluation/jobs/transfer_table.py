"""The paper's Table 1: adversarials crafted on softmax or WNLL, classified by every victim (transfer).

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018), Table 1.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import (
    AttackSpec,
    Batches,
    Dist,
    adversarial,
    cell_key,
    derive_seed,
    draw_extra,
    merge_threat,
    predict_correct,
    run_cells,
    threat_model,
)
from wnll_art.evaluation.protocols import CLEAN, paper_specs, select_specs
from wnll_art.evaluation.records import CellRecord, RunStore
from wnll_art.evaluation.report import markdown_table, pct, write_text
from wnll_art.evaluation.setup import (
    Loader,
    check_tvm,
    load_batches,
    load_victims,
    open_store,
    run_settings,
    zoo_rows,
)
from wnll_art.evaluation.victims import Victim

__all__ = ["transfer_table"]

OnCell = Callable[[CellRecord], None] | None


def transfer_table(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    gradient: str = "surrogate",
    attacks: Sequence[str] = ("fgsm", "ifgsm", "cw_l2"),
    paper_cw_steps: int = 10,
    on_cell: OnCell = None,
    trained: bool = False,
) -> list[CellRecord]:
    """The paper's Table 1: adversarials crafted on softmax or WNLL, classified by every victim.

    Attacks are the paper protocol's (:func:`~wnll_art.evaluation.protocols.paper_specs`), crafted white box
    on the undefended source model; ``gradient`` is the WNLL gradient used when the source is WNLL
    (``"surrogate"``: the paper's straight-through estimator; ``"exact"``: through the WNLL solve). Targets
    are softmax and WNLL with each defence of ``cfg.defences`` (TVM, if any, is unseen by the attacker).
    Records: protocol ``"transfer"``, attack ``"<attack>_from_<source>"``, model/defence = the target; the
    source = target cells are the white-box references. Writes ``out_dir/`` (a :class:`RunStore`) and
    ``out_dir/transfer_table.md``. Resumable and shardable.

    With ``trained``, the pairs are our shipped models, one per training-data row
    (:func:`~wnll_art.zoo_trained.training_rows`: original, TVM, original + TVM images), each in
    ``out_dir/<training data>/``, and ``out_dir/transfer_table.md`` holds one table per row; otherwise the pair
    is the public ResNet-56 and its post-hoc WNLL head.

    Returns:
        All records (clean ones included).
    """
    check_tvm(cfg.defences)
    if "none" not in cfg.defences:
        raise ValueError(
            "defences must include 'none' (the adversarials are crafted on the undefended models)"
        )
    if gradient not in ("exact", "surrogate"):
        raise ValueError(f"gradient must be 'exact' or 'surrogate', got {gradient!r}")
    paper = [s for s in paper_specs(cw_steps=paper_cw_steps) if s.attack is not None]
    crafting = [replace(s, gradient=gradient) for s in select_specs(paper, attacks, what="attacks")]  # type: ignore[arg-type]
    dist = Dist.from_env(cfg.device)
    rows: list[tuple[str | None, dict[str, Any], Loader]] = [
        (None, {}, functools.partial(load_victims, cfg, data_root, weights))]  # fmt: skip
    if trained:
        rows = [
            (data, {"training_data": data, **origin}, loader)
            for data, origin, loader in zoo_rows(cfg, weights)
        ]
    batches = load_batches(cfg, data_root, dist)
    records: list[CellRecord] = []
    sections: list[str] = []
    for data, origin, loader in rows:
        root = Path(out_dir) if data is None else Path(out_dir) / data
        settings = run_settings(cfg, dist, protocol="transfer_table", gradient=gradient,
                                attacks=[s.settings() for s in crafting], **origin)  # fmt: skip
        store = open_store(root, settings, dist)
        victims, softmax = loader()
        mine = run_cells(victims=victims, softmax=softmax, specs=[CLEAN], eps_values=cfg.eps, batches=batches,
                         store=store, protocol="transfer", seed=cfg.seed, run_settings=settings, on_cell=on_cell,
                         tvm_draws=cfg.tvm_draws)  # fmt: skip
        for source in (v for v in victims if v.defence == "none"):
            for spec in crafting:
                raw_cache: dict[Any, torch.Tensor] = {}  # C&W runs once per batch, projected onto each eps
                for eps in cfg.eps:
                    cells = _transfer_cells(source, spec, eps, victims, softmax, batches, store, cfg.seed, settings,
                                            raw_cache, cfg.tvm_draws)  # fmt: skip
                    for r in cells:
                        if on_cell is not None:
                            on_cell(r)
                    mine += cells
        records += mine
        if dist.rank == 0:
            what = (
                ""
                if data is None
                else f"{data} (softmax `{origin['zoo']['softmax']}`, WNLL `{origin['zoo']['wnll']}`)"
            )
            sections.append(_write_transfer_markdown(mine, root / "transfer_table.md", cfg, gradient, what))
    if dist.rank == 0 and trained:
        write_text(Path(out_dir) / "transfer_table.md", sections)
    dist.barrier()
    return records


def _transfer_cells(
    source: Victim, spec: AttackSpec, eps: float, targets: Sequence[Victim], softmax: Victim, batches: Batches,
    store: RunStore, seed: int, settings: dict[str, Any], raw_cache: dict[Any, torch.Tensor], draws: int,
) -> list[CellRecord]:  # fmt: skip
    name = f"{spec.name}_from_{source.model}"
    keys = [cell_key("transfer", t.model, t.defence, name, eps) for t in targets]
    stored = [store.get(k) for k in keys]
    if all(r is not None for r in stored):
        return [r for r in stored if r is not None]
    start = time.perf_counter()
    mine: dict[int, list[tuple[list[int], list[float], dict[str, float]]]] = {}
    for b in batches.mine():
        x, y = batches.get(b)
        attack_seed = derive_seed(seed, "transfer", source.model, spec.name, b)
        x_adv = adversarial(spec, source, softmax, x, y, eps=eps, seed=attack_seed, raw_cache=raw_cache)
        measured = threat_model(x_adv, x, eps=eps, what=f"{name} at eps={eps:g}, batch {b}")
        mine[b] = [(*predict_correct(t, x_adv, y, draws=draws, seed=derive_seed(seed, "predict", b, name, eps)),
                    measured) for t in targets]  # fmt: skip
    merged = {b: c for part in batches.dist.gather(mine) for b, c in part.items()}
    elapsed = time.perf_counter() - start
    out = []
    for i, t in enumerate(targets):
        correct = [c for b in sorted(merged) for c in merged[b][i][0]]
        mean = [m for b in sorted(merged) for m in merged[b][i][1]]
        threat = merge_threat([merged[b][i][2] for b in sorted(merged)])
        rec = CellRecord(
            model=t.model, defence=t.defence, attack=name, eps=eps, protocol="transfer",
            accuracy=sum(correct) / len(correct), n=len(correct), per_image_correct=correct,
            image_indices=batches.indices, time_s=elapsed,
            settings={**settings, "victim": t.settings(), "source": source.settings(), "spec": spec.settings()},
            extra={"source": source.model, "white_box": t.model == source.model and t.defence == "none",
                   **draw_extra(t, draws, mean, threat)},
        )  # fmt: skip
        if batches.dist.rank == 0:
            store.put(rec)
        out.append(rec)
    batches.dist.barrier()
    return out


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
