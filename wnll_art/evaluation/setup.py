"""What every job does before and around its cells: its rows of models, their victims (the one factory,
:func:`~wnll_art.evaluation.victims.build_victims`), the evaluated images, the run's settings, its store on every
rank, and the victims' flags. The jobs (:mod:`wnll_art.evaluation.jobs`) never import each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from wnll_art._device import Dist, device_facts
from wnll_art.data import load_cifar10
from wnll_art.evaluation.checks import model_flags
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import Batches
from wnll_art.evaluation.records import DEVICE_FACTS, RunStore
from wnll_art.evaluation.victims import (
    MODELS,
    PURIFIERS,
    Head,
    ModelRef,
    Row,
    Victim,
    build_victims,
    resolve_model,
)

__all__ = ["load_batches", "open_run", "open_store", "rows", "run_settings", "victim_flags", "victims_of"]


def run_settings(cfg: EvalConfig, dist: Dist, *, protocol: str, **extra: Any) -> dict[str, Any]:
    """The settings a job's ``run.json`` and every record carry: ``{"run": cfg, "protocol": ..., **extra,
    "device_facts": ...}``. Every rank gets rank 0's device facts (so all ranks expect the same records); when a
    rank computes on another device than ``cfg.device`` (``torchrun`` maps ``"cuda"`` to ``cuda:{LOCAL_RANK}``),
    the facts also list ``rank_devices``."""
    parts = dist.gather((device_facts(cfg.device), dist.device or cfg.device))
    facts = dict(parts[0][0])
    if any(dev != cfg.device for _, dev in parts):
        facts["rank_devices"] = [dev for _, dev in parts]
    return {"run": cfg.to_dict(), "protocol": protocol, **extra, DEVICE_FACTS: facts}


def open_store(out_dir: str | os.PathLike[str], settings: dict[str, Any], dist: Dist) -> RunStore:
    """A :class:`RunStore` opened on every rank (rank 0 first; it alone writes or sets files aside)."""
    store = RunStore(out_dir, settings) if dist.rank == 0 else None
    dist.barrier()
    return store if store is not None else RunStore(out_dir, settings, writer=False)


def open_run(
    cfg: EvalConfig, out_dir: str | os.PathLike[str], data_root: str | os.PathLike[str] | None, *, dist: Dist,
    protocol: str, **extra: Any,
) -> tuple[dict[str, Any], RunStore, Batches]:  # fmt: skip
    """A job's start: its settings, its store opened on every rank (nothing written yet) and its images."""
    settings = run_settings(cfg, dist, protocol=protocol, **extra)
    return settings, open_store(out_dir, settings, dist), load_batches(cfg, data_root, dist)


def load_batches(cfg: EvalConfig, data_root: str | os.PathLike[str] | None, dist: Dist) -> Batches:
    """The evaluated test images (float [0, 1] on ``cfg.device``) split into WNLL batches."""
    x, y = load_cifar10(data_root, split="test")
    sl = slice(cfg.start, cfg.start + cfg.n)
    return Batches(x[sl].float().div(255).to(cfg.device), y[sl].to(cfg.device),
                   list(range(cfg.start, cfg.start + cfg.n)), cfg.wnll_batch_size, dist)  # fmt: skip


def rows(cfg: EvalConfig, trained: bool | Sequence[str] = False) -> list[Row]:
    """The training-data rows of a table: ``"original"`` (``cfg.models``: the public ResNet-56, its post-hoc WNLL
    head, or any trained zoo model by name), or (``trained``) our shipped softmax / WNLL pairs per training data
    (:func:`~wnll_art.zoo_trained.training_rows`): ``True`` for every row, or the names of some.

    Every name of the run (models, defences) is checked here, before a job reads or writes anything.

    Raises:
        TypeError: ``trained`` is a string (a name list was meant).
        ValueError: An unknown model or defence, no shipped rows, or ``trained`` naming none or an unknown one.
    """
    PURIFIERS.check(list(cfg.defences), what="defences")
    if isinstance(trained, str):
        raise TypeError(f"trained must be a bool or a sequence of row names, got the string {trained!r}")
    if not trained:
        return [Row("original", {m: resolve_model(m) for m in cfg.models}, {"weights": "zoo:resnet56"})]
    from wnll_art.zoo_trained import trained_models, training_rows

    shipped, table = trained_models(), training_rows()
    if not table:
        raise ValueError(
            "no trained models are shipped in this installation (wnll_art/zoo_weights/index.json)"
        )
    wanted = list(table) if trained is True else list(dict.fromkeys(t.strip() for t in trained))
    if not wanted or not set(wanted) <= set(table):
        raise ValueError(f"trained rows must be a non-empty subset of {list(table)}, got {wanted}")
    out = []
    for data in wanted:
        pair = table[data]
        models = {m: ModelRef(pair[m], cast(Head, m)) for m in cfg.models if m in pair}
        if not models:
            raise ValueError(f"models {list(cfg.models)}: a trained row holds only {sorted(pair)}")
        origin = {"weights": f"zoo:{pair['softmax']}+{pair['wnll']}", "zoo": pair,
                  "zoo_sha256": {n: shipped[n].sha256 for n in pair.values() if n in shipped}}  # fmt: skip
        out.append(Row(data, models, origin))
    return out


def victims_of(
    row: Row, cfg: EvalConfig, *, sources: Iterable[str] = (), defences: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None, data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
) -> tuple[list[Victim], dict[str, Victim]]:  # fmt: skip
    """A row's victims (``defences``, default ``cfg.defences``) and its transfer sources: ``{label: undefended
    victim}`` for each label in ``sources`` (the row's model of that label, even when ``cfg.models`` leaves it out
    of the victims, else :data:`MODELS`'s; built on its own when not among the victims)."""
    victims = build_victims(cfg, models=row.models, defences=defences or cfg.defences, options=options,
                            data_root=data_root, weights=weights)  # fmt: skip
    found = {v.model: v for v in victims if v.defence == "none"}
    pair = row.origin.get("zoo", {})  # a trained row's own models, whichever cfg.models attacks
    missing = {s: row.models.get(s) or (ModelRef(pair[s], cast(Head, s)) if s in pair else MODELS[s]) for s in sources if s not in found}
    if missing:
        found.update({v.model: v for v in build_victims(cfg, models=missing, defences=("none",), data_root=data_root,
                                                        weights=weights)})  # fmt: skip
    return victims, {s: found[s] for s in sources}


def victim_flags(
    victims: Sequence[Victim], batches: Batches, *, eot_samples: int
) -> dict[tuple[str, str], list[str]]:
    """``{(model, defence): flags}`` of :func:`~wnll_art.evaluation.checks.model_flags` on the first batch,
    each victim differentiated as attacked (EOT over ``eot_samples`` draws when its defence is randomised)."""
    x, y = batches.get(0)
    return {(v.model, v.defence): model_flags(v.module, v.module.view(eot_samples=eot_samples if v.module.randomised else 1), x, y)
            for v in victims}  # fmt: skip
