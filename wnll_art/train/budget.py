"""Whole-network training inside a wall-clock budget: data on the device, one-cycle schedule, no host reads.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018): the network
(ResNet -> FC+ReLU buffer block -> parallel linear and WNLL heads) is trained by alternating a softmax
cross-entropy step on the linear head with a WNLL step (:func:`wnll_art.train.steps.wnll_loss`), on original,
TVM-purified or both kinds of training images.
L. N. Smith, N. Topin, "Super-Convergence", 2019: the one-cycle learning rate (linear warm-up, linear decay
to zero), which fits a short schedule.
E. Wong, L. Rice, J. Z. Kolter, "Fast is better than free: revisiting adversarial training", ICLR 2020:
FGSM adversarial training with a random start (``adversarial="fgsm-rs"``).

What differs from :func:`wnll_art.train.loop.fit` (the reproducible, resumable loop): the training set,
the shuffles, the crops and flips, the template draws and the FGSM starts all live on the training device and
draw from one device generator, and statistics are read once per epoch, so a GPU step never waits for the
host. The schedule's length is fixed after the run has measured its own speed (:func:`plan_epochs`), and
a hard wall-clock budget bounds it: the learning rate follows ``max(steps done / planned, time spent /
budget)``, so a run that turns out slower than planned still anneals to zero by its deadline.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F

from wnll_art.train.augment import random_crop_flip
from wnll_art.train.config import TrainConfig
from wnll_art.train.steps import linear_step, wnll_step
from wnll_art.wnll.model import WNLLNet

__all__ = ["BudgetConfig", "BudgetTrainer", "draw_template_on_device", "fgsm_rs", "plan_epochs"]

Adversarial = Literal["none", "fgsm-rs"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BudgetConfig:
    """A budgeted run: the model's training settings plus the schedule and the adversary.

    Attributes:
        train: Data, batch size, peak lr, momentum, weight decay, WNLL settings, seed, ``bf16`` /
            ``channels_last`` (CUDA only) of :class:`TrainConfig`; its ``epochs`` and lr schedule are
            ignored (see ``time_budget_s`` and :meth:`BudgetTrainer.plan`).
        time_budget_s: Wall-clock seconds of the training loop, from the trainer's creation; ``> 0``.
        warmup_epochs: Epochs of the linear warm-up from 0 to ``train.lr`` (at most a third of the plan).
        adversarial: ``"none"`` or ``"fgsm-rs"`` (train on FGSM images with a uniform random start).
        adv_eps: L-inf radius of the adversarial images (pixels in [0, 1]).
        adv_alpha: FGSM step (Wong et al.: ``1.25 * adv_eps``).
    """

    train: TrainConfig
    time_budget_s: float
    warmup_epochs: float = 2.0
    adversarial: Adversarial = "none"
    adv_eps: float = 8 / 255
    adv_alpha: float = 10 / 255

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if not (isinstance(self.time_budget_s, (int, float)) and math.isfinite(self.time_budget_s)):
            raise TypeError(f"time_budget_s must be a finite number, got {self.time_budget_s!r}")
        if self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, (int, float)) or not (
            0 <= self.warmup_epochs < math.inf
        ):
            raise ValueError(f"warmup_epochs must be a finite number >= 0, got {self.warmup_epochs!r}")
        if self.adversarial not in ("none", "fgsm-rs"):
            raise ValueError(f"adversarial must be 'none' or 'fgsm-rs', got {self.adversarial!r}")
        for name in ("adv_eps", "adv_alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the training config whole)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["train"] = self.train.to_dict()
        return out


def plan_epochs(
    seconds_per_epoch: Mapping[str, float], *, seconds: float, runs_sharing: int, efficiency: float = 0.85
) -> int:
    """Epochs that every one of several runs sharing one device can finish in ``seconds``.

    Each run's speed is measured while all of them run side by side, each then holding about
    ``1 / runs_sharing`` of the device. In device-seconds, an epoch of run ``i`` costs
    ``seconds_per_epoch[i] / runs_sharing``; runs that finish early hand their share to the others, so the
    whole set finishes after about ``epochs * sum_i seconds_per_epoch[i] / runs_sharing`` seconds, divided by
    ``efficiency`` for the tail in which too few runs remain to fill the device.

    Args:
        seconds_per_epoch: Measured wall seconds of one epoch of each run, all running together; each ``> 0``.
        seconds: The time left for the schedules; ``> 0``.
        runs_sharing: How many runs were sharing the device when measured (``>= 1``).
        efficiency: Fraction of the device the runs keep busy over the whole schedule, in ``(0, 1]``.

    Returns:
        The common epoch count, at least 1.
    """
    if not seconds_per_epoch or any(not v > 0 for v in seconds_per_epoch.values()):
        raise ValueError(f"seconds_per_epoch must hold positive times, got {dict(seconds_per_epoch)}")
    if not seconds > 0 or runs_sharing < 1 or not 0 < efficiency <= 1:
        raise ValueError(f"bad plan: seconds={seconds}, runs_sharing={runs_sharing}, efficiency={efficiency}")
    device_seconds_per_epoch = sum(seconds_per_epoch.values()) / runs_sharing
    return max(1, int(efficiency * seconds / device_seconds_per_epoch))


def draw_template_on_device(
    labels: torch.Tensor,
    source: torch.Tensor,
    batch: torch.Tensor,
    class_start: torch.Tensor,
    per_class: int,
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """A class-balanced template drawn without replacement, none of whose rows shares an original image
    with the batch (no batch point is its own labelled neighbour), with no host synchronisation.

    Every pool row gets a uniform key; rows of the batch's originals get 2 added, which sorts them after
    every other row of their class. Sorting by ``label * 4 + key`` and taking the first ``per_class`` rows
    of each class's block is a uniform draw without replacement from the allowed rows.

    Args:
        labels: ``(N,)`` int64 pool labels, on the device; the pool sorted by nothing in particular.
        source: ``(N,)`` int64 index of the original image of each pool row (TVM copies share it).
        batch: ``(B,)`` int64 pool rows of the current batch.
        class_start: ``(C,)`` int64 first position of each class's block in the label-sorted pool
            (``cumsum`` of the class counts, shifted); each class needs ``per_class`` allowed rows.
        per_class: Rows drawn per class.
        generator: Generator on the pool's device.

    Returns:
        ``(C * per_class,)`` int64 pool rows, ordered by class.
    """
    keys = torch.rand(labels.shape[0], generator=generator, device=labels.device, dtype=torch.float64)
    blocked = torch.zeros(int(source.shape[0]), dtype=torch.bool, device=labels.device)
    blocked[source[batch]] = True
    keys = keys + 2.0 * blocked[source].double()
    order = torch.argsort(labels.double() * 4.0 + keys)
    positions = class_start[:, None] + torch.arange(per_class, device=labels.device)[None, :]
    return order[positions.flatten()]


def fgsm_rs(
    net: WNLLNet,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    generator: torch.Generator,
    autocast: AbstractContextManager[Any] | None = None,
) -> torch.Tensor:
    """FGSM from a uniform random start in the L-inf ball (Wong et al. 2020, Alg. 3), on the linear head.

    Args:
        net: The model (its mode is left as it is: training attacks in train mode).
        x: ``(B, 3, H, W)`` float in [0, 1], on the model's device.
        y: ``(B,)`` int64 labels.
        eps: L-inf radius. alpha: Step size.
        generator: Generator on ``x``'s device (the random start).
        autocast: Mixed-precision context of the forward pass.

    Returns:
        ``(B, 3, H, W)`` detached images in [0, 1] with ``|x_adv - x| <= eps``.
    """
    start = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    delta = ((x + start).clamp(0, 1) - x).requires_grad_(True)
    with autocast or nullcontext():
        logits = net.linear_head(net.embed(x + delta)).float()
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), delta)
    delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


class BudgetTrainer:
    """The state of one budgeted run; :meth:`step` trains one batch, :meth:`finished` says when to stop.

    Args:
        net: The model (on ``device``, its template already set), trained whole except ``backbone.linear``.
        images: ``(N, 3, 32, 32)`` uint8 training pool, on ``device``.
        labels: ``(N,)`` int64 labels, on ``device``.
        source: ``(N,)`` int64 original-image index of each row, on ``device``.
        config: The run's settings.
        device: The training device.
    """

    def __init__(self, net: WNLLNet, images: torch.Tensor, labels: torch.Tensor, source: torch.Tensor,
                 config: BudgetConfig, device: torch.device) -> None:  # fmt: skip
        cfg = config.train
        self.net, self.images, self.labels, self.source = net, images, labels, source
        self.config, self.device = config, device
        self.t0 = time.perf_counter()
        self.params = [p for n, p in net.named_parameters() if not n.startswith("backbone.linear.")]
        self.optimizer = torch.optim.SGD(self.params, lr=0.0, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)  # fmt: skip
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed + 3)
        self.cuda = device.type == "cuda"
        self.channels_last = cfg.channels_last and self.cuda
        self.bf16 = cfg.bf16 and self.cuda
        counts = torch.bincount(labels, minlength=net.num_classes)
        self.class_start = torch.cumsum(counts, 0) - counts
        self.per_class = cfg.train_template_size // net.num_classes
        self.steps_per_epoch = int(labels.shape[0]) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"the pool of {labels.shape[0]} rows holds no batch of {cfg.batch_size}")
        self.total_steps: int | None = None
        self.step_count = 0
        self.epoch_records: list[dict[str, Any]] = []
        self._perm = torch.empty(0, dtype=torch.long, device=device)
        self._sums = torch.zeros(4, device=device)  # loss / correct of linear and WNLL steps, this epoch
        self._epoch_t0 = self.t0
        self._epoch_step0 = 0

    # ------------------------------------------------------------------------------------ schedule
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def plan(self, epochs: int) -> None:
        """Fixes the schedule's length to ``epochs`` epochs of this run's pool."""
        self.total_steps = max(1, int(epochs) * self.steps_per_epoch)

    def progress(self) -> float:
        """``max(steps / planned steps, elapsed / budget)``; before :meth:`plan`, the time alone."""
        by_time = self.elapsed() / self.config.time_budget_s
        return by_time if self.total_steps is None else max(self.step_count / self.total_steps, by_time)

    def finished(self) -> bool:
        return self.progress() >= 1.0

    def learning_rate(self) -> float:
        """One cycle: linear warm-up over ``warmup_epochs`` (a third of the plan at most), linear decay to 0."""
        warm = int(self.config.warmup_epochs * self.steps_per_epoch)
        if self.total_steps is not None:
            warm = min(warm, self.total_steps // 3)
        p = self.progress()
        up = 1.0 if warm == 0 else min(1.0, (self.step_count + 1) / warm)
        start = 0.0 if self.total_steps is None else warm / self.total_steps
        down = min(1.0, max(0.0, (1.0 - p) / max(1.0 - start, 1e-9)))
        return self.config.train.lr * min(up, down)

    # ---------------------------------------------------------------------------------------- steps
    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def _batch(self, rows: torch.Tensor) -> torch.Tensor:
        x = self.images[rows].float() / 255.0
        if self.config.train.augment:
            x = random_crop_flip(x, generator=self.generator, check=False)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _next_rows(self) -> torch.Tensor:
        bs = self.config.train.batch_size
        k = self.step_count % self.steps_per_epoch
        if k == 0:
            if self.step_count:
                self._close_epoch()
            self._perm = torch.randperm(self.labels.shape[0], generator=self.generator, device=self.device)
        return self._perm[k * bs : (k + 1) * bs]

    def step(self) -> None:
        """One batch: (FGSM-RS images,) a linear-head step, and every ``wnll_every``-th batch a WNLL step."""
        cfg, net = self.config.train, self.net
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        rows = self._next_rows()
        x, y = self._batch(rows), self.labels[rows]
        if self.config.adversarial == "fgsm-rs":
            x = fgsm_rs(net, x, y, eps=self.config.adv_eps, alpha=self.config.adv_alpha,
                        generator=self.generator, autocast=self._autocast())  # fmt: skip
        loss, correct = linear_step(net=net, embed=net.embed, optimizer=self.optimizer, inputs=x, labels=y,
                                    autocast=self._autocast)  # fmt: skip
        self._sums[0] += loss
        self._sums[1] += correct
        if cfg.wnll_weight > 0 and (self.step_count + 1) % cfg.wnll_every == 0:
            self._wnll_step(rows, x, y)
        self.step_count += 1

    def _wnll_step(self, rows: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
        net = self.net
        t_rows = draw_template_on_device(self.labels, self.source, rows, self.class_start, self.per_class,
                                         generator=self.generator)  # fmt: skip
        loss, correct = wnll_step(net=net, embed=net.embed, optimizer=self.optimizer, inputs=x, labels=y,
                                  template_inputs=self._batch(t_rows), template_labels=self.labels[t_rows],
                                  weight=self.config.train.wnll_weight, autocast=self._autocast)  # fmt: skip
        self._sums[2] += loss
        self._sums[3] += correct

    def _close_epoch(self) -> None:
        """Reads the epoch's statistics (the one host read of an epoch) into :attr:`epoch_records`."""
        steps = self.step_count - self._epoch_step0
        if steps == 0:
            return
        wnll_steps = steps // self.config.train.wnll_every if self.config.train.wnll_weight > 0 else 0
        bs = self.config.train.batch_size
        sums = self._sums.tolist()
        now = time.perf_counter()
        self.epoch_records.append({
            "epoch": round(self.step_count / self.steps_per_epoch, 3), "step": self.step_count, "lr": self.learning_rate(),
            "train_loss_linear": sums[0] / steps, "train_acc_linear": sums[1] / (steps * bs),
            "train_loss_wnll": sums[2] / wnll_steps if wnll_steps else None,
            "train_acc_wnll": sums[3] / (wnll_steps * bs) if wnll_steps else None,
            "epoch_time_s": round(now - self._epoch_t0, 3), "elapsed_s": round(now - self.t0, 1),
        })  # fmt: skip
        self._sums.zero_()
        self._epoch_t0, self._epoch_step0 = now, self.step_count

    def run(self, *, until: float | None = None) -> None:
        """Steps until :meth:`finished` (or until ``elapsed() >= until``); train mode throughout."""
        self.net.train()
        while not self.finished() and (until is None or self.elapsed() < until):
            self.step()
        if self.finished():
            self._close_epoch()  # the last (possibly partial) epoch
