"""The evaluation engine: runs attack specs against victims batch by batch, shardable over processes.

Images are split into consecutive WNLL batches (``wnll_batch_size``), which are the unit of everything:
the transductive coupling, the seeds, the attack calls and the sharding (rank ``r`` of ``W`` takes
batches ``r, r + W, ...``). So one process and ``torchrun --nproc_per_node W`` compute the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from wnll_art._device import Dist
from wnll_art._random import derive_seed
from wnll_art.attacks import project_linf
from wnll_art.evaluation.protocols import AttackSpec, skipped
from wnll_art.evaluation.records import CellRecord, RunStore, cell_key
from wnll_art.evaluation.victims import UNDECIDED, Victim, predict_labels

__all__ = ["Batches", "Dist", "ThreatModelError", "adversarial", "cell_key", "derive_seed", "merge_threat",
           "predict_correct", "run_cells", "threat_model"]  # fmt: skip


@dataclass
class Batches:
    """The evaluated images split into WNLL batches, and this rank's share."""

    x: torch.Tensor
    y: torch.Tensor
    indices: list[int]
    batch_size: int
    dist: Dist = field(default_factory=Dist)

    @property
    def count(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def mine(self) -> list[int]:
        return list(range(self.dist.rank, self.count, self.dist.world))

    def get(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
        return self.x[sl], self.y[sl]


class ThreatModelError(RuntimeError):
    """Adversarials outside the threat model: farther than eps from their images (L-inf) or outside [0, 1]."""


def threat_model(x_adv: torch.Tensor, x: torch.Tensor, *, eps: float | None, what: str) -> dict[str, float]:
    """Measures adversarials against the threat model, independently of the attack (and projection) that made them.

    Args:
        x_adv: ``(N, 3, H, W)`` adversarial images.
        x: ``(N, 3, H, W)`` float images in [0, 1] they were made from.
        eps: L-inf radius in [0, 1] (an attack's declared bound, :meth:`Attack.max_linf`; ``None``: measured only).
        what: The cell and batch, for the error message.

    Returns:
        ``linf_max`` (the largest ``|x_adv - x|``), ``x_adv_min``, ``x_adv_max`` and ``linf_tolerance`` (the
        float slack allowed over ``eps``: 4 units of ``x``'s dtype's machine epsilon, as pixels are in [0, 1]).

    Raises:
        ThreatModelError: ``linf_max > eps + linf_tolerance``, or ``x_adv`` outside [0, 1], not finite or of
            another shape.
    """
    if x_adv.shape != x.shape:
        raise ThreatModelError(f"{what}: adversarials of shape {tuple(x_adv.shape)}, images {tuple(x.shape)}")
    tol = 4 * torch.finfo(x.dtype).eps
    measured = {"linf_max": float((x_adv - x).abs().amax()), "x_adv_min": float(x_adv.amin()),
                "x_adv_max": float(x_adv.amax()), "linf_tolerance": tol}  # fmt: skip
    # written as "not inside" so that NaN fails too
    if eps is not None and not measured["linf_max"] <= eps + tol:
        raise ThreatModelError(f"{what}: max |x_adv - x| = {measured['linf_max']:.8g} exceeds eps = {eps:g} "
                               f"(+ {tol:.1g}); the cell is not recorded")  # fmt: skip
    if not 0.0 <= measured["x_adv_min"] <= measured["x_adv_max"] <= 1.0:
        raise ThreatModelError(f"{what}: adversarials in [{measured['x_adv_min']:.8g}, {measured['x_adv_max']:.8g}],"
                               " outside [0, 1]; the cell is not recorded")  # fmt: skip
    return measured


def merge_threat(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-batch :func:`threat_model` measurements combined over a cell's batches (and the attack's declared
    ``bound`` where it is not eps)."""
    return {"linf_max": max(p["linf_max"] for p in parts), "x_adv_min": min(p["x_adv_min"] for p in parts),
            "x_adv_max": max(p["x_adv_max"] for p in parts), "linf_tolerance": max(p["linf_tolerance"] for p in parts),
            **{k: parts[0][k] for k in ("bound",) if k in parts[0]}}  # fmt: skip


def adversarial(
    spec: AttackSpec, source: Victim, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int,
    raw_cache: dict[Any, torch.Tensor],
) -> torch.Tensor:  # fmt: skip
    """The adversarials ``(N, 3, H, W)`` of one WNLL batch ``x`` (float in [0, 1]; ``y``: ``(N,)`` int64) under
    ``spec``, crafted on ``source`` (the attacked victim or a transfer source; ``x`` itself for the clean spec).
    ``seed`` seeds the attack's random starts and the purifier's draws during the attack; ``raw_cache`` keeps
    the unconstrained results of eps-independent attacks (C&W), run once per batch and projected onto each eps.
    Whether the result keeps to the threat model is :func:`threat_model`'s check."""
    if spec.attack is None:
        return x
    # EOT only over a randomised purifier (a deterministic one, e.g. JPEG, gives the same draw each time); a view
    # is built in its victim's (eval) mode, and Attack.__call__ restores the mode it found
    eot = spec.eot_samples if source.module.randomised else 1
    view = source.module.view(gradient=spec.gradient, tvm=spec.tvm, eot_samples=eot, score=spec.score)
    raw = spec.attack.eps_independent  # run once per batch unconstrained, projected onto each eps
    key = (spec.name, source.model, source.defence, seed)
    if not raw or key not in raw_cache:
        with view.drawing(seed):  # the purifier's draws during the attack depend on the batch only, not the rank
            x_adv = spec.attack(view, x, y, eps=1.0 if raw else eps, seed=seed)
        if not raw:
            return x_adv
        raw_cache[key] = x_adv
    return project_linf(raw_cache[key], x, eps)


def predict_correct(
    victim: Victim, x: torch.Tensor, y: torch.Tensor, *, draws: int, seed: int
) -> tuple[list[int], list[float], list[int]]:
    """Correctness of ``victim`` on ``x`` under the K-draw rule of a randomised victim.

    A randomised victim (TVM) classifies ``x`` with ``draws`` independent purifier draws (the first from
    ``seed``, the others from seeds derived from it); an image counts as correct only if every draw is correct,
    so an attacker need only win one draw. A deterministic victim is asked once.

    Returns:
        ``(correct under the rule (0/1 per image), fraction of draws correct per image, 1 for an image some draw
        left undecided: all scores equal, counted as an error; see :func:`~wnll_art.evaluation.victims.predict_labels`)``.
    """
    hits, undecided = [], []
    for i in range(draws if victim.module.randomised else 1):
        with victim.module.drawing(seed if i == 0 else derive_seed(seed, "draw", i)):
            labels = predict_labels(victim.module, x)
        hits.append((labels == y).float())
        undecided.append(labels == UNDECIDED)
    stacked = torch.stack(hits)
    return stacked.amin(0).int().tolist(), stacked.mean(0).tolist(), torch.stack(undecided).any(0).int().tolist()


def _cell(
    spec: AttackSpec, victim: Victim, source: Victim, *, eps: float, batches: Batches, seed: int, draws: int,
    raw_cache: dict[Any, torch.Tensor], transfers: dict[Any, torch.Tensor],
) -> dict[int, tuple[list[int], list[float], list[int], dict[str, float]]]:  # fmt: skip
    """One cell on this rank's batches: ``{batch: (*predict_correct's three lists, the adversarials'
    :func:`threat_model` measurements)}``.

    A transfer spec's adversarials depend on the source only, so they are kept in ``transfers`` for the next victim.

    Raises:
        ThreatModelError: A batch's adversarials leave the eps ball or [0, 1] (checked before they are scored).
    """
    out = {}
    for b in batches.mine():
        x, y = batches.get(b)
        # the attack seed ignores eps so eps-independent attacks are run once per batch
        attack_seed = derive_seed(seed, source.model, source.defence, spec.name, b)
        key = (spec.name, source.model, b, eps)
        x_adv = transfers.get(key) if spec.source != "self" else None
        if x_adv is None:
            x_adv = adversarial(spec, source, x, y, eps=eps, seed=attack_seed, raw_cache=raw_cache)
            if spec.source != "self":
                transfers[key] = x_adv
        bound = eps if spec.attack is None else spec.attack.max_linf(eps)  # a replicated script's own bound
        measured = threat_model(x_adv, x, eps=bound, what=f"{victim.model}/{victim.defence}/{spec.name} at eps={eps:g}, "
                                f"batch {b}")  # fmt: skip
        if bound != eps:
            measured["bound"] = bound  # type: ignore[assignment]
        predict_seed = derive_seed(seed, "predict", b, spec.name, eps)
        out[b] = (*predict_correct(victim, x_adv, y, draws=draws, seed=predict_seed), measured)
    return out


def run_cells(
    *,
    victims: Sequence[Victim],
    specs: Sequence[AttackSpec],
    eps_values: Sequence[float],
    batches: Batches,
    store: RunStore,
    protocol: str,
    seed: int,
    run_settings: dict[str, Any],
    sources: Mapping[str, Victim] | None = None,
    on_cell: Callable[[CellRecord], None] | None = None,
    tvm_draws: int = 1,
) -> list[CellRecord]:
    """Runs every (victim, spec, eps) cell not already in ``store``; returns all records (rank 0 writes).

    Clean specs (``attack=None``) run once with ``eps = 0``; a spec the registry says would only repeat a cell on
    a victim is skipped (:func:`~wnll_art.evaluation.protocols.skipped`). A transfer spec (``spec.source`` a model
    label) is crafted on ``sources[spec.source]`` once per batch and eps and scored on every victim. Images are
    scored under the K-draw rule (:func:`predict_correct`, K = ``tvm_draws``) after :func:`threat_model` checked
    them (a cell past eps or [0, 1] raises :class:`ThreatModelError` and is not written); records keep the mean
    over draws and the measurements in ``extra``. A stored record is reused only if it is valid and matches what
    this run would write (:meth:`RunStore.get`); else it is set aside and recomputed.

    Raises:
        ValueError: A transfer spec whose source is not in ``sources``.
    """
    records = []
    raw_cache: dict[Any, torch.Tensor] = {}
    transfers: dict[Any, torch.Tensor] = {}  # kept across victims: the same adversarials for each
    for spec in specs:
        if spec.source != "self" and spec.source not in (sources or {}):
            raise ValueError(
                f"{spec.name}: transfer source {spec.source!r} not among {sorted(sources or {})}"
            )
    for victim in victims:
        for spec in (s for s in specs if not skipped(protocol, s, victim)):
            for eps in [0.0] if spec.attack is None else eps_values:
                source = victim if spec.source == "self" else (sources or {})[spec.source]
                expected: dict[str, Any] = dict(model=victim.model, defence=victim.defence, attack=spec.name, eps=eps,
                                protocol=protocol, n=len(batches.indices), image_indices=batches.indices,
                                settings={**run_settings, "victim": victim.settings(), "spec": spec.settings()})  # fmt: skip
                record = store.get(
                    cell_key(protocol, victim.model, victim.defence, spec.name, eps), expected=expected
                )
                if record is None:
                    start = time.perf_counter()
                    parts = batches.dist.gather(_cell(spec, victim, source, eps=eps, batches=batches, seed=seed,
                                                      draws=tvm_draws, raw_cache=raw_cache, transfers=transfers))  # fmt: skip
                    merged = {b: c for part in parts for b, c in part.items()}
                    correct = [c for b in sorted(merged) for c in merged[b][0]]
                    mean = [m for b in sorted(merged) for m in merged[b][1]]
                    undecided = sum(u for b in merged for u in merged[b][2])
                    threat = merge_threat([merged[b][3] for b in sorted(merged)])
                    extra = {"tvm_draws": tvm_draws if victim.module.randomised else 1, "per_image_draw_mean": [round(m, 6) for m in mean],
                             "accuracy_draw_mean": sum(mean) / len(mean), "threat_model": threat,
                             **({"undecided_images": undecided} if undecided else {})}  # fmt: skip
                    record = CellRecord(**expected, accuracy=sum(correct) / len(correct), per_image_correct=correct,
                                        time_s=time.perf_counter() - start, extra=extra)  # fmt: skip
                    if batches.dist.rank == 0:
                        store.put(record)
                    batches.dist.barrier()
                records.append(record)
                if on_cell is not None:
                    on_cell(record)
            raw_cache.clear()
    return records
