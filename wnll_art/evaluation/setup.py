"""What every job does before and around its cells: load the images and victims, name the run's settings,
open its results store on every rank, and measure the victims' flags.

The jobs (:mod:`wnll_art.evaluation.jobs`) never import each other; what they share is here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from wnll_art._device import device_facts
from wnll_art.data import load_cifar10
from wnll_art.evaluation.checks import model_flags
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import Batches, Dist
from wnll_art.evaluation.records import DEVICE_FACTS, RunStore
from wnll_art.evaluation.victims import Victim, build_victims
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.template import balanced_template
from wnll_art.zoo import load_pretrained

__all__ = [
    "Loader",
    "check_tvm",
    "load_batches",
    "load_victims",
    "load_zoo_victims",
    "open_run",
    "open_store",
    "run_settings",
    "tvm_available",
    "victim_flags",
    "zoo_rows",
]

Loader = Callable[[], tuple[list[Victim], Victim]]
"""Builds a row's victims and its undefended softmax victim (the transfer source)."""


def tvm_available() -> bool:
    """Whether the TVM purifier (:mod:`wnll_art.tvm.module` and its solver) can be imported."""
    try:
        import wnll_art.tvm.module  # noqa: F401
    except ImportError:
        return False
    return True


def check_tvm(defences: Iterable[str], *, needing: Iterable[str] = ("tvm",)) -> None:
    """Raises ``ValueError`` naming them if ``defences`` holds any of ``needing`` (defences built on
    :mod:`wnll_art.tvm`) and the TVM purifier cannot be imported here."""
    wanted = sorted(set(defences) & set(needing))
    if wanted and not tvm_available():
        raise ValueError(f"{', '.join(wanted)} need the TVM purifier (wnll_art.tvm), which is not importable; "
                         f"leave {', '.join(wanted)} out of the defences")  # fmt: skip


