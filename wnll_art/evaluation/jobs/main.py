"""``wnll-art evaluate``: any registered models and defences under one registered protocol's plan (``main``: the
demo; ``paper``; ``adaptive``); a results directory of JSON records, a markdown table and accuracy-vs-eps PNGs
(the paper's Fig. 5). Resumable (finished cells are read back) and shardable with ``torchrun``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wnll_art import _argparse
from wnll_art._device import Dist
from wnll_art._files import check_results_dir, results_lock
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import run_cells
from wnll_art.evaluation.protocols import PlanOptions, plan
from wnll_art.evaluation.records import CellRecord, RunStore, per_image_minimum
from wnll_art.evaluation.report import attach_flags, write_markdown, write_plots
from wnll_art.evaluation.setup import open_run, rows, victim_flags, victims_of

__all__ = ["evaluate", "finalize"]


def finalize(
    store: RunStore, records: Sequence[CellRecord], flags: dict[tuple[str, str], list[str]], *, protocol: str
) -> str:
    """Attaches all flags (``flags``: the victims'; the cells': eps monotonicity and the registered checks),
    rewrites changed records, adds per-image ``worst_case`` records (clean and every attack), writes
    ``results.md`` and the PNGs; returns the table."""
    final = attach_flags(store, records, flags)
    # the honest summary: an image is robust only if clean-correct and correct under every attack
    for worst in per_image_minimum(final, attack="worst_case", protocol=protocol, include_clean=True):
        store.put(worst)
        final.append(worst)
    write_plots(final, store.root)
    return write_markdown(final, store.root / "results.md", worst_case="worst_case")


def evaluate(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    protocol: str = "main",
    attacks: Sequence[str] | None = None,
    options: PlanOptions | None = None,
    defence_options: Mapping[str, Mapping[str, Any]] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    on_cell: Callable[[CellRecord], None] | None = None,
) -> list[CellRecord]:
    """Runs ``protocol``'s plan (its attacks named in ``attacks``, default its default plan, sized by ``options``)
    on every model of ``cfg.models`` with every defence of ``cfg.defences`` (built with ``defence_options``, e.g.
    ``{"jpeg": {"quality": 50}}``); see the module docstring. Returns the (finalised) records. With the
    ``adaptive`` protocol and ART's defences this is the comparison of defences (``evaluations/compare_defences.py``).

    Everything is checked before anything is written: the settings (when ``cfg`` was built), ``out_dir``
    (a writable folder, empty or one of our runs, and no run with other settings in it), the data, the
    weights and the defences; ``run.json`` comes with the first cell. The run holds ``out_dir``'s lock
    throughout (rank 0 for all ranks; :func:`~wnll_art._files.results_lock`).

    Raises:
        ValueError: ``out_dir`` holding another run; an unknown protocol, attack, model or defence.
        UsageError: ``out_dir`` is empty text, a file, not writable, holds files not of a run, or is in use
            by another run (:class:`~wnll_art._files.LockHeldError`, naming its pid, host and start).
        FileNotFoundError: Missing data or weights.
        OSError: A write failed (e.g. a full disk; finished cells are kept), or ``out_dir`` is a dangling link.
        ThreatModelError: An attack's adversarials left the eps ball or [0, 1] (that cell is not written).
    """
    options = options or PlanOptions(eot_samples=cfg.tvm.eot_samples)
    specs = plan(protocol, options, attacks)  # every name is checked before anything is read or written
    (row,) = rows(cfg)
    # transfer onto its own source alone is white box: a run of the source model only leaves transfers out
    specs = [s for s in specs if s.source == "self" or set(cfg.models) != {s.source}]
    _argparse.check_out_dir(out_dir)
    check_results_dir(out_dir)
    dist = Dist.from_env(cfg.device)
    with results_lock(out_dir) if dist.rank == 0 else contextlib.nullcontext():
        # the resolved plan is recorded: a folder from another default plan is refused, not silently mixed
        settings, store, batches = open_run(cfg, out_dir, data_root, dist=dist, protocol=protocol,
                                            options=options.to_dict(), plan=[s.settings() for s in specs],
                                            **({"defence_options": defence_options} if defence_options else {}))  # fmt: skip
        sources = {s.source for s in specs if s.source != "self"}
        victims, found = victims_of(row, cfg, sources=sources, options=defence_options, data_root=data_root,
                                    weights=weights)  # fmt: skip
        records = run_cells(victims=victims, sources=found, specs=specs, eps_values=cfg.eps, batches=batches,
                            store=store, protocol=protocol, seed=cfg.seed, run_settings=settings, on_cell=on_cell,
                            tvm_draws=cfg.tvm_draws)  # fmt: skip
        if dist.rank == 0:
            finalize(store, records, victim_flags(victims, batches, eot_samples=options.eot_samples),
                     protocol=protocol)  # fmt: skip
            records = store.records()
    dist.barrier()
    return records
