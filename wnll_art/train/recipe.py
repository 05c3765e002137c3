"""Training ResNet-56 with the WNLL activation by alternating linear-head and WNLL steps.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018), Sec. 3-4: the
backbone is followed by an FC+ReLU buffer block carrying a linear head and the WNLL head; training
alternates a softmax cross-entropy step on the linear head with a WNLL step (see
:mod:`wnll_art.train.steps`), on the original training images, their TVM-purified copies, or both.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from wnll_art.models.resnet import CifarResNet
from wnll_art.train import evaluate
from wnll_art.train.augment import random_crop_flip, to_unit_float
from wnll_art.train.checkpoint import (
    MetricsLog,
    atomic_save,
    generator_states,
    load_checkpoint,
    restore_generators,
    write_zoo_record,
)
from wnll_art.train.config import TrainConfig, lr_factor
from wnll_art.train.data import load_splits
from wnll_art.train.steps import draw_template_indices, linear_step, solver_options, wnll_step
from wnll_art.train.tvm_cache import TVMFunction, tvm_images
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.template import balanced_template
from wnll_art.zoo import load_state_dict_file

__all__ = ["TrainResult", "train"]

NUM_CLASSES = 10
CHECKPOINT_FORMAT = 1


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: The trained :class:`WNLLNet` (CPU, eval mode).
        epochs_done: Epochs completed so far (``config.epochs`` when finished).
        checkpoint: The last checkpoint (``out_dir/last.pt``).
        final_weights: ``out_dir/final.pt`` (bare state dict), once training has finished.
        zoo_record: ``out_dir/final.json`` (sha256, reference accuracy), once training has finished.
        test_accuracy: WNLL top-1 accuracy (%) of the final model on the test images, if measured.
        metrics: Records written to ``out_dir/metrics.jsonl`` by this call.
    """

    model: WNLLNet
    epochs_done: int
    checkpoint: Path
    final_weights: Path | None = None
    zoo_record: Path | None = None
    test_accuracy: float | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Data:
    images: torch.Tensor  # (N, 3, 32, 32) uint8, CPU or training device
    labels: torch.Tensor  # (N,) int64, same device as images
    labels_cpu: torch.Tensor
    source: torch.Tensor  # (N,) int64 CPU: index of the original image each row derives from
    test_images: torch.Tensor  # uint8 CPU
    test_labels: torch.Tensor


@dataclass
class _State:
    net: WNLLNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generators: dict[str, torch.Generator]
    device: torch.device
    autocast: Callable[[], AbstractContextManager[object]]
    channels_last: bool


def _load_data(
    config: TrainConfig, data_root: Path | None, cache_dir: Path, tvm_fn: TVMFunction | None,
    device: torch.device, progress: bool,
) -> _Data:  # fmt: skip
    images, labels, test_images, test_labels = load_splits(
        data_root, train_subset=config.train_subset, test_subset=config.test_subset
    )
    source = torch.arange(images.shape[0])
    if config.data != "original":
        tvm = tvm_images(images, settings=config.tvm, cache_dir=cache_dir, tvm_fn=tvm_fn, device=device,
                         progress=progress)  # fmt: skip
        if config.data == "tvm":
            images = tvm
        else:
            images, labels, source = torch.cat([images, tvm]), torch.cat([labels, labels]), source.repeat(2)
    on_device = config.data_on_device and device.type == "cuda"
    dev_images = images.to(device) if on_device else images
    return _Data(dev_images, labels.to(dev_images.device), labels, source, test_images, test_labels)


def _build_model(
    config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, init_weights: Path | None
) -> WNLLNet:
    """The WNLL network, initialised from ``config.seed`` (global RNG forked, not touched)."""
    template_gen = torch.Generator().manual_seed(config.seed)
    per_class = config.eval_template_size // NUM_CLASSES
    t_images, t_labels = balanced_template(images, labels, per_class, generator=template_gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = CifarResNet(config.num_blocks, NUM_CLASSES, check_inputs=False)
        if init_weights is not None:
            _load_backbone(backbone, init_weights)
        net = WNLLNet(
            backbone, t_images, t_labels, buffer_dim=config.buffer_dim, gradient=config.gradient,
            wnll_batch_size=config.wnll_batch_size, k=config.k, sigma_neighbor=config.sigma_neighbor,
            kernel=config.kernel,
        )  # fmt: skip
    return net


def _load_backbone(backbone: CifarResNet, path: Path) -> None:
    """Loads backbone weights (strict; the public checkpoint's missing BN step counters are zero-filled)."""
    state = load_state_dict_file(path)
    for key, value in backbone.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not fit the backbone (num_blocks?): {exc}") from exc


def _make_state(config: TrainConfig, net: WNLLNet, device: torch.device) -> _State:
    cuda = device.type == "cuda"
    net = net.to(device)
    if config.channels_last and cuda:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    params = [p for n, p in net.named_parameters() if not n.startswith("backbone.linear.")]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, config=config))
    generators = {
        "shuffle": torch.Generator().manual_seed(config.seed + 1),
        "augment": torch.Generator(device=device).manual_seed(config.seed + 2),
    }
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext
    if config.bf16 and cuda:
        autocast = functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    return _State(net, optimizer, scheduler, generators, device, autocast, config.channels_last and cuda)


