"""The one training loop of WNLL networks, for both modes: alternating linear-head and WNLL steps.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018), Sec. 3-4: the
backbone is followed by an FC+ReLU buffer block carrying a linear head and the WNLL head; training
alternates a softmax cross-entropy step on the linear head with a WNLL step (see
:mod:`wnll_art.train.steps`), on the original training images, their TVM-purified copies, or both.

The modes (:mod:`wnll_art.train.modes`) differ only in what the loop iterates over (images or cached
features) and which parameters train. Every epoch ends with a checkpoint holding everything the next
epoch depends on (model, optimiser, scheduler, the CPU generators' states, the epoch), so that training
``N`` epochs straight and training ``k``, then resuming to ``N``, give bit-identical weights on CPU; the
states load on any device.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from wnll_art._device import device_facts
from wnll_art.train.checkpoint import (
    MetricsLog,
    atomic_save,
    generator_states,
    load_checkpoint,
    restore_generators,
)
from wnll_art.train.config import LoopConfig, lr_factor
from wnll_art.train.evaluate import evaluate_heads
from wnll_art.train.modes import Setup
from wnll_art.train.steps import draw_template_indices, linear_step, take, wnll_step

__all__ = ["CHECKPOINT_FORMAT", "check_resumable", "evaluate", "fit"]

CHECKPOINT_FORMAT = 2


@dataclass(frozen=True)
class _Run:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generators: dict[str, torch.Generator]  # CPU generators: "shuffle" (batches, templates), "augment"


def _make_run(setup: Setup, config: LoopConfig) -> _Run:
    optimizer = torch.optim.SGD(setup.params, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, config=config))
    generators = {
        "shuffle": torch.Generator().manual_seed(config.seed + 1),
        "augment": torch.Generator().manual_seed(config.seed + 2),
    }
    return _Run(optimizer, scheduler, generators)


def evaluate(setup: Setup) -> dict[str, float]:
    """Linear and WNLL test accuracy (fractions) of ``setup.net`` on the training device."""
    return evaluate_heads(setup.net, setup.embed, setup.test_inputs, setup.test_labels,
                          template_inputs=setup.template_inputs, device=setup.device)  # fmt: skip


def fit(
    setup: Setup, config: LoopConfig, *, out_dir: Path, resume: bool, stop: int, progress: bool
) -> tuple[int, list[dict[str, Any]]]:
    """Trains ``setup.net`` in place up to epoch ``stop``, checkpointing every epoch to ``out_dir/last.pt``.

    Args:
        setup: Model, pool and test data (see :func:`wnll_art.train.modes.prepare`).
        config: The run's settings.
        out_dir: Directory of ``last.pt`` and ``metrics.jsonl`` (one JSON record per epoch: losses,
            accuracies as fractions, lr, ``epoch_time_s``, ``images_per_s``, ``device_facts``; epoch 0 =
            before training, when ``config.eval_every``). A fresh run rewrites the log (and removes an earlier
            run's ``final.pt`` / ``final.json``), a resumed one appends to it.
        resume: Continue from ``out_dir/last.pt`` if it exists (its config must equal ``config``).
        stop: Last epoch to train (``<= config.epochs``).
        progress: Progress bars.

    Returns:
        ``(epoch reached, records written by this call)``.
    """
    run = _make_run(setup, config)
    ckpt, metrics = out_dir / "last.pt", out_dir / "metrics.jsonl"
    start = _resume(setup, run, config, ckpt) if resume and ckpt.is_file() else 0
    if start == 0:  # a fresh run: an earlier run's log and final model no longer describe this one
        for stale in (metrics, out_dir / "final.pt", out_dir / "final.json"):
            stale.unlink(missing_ok=True)
    log, records = MetricsLog(metrics), []
    facts = device_facts(setup.device)  # what decides the numbers (determinism, TF32, GPU): on every line
    if start == 0 and config.eval_every:
        records.append({"epoch": 0, **evaluate(setup), "device_facts": facts})
        log.append(records[-1])
    for epoch in range(start + 1, stop + 1):
        t0 = time.perf_counter()
        stats = _epoch(setup, run, config, progress, f"epoch {epoch}/{config.epochs}")
        if setup.device.type == "cuda":
            torch.cuda.synchronize(setup.device)
        seconds = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"], **stats,
                                  "epoch_time_s": round(seconds, 3),
                                  "images_per_s": round(stats["images"] / max(seconds, 1e-9), 1),
                                  "device_facts": facts}  # fmt: skip
        if config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs):
            record.update(evaluate(setup))
        run.scheduler.step()
        atomic_save(_payload(setup, run, config, epoch), ckpt)
        log.append(record)
        records.append(record)
    return max(start, stop), records


def _epoch(setup: Setup, run: _Run, config: LoopConfig, progress: bool, desc: str) -> dict[str, Any]:
    """One pass over the pool: a linear step per batch, a WNLL step after every ``wnll_every``-th."""
    net, pool, dev = setup.net, setup.pool, setup.device
    net.train()
    n, bs = pool.labels.shape[0], config.batch_size
    perm = torch.randperm(n, generator=run.generators["shuffle"])
    per_class = config.train_template_size // net.num_classes
    common: dict[str, Any] = {"net": net, "embed": setup.embed, "optimizer": run.optimizer,
                              "autocast": setup.autocast}  # fmt: skip
    sums = dict.fromkeys(("loss_linear", "correct_linear", "loss_wnll", "correct_wnll", "wnll_images"), 0.0)
    steps = n // bs
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for b in bar:
        idx = perm[b * bs : (b + 1) * bs]
        x = pool.batch(idx, device=dev, generator=run.generators["augment"])
        y = take(pool.labels, idx).to(dev)
        loss, correct = linear_step(inputs=x, labels=y, **common)
        sums["loss_linear"] += float(loss) * bs
        sums["correct_linear"] += int(correct)
        if (b + 1) % config.wnll_every == 0:
            exclude = torch.nonzero(torch.isin(pool.source, take(pool.source, idx))).flatten()
            t_idx = draw_template_indices(pool.labels, per_class, generator=run.generators["shuffle"],
                                          num_classes=net.num_classes, exclude=exclude)  # fmt: skip
            tx = pool.batch(t_idx, device=dev, generator=run.generators["augment"])
            loss, correct = wnll_step(inputs=x, labels=y, template_inputs=tx,
                                      template_labels=take(pool.labels, t_idx).to(dev),
                                      weight=config.wnll_weight, **common)  # fmt: skip
            sums["loss_wnll"] += float(loss) * bs
            sums["correct_wnll"] += int(correct)
            sums["wnll_images"] += bs
        bar.set_postfix(loss=f"{sums['loss_linear'] / ((b + 1) * bs):.3f}")
    seen, w = max(steps * bs, 1), max(sums["wnll_images"], 1)
    return {"train_loss_linear": sums["loss_linear"] / seen, "train_acc_linear": sums["correct_linear"] / seen,
            "train_loss_wnll": sums["loss_wnll"] / w, "train_acc_wnll": sums["correct_wnll"] / w,
            "images": steps * bs}  # fmt: skip


def _payload(setup: Setup, run: _Run, config: LoopConfig, epoch: int) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in setup.net.state_dict().items()},
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "generators": generator_states(run.generators),
    }


def check_resumable(path: Path, config: LoopConfig) -> dict[str, Any]:
    """The checkpoint at ``path``, after checking that a run of ``config`` can continue from it.

    Raises:
        ValueError: Another checkpoint format, or a config that differs (the differing fields named).
    """
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"cannot resume {path}: checkpoint format {ckpt.get('format')}, this version writes "
                         f"{CHECKPOINT_FORMAT}; use another out_dir")  # fmt: skip
    saved = ckpt.get("config", {})
    diff = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v)
    if diff:
        raise ValueError(f"cannot resume {path}: the config differs in {diff}; use another out_dir")
    return ckpt


def _resume(setup: Setup, run: _Run, config: LoopConfig, path: Path) -> int:
    """Loads ``path`` into model, optimiser, scheduler and generators; returns its epoch."""
    ckpt = check_resumable(path, config)
    setup.net.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    restore_generators(run.generators, ckpt["generators"])
    return int(ckpt["epoch"])
