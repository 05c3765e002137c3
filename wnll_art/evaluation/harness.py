"""``wnll-art evaluate``: the pretrained ResNet-56 with and without WNLL, with and without TVM, under
ART and Foolbox attacks; a results directory of JSON records, a markdown table and accuracy-vs-eps PNGs
(the paper's Fig. 5). Resumable (finished cells are read back) and shardable with ``torchrun``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from wnll_art import _argparse
from wnll_art.data import load_cifar10
from wnll_art.evaluation.checks import eps_monotonicity_flags, model_flags, transfer_flags
from wnll_art.evaluation.engine import AttackSpec, Batches, Dist, run_cells
from wnll_art.evaluation.protocols import main_specs
from wnll_art.evaluation.records import CellRecord, RunStore, per_image_minimum, write_markdown, write_plots
from wnll_art.evaluation.victims import Victim, build_victims
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.template import balanced_template
from wnll_art.zoo import load_pretrained

__all__ = ["EvalConfig", "check_device", "evaluate", "finalize", "load_batches", "load_victims"]


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation run (all recorded in ``run.json`` and every cell).

    Attributes:
        n: Test images (the first ``n`` from ``start``).
        start: Index of the first test image.
        eps: L-inf radii in [0, 1] pixel units.
        models: Subset of ``("softmax", "wnll")``.
        defences: Subset of ``("none", "tvm")``.
        attacks: Attack names of :func:`~wnll_art.evaluation.protocols.main_specs` (``None``: all).
        wnll_batch_size: Transductive WNLL batch = attack batch = sharding unit.
        template_size: Class-balanced template drawn from the training set.
        coupling: ``"transductive"`` or ``"inductive"``.
        kernel: ``"gaussian"`` or ``"quartic"``.
        eot_samples: EOT draws when attacking through TVM.
        cw_steps: Optimisation steps of the C&W attacks.
        tvm: The TVM settings (default: Guo et al.'s, :class:`~wnll_art.tvm.settings.TVMSettings`).
        seed: Seed of the template draw, TVM masks and attack random starts.
        device: ``"cpu"`` or ``"cuda"``.
    """

    n: int = 50
    start: int = 0
    eps: tuple[float, ...] = (0.02, 0.04, 0.08)
    models: tuple[str, ...] = ("softmax", "wnll")
    defences: tuple[str, ...] = ("none", "tvm")
    attacks: tuple[str, ...] | None = None
    wnll_batch_size: int = 500
    template_size: int = 500
    coupling: str = "transductive"
    kernel: str = "gaussian"
    eot_samples: int = 2
    cw_steps: int = 20
    tvm: TVMSettings = field(default_factory=TVMSettings)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tvm": self.tvm.to_dict()}


def _check_config(cfg: EvalConfig) -> None:
    """Raises ``ValueError``/``TypeError`` naming the first bad setting of ``cfg`` (before anything runs)."""
    if isinstance(cfg.n, bool) or not isinstance(cfg.n, int) or not isinstance(cfg.start, int):
        raise TypeError(f"n and start must be ints, got n={cfg.n!r}, start={cfg.start!r}")
    if cfg.n < 1 or cfg.start < 0 or cfg.start + cfg.n > 10000:
        raise ValueError(f"need 1 <= n and start + n <= 10000, got start={cfg.start}, n={cfg.n}")
    if not cfg.eps or any(not 0.0 < e <= 1.0 for e in cfg.eps):
        raise ValueError(f"eps must be one or more radii in (0, 1], got {cfg.eps}")
    if not set(cfg.models) <= {"softmax", "wnll"} or "softmax" not in cfg.models:
        raise ValueError(f"models must include 'softmax' and be within ('softmax', 'wnll'), got {cfg.models}")
    if not cfg.defences or not set(cfg.defences) <= {"none", "tvm"}:
        raise ValueError(f"defences must be one or more of ('none', 'tvm'), got {cfg.defences}")
    for name in ("wnll_batch_size", "eot_samples", "cw_steps", "seed"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (name != "seed"):
            raise ValueError(f"{name} must be an int >= {int(name != 'seed')}, got {value!r}")
    if isinstance(cfg.template_size, bool) or not isinstance(cfg.template_size, int) or cfg.template_size < 10 \
            or cfg.template_size % 10:  # fmt: skip
        raise ValueError(
            f"template_size must be a positive multiple of 10 (one share per class), got {cfg.template_size!r}"
        )
    if cfg.coupling not in ("transductive", "inductive") or cfg.kernel not in ("gaussian", "quartic"):
        raise ValueError(f"coupling/kernel must be transductive|inductive / gaussian|quartic, got "
                         f"{cfg.coupling!r} / {cfg.kernel!r}")  # fmt: skip
    if cfg.attacks is not None and not cfg.attacks:
        raise ValueError("attacks: give at least one attack (or None for all)")
    main_specs(eot_samples=cfg.eot_samples, cw_steps=cfg.cw_steps, attacks=cfg.attacks)  # unknown names


def check_device(device: str) -> str:
    """Returns ``device`` if it is a torch device usable here, else raises ``ValueError`` with a remedy."""
    try:
        return _argparse.device(device)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"device {exc}") from None


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
        wnll = WNLLNet(backbone, *template, coupling=cfg.coupling, wnll_batch_size=cfg.wnll_batch_size,  # type: ignore[arg-type]
                       kernel=cfg.kernel).to(cfg.device).eval()  # type: ignore[arg-type]  # fmt: skip
    victims = build_victims(backbone, wnll, defences=cfg.defences, tvm=cfg.tvm, seed=cfg.seed)
    softmax = next((v for v in victims if v.model == "softmax" and v.defence == "none"), None)
    if softmax is None:
        softmax = build_victims(backbone, None, defences=("none",), tvm=cfg.tvm, seed=cfg.seed)[0]
    return victims, softmax