def _inputs(data: _Data, idx: torch.Tensor, st: _State, augment: bool) -> torch.Tensor:
    """Float batch in [0, 1] on the training device, augmented with the device generator."""
    x = to_unit_float(data.images[idx.to(data.images.device)].to(st.device, non_blocking=True))
    if augment:
        x = random_crop_flip(x, generator=st.generators["augment"])
    return x.contiguous(memory_format=torch.channels_last) if st.channels_last else x


def _train_epoch(st: _State, data: _Data, config: TrainConfig, progress: bool, desc: str) -> dict[str, Any]:
    st.net.train()
    n, bs = data.labels_cpu.shape[0], config.batch_size
    perm = torch.randperm(n, generator=st.generators["shuffle"])
    embed, head = st.net.embed, st.net.linear_head
    options = solver_options(st.net)
    sums = {"loss_linear": 0.0, "correct_linear": 0, "loss_wnll": 0.0, "correct_wnll": 0, "wnll_images": 0}
    steps = n // bs
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for b in bar:
        idx = perm[b * bs : (b + 1) * bs]
        x, y = _inputs(data, idx, st, config.augment), data.labels[idx.to(data.labels.device)].to(st.device)
        loss, correct = linear_step(embed=embed, head=head, optimizer=st.optimizer, inputs=x, labels=y,
                                    autocast=st.autocast)  # fmt: skip
        sums["loss_linear"] += loss * len(idx)
        sums["correct_linear"] += correct
        if (b + 1) % config.wnll_every == 0:
            exclude = torch.nonzero(torch.isin(data.source, data.source[idx])).flatten()
            t_idx = draw_template_indices(
                data.labels_cpu, config.train_template_size // NUM_CLASSES,
                generator=st.generators["shuffle"], num_classes=NUM_CLASSES, exclude=exclude,
            )  # fmt: skip
            tx = _inputs(data, t_idx, st, config.augment)
            ty = data.labels_cpu[t_idx].to(st.device)
            loss, correct = wnll_step(
                embed=embed, head=head, optimizer=st.optimizer, inputs=x, labels=y, template_inputs=tx,
                template_labels=ty, gradient=config.gradient, options=options, num_classes=NUM_CLASSES,
                weight=config.wnll_weight, autocast=st.autocast,
            )  # fmt: skip
            sums["loss_wnll"] += loss * len(idx)
            sums["correct_wnll"] += correct
            sums["wnll_images"] += len(idx)
        bar.set_postfix(loss=f"{sums['loss_linear'] / ((b + 1) * bs):.3f}")
    seen, w = steps * bs, max(sums["wnll_images"], 1)
    return {"train_loss_linear": sums["loss_linear"] / max(seen, 1),
            "train_acc_linear": 100.0 * sums["correct_linear"] / max(seen, 1),
            "train_loss_wnll": sums["loss_wnll"] / w, "train_acc_wnll": 100.0 * sums["correct_wnll"] / w,
            "images": seen}  # fmt: skip


def _checkpoint_payload(st: _State, config: TrainConfig, epoch: int) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in st.net.state_dict().items()},
        "optimizer": st.optimizer.state_dict(),
        "scheduler": st.scheduler.state_dict(),
        "generators": generator_states(st.generators),
    }


def _resume(st: _State, config: TrainConfig, path: Path) -> int:
    ckpt = load_checkpoint(path)
    saved = ckpt.get("config", {})
    diff = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v)
    if diff:
        raise ValueError(f"cannot resume {path}: the config differs in {diff}; use another out_dir")
    st.net.load_state_dict(ckpt["model"])
    st.optimizer.load_state_dict(ckpt["optimizer"])
    st.scheduler.load_state_dict(ckpt["scheduler"])
    restore_generators(st.generators, ckpt["generators"])
    return int(ckpt["epoch"])