def run_settings(
    cfg: EvalConfig, dist: Dist, *, protocol: str, run: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """The settings a job's ``run.json`` and every record carry.

    Args:
        cfg: The run configuration (stored under ``run``, unless ``run`` is given).
        dist: The processes; every rank gets rank 0's device facts, so all ranks expect the same records.
        protocol: The job's name (``"main"``, ``"defense_table"``, ...).
        run: Replaces ``cfg.to_dict()`` (a job that reinterprets a field, e.g. its own defence list).
        **extra: Further job settings (attack plans, step counts, ...).

    Returns:
        ``{"run": ..., "protocol": ..., **extra, "device_facts": device_facts(cfg.device)}``; when a rank
        computes on another device than ``cfg.device`` (``torchrun`` maps ``"cuda"`` to ``cuda:{LOCAL_RANK}``),
        the facts also list ``rank_devices`` (each rank's device, by rank).
    """
    parts = dist.gather((device_facts(cfg.device), dist.device or cfg.device))
    facts = dict(parts[0][0])
    if any(dev != cfg.device for _, dev in parts):
        facts["rank_devices"] = [dev for _, dev in parts]
    return {"run": cfg.to_dict() if run is None else run, "protocol": protocol, **extra, DEVICE_FACTS: facts}


def open_store(out_dir: str | os.PathLike[str], settings: dict[str, Any], dist: Dist) -> RunStore:
    """A :class:`RunStore` opened on every rank (rank 0 first; it alone writes or sets files aside)."""
    store = RunStore(out_dir, settings) if dist.rank == 0 else None
    dist.barrier()
    return store if store is not None else RunStore(out_dir, settings, writer=False)


def open_run(
    cfg: EvalConfig,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None,
    *,
    dist: Dist,
    protocol: str,
    run: dict[str, Any] | None = None,
    **extra: Any,
) -> tuple[dict[str, Any], RunStore, Batches]:
    """A job's start: its settings (:func:`run_settings`), its store opened on every rank (:func:`open_store`;
    nothing written yet) and the evaluated images (:func:`load_batches`), in that order."""
    settings = run_settings(cfg, dist, protocol=protocol, run=run, **extra)
    store = open_store(out_dir, settings, dist)
    return settings, store, load_batches(cfg, data_root, dist)


def load_batches(cfg: EvalConfig, data_root: str | os.PathLike[str] | None, dist: Dist) -> Batches:
    """The evaluated test images (float [0, 1] on ``cfg.device``) split into WNLL batches."""
    x, y = load_cifar10(data_root, split="test")
    sl = slice(cfg.start, cfg.start + cfg.n)
    return Batches(x[sl].float().div(255).to(cfg.device), y[sl].to(cfg.device),
                   list(range(cfg.start, cfg.start + cfg.n)), cfg.wnll_batch_size, dist)  # fmt: skip


def load_victims(
    cfg: EvalConfig,
    data_root: str | os.PathLike[str] | None,
    weights: str | os.PathLike[str] | None,
    *,
    backbone: nn.Module | None = None,
) -> tuple[list[Victim], Victim]:
    """The victims of ``cfg`` on the pretrained ResNet-56 (or on ``backbone``, e.g. a ResNet-56 trained on
    other data, when given; ``weights`` is then unused), and the undefended softmax victim."""
    if backbone is None:
        backbone = load_pretrained("resnet56", weights=weights)
    backbone = backbone.to(cfg.device)
    wnll = None
    if "wnll" in cfg.models:
        images, labels = load_cifar10(data_root, split="train")
        gen = torch.Generator().manual_seed(cfg.seed)
        template = balanced_template(images, labels, cfg.template_size // 10, generator=gen)
        wnll = WNLLNet(backbone, *template, coupling=cfg.coupling, wnll_batch_size=cfg.wnll_batch_size,
                       kernel=cfg.kernel).to(cfg.device).eval()  # fmt: skip
    return _victims_and_plain(cfg, backbone, wnll)


def _victims_and_plain(cfg: EvalConfig, softmax: nn.Module, wnll: WNLLNet | None) -> tuple[list[Victim], Victim]:
    """The victims of ``cfg`` on ``softmax`` / ``wnll``, and the undefended softmax victim (the transfer source;
    built on its own when ``cfg`` leaves it out)."""
    victims = build_victims(softmax, wnll, defences=cfg.defences, tvm=cfg.tvm, seed=cfg.seed)
    plain = next((v for v in victims if v.model == "softmax" and v.defence == "none"), None)
    if plain is None:
        plain = build_victims(softmax, None, defences=("none",), tvm=cfg.tvm, seed=cfg.seed)[0]
    return victims, plain


def load_zoo_victims(
    cfg: EvalConfig,
    weights: str | os.PathLike[str] | None,
    *,
    softmax: str,
    wnll: str,
) -> tuple[list[Victim], Victim]:
    """The victims of ``cfg`` on zoo models: ``softmax`` (``"resnet56"`` or a shipped softmax model) and ``wnll``
    (a shipped WNLL model, with its own template; ``cfg``'s coupling, kernel and WNLL batch are applied),
    and the undefended softmax victim. ``weights``: the base ResNet-56 file (sha256-checked)."""
    from wnll_art.zoo_trained import load_trained

    soft = (load_pretrained("resnet56", weights=weights) if softmax == "resnet56"
            else load_trained(softmax, output="softmax", weights=weights)).to(cfg.device)  # fmt: skip
    net = None
    if "wnll" in cfg.models:
        loaded = load_trained(wnll, output="wnll", weights=weights, coupling=cfg.coupling,
                              wnll_batch_size=cfg.wnll_batch_size, kernel=cfg.kernel)  # fmt: skip
        if not isinstance(loaded, WNLLNet):
            raise TypeError(f"{wnll} did not load as a WNLLNet")
        net = loaded.to(cfg.device).eval()
    return _victims_and_plain(cfg, soft.eval(), net)


def zoo_rows(
    cfg: EvalConfig, weights: str | os.PathLike[str] | None, trained: bool | Sequence[str] = True
) -> list[tuple[str, dict[str, Any], Loader]]:
    """The shipped training-data rows (:func:`~wnll_art.zoo_trained.training_rows`) as
    ``(training data, origin settings, victims loader)``.

    Args:
        cfg: The run configuration (device, coupling, kernel, WNLL batch, defences).
        weights: The base ResNet-56 file (``None``: the torch hub cache).
        trained: ``True`` for every row, or the training-data names of some (order kept, repeats dropped).

    Returns:
        One tuple per row: its name, the settings its ``run.json`` records (``weights``, ``zoo``: the row's
        model names, ``zoo_sha256``: each shipped file's sha256) and a loader of
        :func:`load_zoo_victims`.

    Raises:
        TypeError: ``trained`` is a string (a name list was meant).
        ValueError: ``trained`` names no row or an unknown one, or no rows are shipped.
    """
    from wnll_art.zoo_trained import trained_models, training_rows

    if isinstance(trained, str):
        raise TypeError(f"trained must be a bool or a sequence of row names, got the string {trained!r}")
    rows = training_rows()
    if not rows:
        raise ValueError("no trained models are shipped in this installation (wnll_art/zoo_weights/index.json)")
    wanted = list(rows) if trained is True else list(dict.fromkeys(t.strip() for t in trained or ()))
    if not wanted or not set(wanted) <= set(rows):
        raise ValueError(f"trained rows must be a non-empty subset of {list(rows)}, got {wanted}")
    shipped = trained_models()
    out: list[tuple[str, dict[str, Any], Loader]] = []
    for data in wanted:
        row = rows[data]
        origin = {"weights": f"zoo:{row['softmax']}+{row['wnll']}", "zoo": row,
                  "zoo_sha256": {n: shipped[n].sha256 for n in row.values() if n in shipped}}  # fmt: skip
        out.append((data, origin, functools.partial(load_zoo_victims, cfg, weights, **row)))
    return out


def victim_flags(
    victims: Sequence[Victim], batches: Batches, *, eot_samples: int
) -> dict[tuple[str, str], list[str]]:
    """``{(model, defence): flags}`` of :func:`~wnll_art.evaluation.checks.model_flags` on the first batch,
    each victim differentiated as attacked (EOT over ``eot_samples`` draws when its defence is randomised)."""
    x, y = batches.get(0)
    flags = {}
    for v in victims:
        view = v.attack_view(eot_samples=eot_samples if v.module.randomised else 1)
        flags[v.model, v.defence] = model_flags(v.predict_module, view, x, y, drawing=v.module.drawing)
    return flags