def _victim_flags(
    victims: Sequence[Victim], batches: Batches, eot_samples: int
) -> dict[tuple[str, str], list[str]]:
    x, y = batches.get(0)
    flags = {}
    for v in victims:
        view = v.attack_view(eot_samples=eot_samples if v.purifier is not None else 1)
        flags[v.model, v.defence] = model_flags(v.predict_module, view, x, y, reseed=v.reseed)
    return flags


def finalize(
    store: RunStore, records: Sequence[CellRecord], victim_flags: dict[tuple[str, str], list[str]]
) -> str:
    """Attaches all flags, rewrites the records, adds per-image ``worst_case`` records (clean and every
    attack), writes ``results.md`` and the PNGs; returns the table."""
    by_key = {**eps_monotonicity_flags(records)}
    for key, fl in transfer_flags(records).items():
        by_key.setdefault(key, []).extend(fl)
    final = []
    for r in records:
        flags = sorted(set(victim_flags.get((r.model, r.defence), [])) | set(by_key.get(r.key, [])))
        if flags != r.flags:
            r = replace(r, flags=flags)
            store.put(r)
        final.append(r)
    # the honest summary: an image is robust only if clean-correct and correct under every attack
    for worst in per_image_minimum(final, attack="worst_case", protocol="main", include_clean=True):
        store.put(worst)
        final.append(worst)
    write_plots(final, store.root)
    return write_markdown(final, store.root / "results.md")


def evaluate(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    on_cell: Callable[[CellRecord], None] | None = None,
) -> list[CellRecord]:
    """Runs the main evaluation grid; see the module docstring. Returns the (finalised) records.

    Everything is checked before anything is written: the device, ``out_dir`` (a writable folder, and no
    run with other settings in it), the data, the weights and the defences; ``run.json`` comes with the
    first cell.

    Raises:
        ValueError: A bad setting, a device not available here, or ``out_dir`` holding another run.
        UsageError: ``out_dir`` is a file or not writable.
        FileNotFoundError: Missing data or weights.
    """
    check_device(cfg.device)
    _argparse.check_out_dir(out_dir)
    dist = Dist.from_env(cfg.device)
    specs: list[AttackSpec] = main_specs(
        eot_samples=cfg.eot_samples, cw_steps=cfg.cw_steps, attacks=cfg.attacks
    )
    run_settings = {"run": cfg.to_dict(), "protocol": "main"}
    store = RunStore(out_dir, run_settings, writer=dist.rank == 0)  # checks the folder; writes nothing
    batches = load_batches(cfg, data_root, dist)
    victims, softmax = load_victims(cfg, data_root, weights)
    if "wnll" not in cfg.models:
        specs = [s for s in specs if s.source != "softmax"]
    records = run_cells(victims=victims, softmax=softmax, specs=specs, eps_values=cfg.eps, batches=batches,
                        store=store, protocol="main", seed=cfg.seed, run_settings=run_settings, on_cell=on_cell)  # fmt: skip
    if dist.rank == 0:
        finalize(store, records, _victim_flags(victims, batches, cfg.eot_samples))
        records = store.records()
    dist.barrier()
    return records