def _epoch_record(st: _State, data: _Data, config: TrainConfig, epoch: int, stats: dict[str, Any],
                  seconds: float) -> dict[str, Any]:  # fmt: skip
    record: dict[str, Any] = {"epoch": epoch, "lr": st.optimizer.param_groups[0]["lr"], **stats,
                              "epoch_time_s": round(seconds, 3),
                              "images_per_s": round(stats["images"] / max(seconds, 1e-9), 1)}  # fmt: skip
    if config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs):
        record["test_acc_linear"] = evaluate.linear_accuracy(
            st.net, data.test_images, data.test_labels, device=st.device, autocast=st.autocast
        )
    return record


def _finish(st: _State, data: _Data, config: TrainConfig, out_dir: Path, progress: bool) -> TrainResult:
    net = st.net.to("cpu", memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    net.backbone.check_inputs = True
    final = out_dir / "final.pt"
    atomic_save(net.state_dict(), final)
    acc = None
    if config.final_eval:
        acc = evaluate.wnll_accuracy(net, data.test_images, data.test_labels, progress=progress)
    record = write_zoo_record(
        final, model=net, reference_accuracy=float("nan") if acc is None else acc,
        num_blocks=config.num_blocks, notes="trained with wnll_art.train (alternating linear / WNLL steps)",
        extra={"config": config.to_dict(), "test_images": int(data.test_labels.shape[0])},
    )  # fmt: skip
    return TrainResult(net, config.epochs, out_dir / "last.pt", final, record, acc)


def train(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    data_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    init_weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    stop_after_epoch: int | None = None,
    tvm_fn: TVMFunction | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains a WNLL ResNet, checkpointing every epoch to ``out_dir/last.pt``.

    Args:
        config: The run's settings (see :class:`TrainConfig`, which also documents the schedule).
        out_dir: Directory of ``last.pt`` (model, optimiser, scheduler, generator states, epoch),
            ``metrics.jsonl`` (one record per epoch: losses, accuracies, lr, ``epoch_time_s``,
            ``images_per_s``), and, at the end, ``final.pt`` + ``final.json`` (zoo record).
        data_root: CIFAR-10 root (default :func:`wnll_art.data.default_data_root`).
        device: Training device; CUDA enables the ``bf16`` / ``channels_last`` / ``data_on_device`` flags.
        resume: Continue from ``out_dir/last.pt`` if it exists (the config must be equal). On CPU,
            stopping after ``k`` epochs and resuming gives bit-identical weights to training straight.
        init_weights: Backbone weights to start from (e.g. the public ResNet-56 file); default random.
        cache_dir: Directory of the TVM image cache; default ``out_dir/cache``.
        stop_after_epoch: Return after this epoch (checkpointed) without finishing (for interrupted runs).
        tvm_fn: TVM function (default :func:`wnll_art.tvm.solver.total_variation_minimize`).
        progress: Show tqdm progress bars.

    Returns:
        A :class:`TrainResult`; ``final_weights`` is ``None`` if stopped before ``config.epochs``.
    """
    out = Path(out_dir)
    dev = torch.device(device)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    data = _load_data(config, None if data_root is None else Path(data_root), cache, tvm_fn, dev, progress)
    net = _build_model(config, data.images.cpu(), data.labels_cpu,
                       None if init_weights is None else Path(init_weights))  # fmt: skip
    st = _make_state(config, net, dev)
    ckpt_path, log = out / "last.pt", MetricsLog(out / "metrics.jsonl")
    start = _resume(st, config, ckpt_path) if resume and ckpt_path.is_file() else 0
    last = config.epochs if stop_after_epoch is None else min(stop_after_epoch, config.epochs)
    written: list[dict[str, Any]] = []
    for epoch in range(start, last):
        t0 = time.perf_counter()
        stats = _train_epoch(st, data, config, progress, f"epoch {epoch + 1}/{config.epochs}")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        record = _epoch_record(st, data, config, epoch + 1, stats, time.perf_counter() - t0)
        st.scheduler.step()
        atomic_save(_checkpoint_payload(st, config, epoch + 1), ckpt_path)
        log.append(record)
        written.append(record)
    if last < config.epochs:
        return TrainResult(st.net.eval(), last, ckpt_path, metrics=written)
    result = _finish(st, data, config, out, progress)
    result.metrics = written
    return result
