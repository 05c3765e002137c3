"""CPU-friendly WNLL training: fine-tune only the buffer block and heads on cached backbone features.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018), Sec. 3: the
FC+ReLU buffer block with parallel linear and WNLL heads, trained by alternating linear and WNLL steps
(:mod:`wnll_art.train.steps`), here on top of the frozen pretrained ResNet-56.

The backbone features of the 50,000 training and 10,000 test images are computed once (a few minutes on
two CPU cores) and cached on disk, keyed by the sha256 of the weights and of the images. Because the
features are fixed, no data augmentation is applied in this mode (each image has one feature vector).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from wnll_art._checks import check_positive_int
from wnll_art.train.augment import to_unit_float
from wnll_art.train.checkpoint import MetricsLog, atomic_save, load_checkpoint, write_zoo_record
from wnll_art.train.config import milestone_epochs
from wnll_art.train.data import load_splits
from wnll_art.train.evaluate import wnll_accuracy_from_features
from wnll_art.train.steps import draw_template_indices, linear_step, solver_options, wnll_step
from wnll_art.train.tvm_cache import data_fingerprint
from wnll_art.wnll.model import WNLLNet
from wnll_art.zoo import ZOO, load_pretrained

__all__ = ["HeadConfig", "HeadResult", "cached_features", "finetune_head"]

NUM_CLASSES = 10
FEATURE_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Settings of the buffer-block fine-tune (SGD, step schedule).

    Attributes:
        epochs: Passes over the training features.
        batch_size: Features per step.
        lr: Initial learning rate (small: the heads start from the pretrained linear classifier).
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        lr_milestones: Fractions of ``epochs`` after which the lr is multiplied by ``lr_gamma``.
        lr_gamma: Decay factor.
        gradient: WNLL-step gradient, ``"surrogate"`` or ``"exact"``.
        wnll_every: A WNLL step follows every ``wnll_every``-th linear step.
        wnll_weight: Factor on the WNLL loss.
        train_template_size: Template of each WNLL training step (balanced, batch excluded).
        eval_template_size: Template of the resulting model (balanced, from the training set).
        wnll_batch_size: Transductive batch size of the resulting model.
        buffer_dim: Width of the buffer block.
        buffer_init: ``"identity"`` (buffer = identity, which ReLU keeps on the non-negative pooled
            features, and linear head = the pretrained one, so training starts from the pretrained
            classifier; needs ``buffer_dim`` = feature width) or ``"random"``.
        k: Neighbours of the kNN graph.
        sigma_neighbor: Neighbour setting the Gaussian scale.
        kernel: ``"gaussian"`` or ``"quartic"``.
        seed: Seed of every generator.
        train_subset: Use only the first ``n`` training images; ``None``: all 50,000.
        test_subset: Evaluate on the first ``n`` test images; ``None``: all 10,000.
        eval_every: WNLL / linear test accuracy every ``n`` epochs (0: only at the end).
    """

    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.1
    gradient: Literal["surrogate", "exact"] = "surrogate"
    wnll_every: int = 1
    wnll_weight: float = 1.0
    train_template_size: int = 500
    eval_template_size: int = 500
    wnll_batch_size: int = 500
    buffer_dim: int = 64
    buffer_init: Literal["identity", "random"] = "identity"
    k: int = 15
    sigma_neighbor: int = 8
    kernel: Literal["gaussian", "quartic"] = "gaussian"
    seed: int = 0
    train_subset: int | None = None
    test_subset: int | None = None
    eval_every: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "wnll_every", "train_template_size", "eval_template_size",
                     "wnll_batch_size", "buffer_dim"):  # fmt: skip
            check_positive_int(getattr(self, name), name)
        if self.gradient not in ("surrogate", "exact"):
            raise ValueError(f"gradient must be 'surrogate' or 'exact', got {self.gradient!r}")
        if self.buffer_init not in ("identity", "random"):
            raise ValueError(f"buffer_init must be 'identity' or 'random', got {self.buffer_init!r}")
        for name in ("train_template_size", "eval_template_size"):
            if getattr(self, name) % NUM_CLASSES:
                raise ValueError(f"{name} must be a multiple of {NUM_CLASSES}, got {getattr(self, name)}")
        if self.lr <= 0 or self.eval_every < 0:
            raise ValueError("lr must be > 0 and eval_every >= 0")


@dataclasses.dataclass
class HeadResult:
    """What :func:`finetune_head` returns.

    Attributes:
        model: The fine-tuned :class:`WNLLNet` (frozen pretrained backbone + trained buffer block), CPU,
            eval mode.
        test_accuracy: Its WNLL top-1 accuracy (%) on the test images.
        baseline_accuracy: WNLL accuracy before fine-tuning (with ``"identity"`` init: plain WNLL on the
            pretrained features).
        linear_accuracy: Test accuracy (%) of its linear head.
        wall_s: Wall time of the whole call (s), feature extraction included.
        final_weights: ``out_dir/final.pt``; ``zoo_record``: ``out_dir/final.json``.
        metrics: Records written to ``out_dir/metrics.jsonl``.
    """

    model: WNLLNet
    test_accuracy: float
    baseline_accuracy: float
    linear_accuracy: float
    wall_s: float
    final_weights: Path
    zoo_record: Path
    metrics: list[dict[str, Any]]


def cached_features(
    backbone: nn.Module,
    images: torch.Tensor,
    *,
    cache_dir: Path,
    weights_sha256: str,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """``backbone.features`` of uint8 images (eval mode), read from or written to the feature cache.

    Args:
        backbone: Module with ``features(x) -> (N, D)``; put in eval mode.
        images: ``(N, 3, H, W)`` uint8 CPU images.
        cache_dir: Cache directory (created if missing).
        weights_sha256: sha256 of the backbone's weights file (part of the key).
        batch_size: Images per forward pass.
        device: Where the backbone runs (it is moved there).
        progress: Progress bar while computing.

    Returns:
        ``(N, D)`` float32 CPU features.
    """
    material = {"version": FEATURE_CACHE_VERSION, "weights": weights_sha256, "data": data_fingerprint(images)}
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"features-{key}.pt"
    if path.is_file():
        return load_checkpoint(path)["features"]
    backbone.eval().to(device)
    chunks = []
    with torch.inference_mode():
        for i in tqdm(range(0, images.shape[0], batch_size), desc="backbone features", disable=not progress,
                      leave=False):  # fmt: skip
            chunks.append(
                backbone.features(to_unit_float(images[i : i + batch_size]).to(device)).float().cpu()  # type: ignore[operator]
            )
    feats = torch.cat(chunks)
    atomic_save({"features": feats, **material}, path)
    return feats


def _buffer_parts(net: WNLLNet) -> tuple[nn.Module, nn.Linear, nn.Linear]:
    """``(buffer block, its Linear, linear head)`` of a model built with ``buffer_dim``."""
    buffer, head = net.buffer, net.buffer_head
    fc = buffer[0] if isinstance(buffer, nn.Sequential) else None
    if buffer is None or head is None or not isinstance(fc, nn.Linear):
        raise RuntimeError("the WNLLNet has no FC+ReLU buffer block")
    return buffer, fc, head


def _build(
    config: HeadConfig, backbone: nn.Module, t_images: torch.Tensor, t_labels: torch.Tensor
) -> WNLLNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = WNLLNet(
            backbone, t_images, t_labels, buffer_dim=config.buffer_dim, gradient=config.gradient,
            wnll_batch_size=config.wnll_batch_size, k=config.k, sigma_neighbor=config.sigma_neighbor,
            kernel=config.kernel,
        )  # fmt: skip
    buffer, fc, head = _buffer_parts(net)
    if config.buffer_init == "identity":
        if fc.in_features != config.buffer_dim:
            raise ValueError(f"buffer_init='identity' needs buffer_dim = feature width {fc.in_features}")
        with torch.no_grad():
            fc.weight.copy_(torch.eye(config.buffer_dim))
            fc.bias.zero_()
            head.load_state_dict(backbone.linear.state_dict())  # type: ignore[union-attr,operator]
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    return net


def _evaluate(
    net: WNLLNet, feats: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]
) -> dict[str, float]:
    net.eval()
    with torch.inference_mode():
        buffer, _, head = _buffer_parts(net)
        logits = head(buffer(feats["test"]))
    linear = 100.0 * int((logits.argmax(1) == labels["test"]).sum()) / labels["test"].shape[0]
    wnll = wnll_accuracy_from_features(net, feats["test"], labels["test"], feats["template"])
    return {"test_acc_linear": linear, "test_acc_wnll": wnll}


def _epoch(net: WNLLNet, opt: torch.optim.Optimizer, config: HeadConfig, feats: torch.Tensor,
           labels: torch.Tensor, gen: torch.Generator) -> dict[str, float]:  # fmt: skip
    net.train()
    n, bs = labels.shape[0], config.batch_size
    perm = torch.randperm(n, generator=gen)
    embed, _, head = _buffer_parts(net)
    sums = [0.0, 0, 0.0, 0, 0]
    for b in range(n // bs):
        idx = perm[b * bs : (b + 1) * bs]
        loss, correct = linear_step(
            embed=embed, head=head, optimizer=opt, inputs=feats[idx], labels=labels[idx]
        )
        sums[0] += loss * bs
        sums[1] += correct
        if (b + 1) % config.wnll_every == 0:
            t_idx = draw_template_indices(labels, config.train_template_size // NUM_CLASSES, generator=gen,
                                          num_classes=NUM_CLASSES, exclude=idx)  # fmt: skip
            loss, correct = wnll_step(
                embed=embed, head=head, optimizer=opt, inputs=feats[idx], labels=labels[idx],
                template_inputs=feats[t_idx], template_labels=labels[t_idx], gradient=config.gradient,
                options=solver_options(net), num_classes=NUM_CLASSES, weight=config.wnll_weight,
            )  # fmt: skip
            sums[2], sums[3], sums[4] = sums[2] + loss * bs, sums[3] + correct, sums[4] + bs
    seen, w = max((n // bs) * bs, 1), max(sums[4], 1)
    return {"train_loss_linear": sums[0] / seen, "train_acc_linear": 100.0 * sums[1] / seen,
            "train_loss_wnll": sums[2] / w, "train_acc_wnll": 100.0 * sums[3] / w}  # fmt: skip


def finetune_head(
    config: HeadConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    train_threads: int | None = 1,
    progress: bool = True,
) -> HeadResult:
    """Fine-tunes the buffer block and heads of a WNLL ResNet-56 on frozen pretrained features.

    Writes ``out_dir/metrics.jsonl`` (rewritten; epoch 0 = before training, then per epoch: losses,
    accuracies, ``epoch_time_s``, ``images_per_s``), ``out_dir/final.pt`` (the :class:`WNLLNet` state
    dict, backbone included) and ``out_dir/final.json`` (zoo record: sha256, measured WNLL accuracy).

    Args:
        config: Settings.
        out_dir: Output directory.
        data_root: CIFAR-10 root (default :func:`wnll_art.data.default_data_root`).
        weights: The ResNet-56 weights file (sha256-checked against the zoo); default the hub cache.
        cache_dir: Feature cache directory; default ``out_dir/cache``.
        device: Device of feature extraction and training.
        train_threads: CPU threads (``torch.set_num_threads``) while training on the features, restored
            afterwards; the steps are tiny, so one thread is fastest and suffers least on a shared
            machine. ``None`` leaves the setting alone. Feature extraction uses the current setting.
        progress: Progress bars.

    Returns:
        A :class:`HeadResult` with the model and its accuracy on the (first ``test_subset``) test images.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    net, feats, labels = _prepare(config, data_root, weights, cache, device, progress)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    log = MetricsLog(out / "metrics.jsonl")
    threads = torch.get_num_threads()
    try:
        if train_threads is not None:
            torch.set_num_threads(check_positive_int(train_threads, "train_threads"))
        records = _fit(net, config, feats, labels, log, torch.device(device), progress)
    finally:
        torch.set_num_threads(threads)
    return _finish(net.cpu().eval(), config, out, records, time.perf_counter() - t_start)


def _prepare(
    config: HeadConfig, data_root: str | os.PathLike[str] | None, weights: str | os.PathLike[str] | None,
    cache: Path, device: str | torch.device, progress: bool,
) -> tuple[WNLLNet, dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
    """Loads backbone and data, computes (or reads) the features, builds the model with its template."""
    backbone = load_pretrained("resnet56", weights=weights, progress=progress)
    x, y, xt, yt = load_splits(data_root, train_subset=config.train_subset, test_subset=config.test_subset)
    sha = ZOO["resnet56"].sha256  # load_pretrained has verified the file against it
    kw: dict[str, Any] = {"cache_dir": cache, "weights_sha256": sha, "device": device, "progress": progress}
    feats = {
        "train": cached_features(backbone, x, **kw).to(device),
        "test": cached_features(backbone, xt, **kw),
    }
    gen = torch.Generator().manual_seed(config.seed)
    t_idx = draw_template_indices(y, config.eval_template_size // NUM_CLASSES, generator=gen,
                                  num_classes=NUM_CLASSES)  # fmt: skip
    feats["template"] = feats["train"][t_idx].cpu()
    net = _build(config, backbone.cpu(), x[t_idx], y[t_idx])
    return net, feats, {"train": y.to(device), "test": yt}


def _fit(
    net: WNLLNet, config: HeadConfig, feats: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
    log: MetricsLog, device: torch.device, progress: bool,
) -> list[dict[str, Any]]:  # fmt: skip
    """The alternating SGD loop; returns the metrics records (epoch 0 = before training)."""
    buffer, _, head = _buffer_parts(net)
    params = [*buffer.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    miles = milestone_epochs(config.lr_milestones, config.epochs)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=miles, gamma=config.lr_gamma)
    gen = torch.Generator().manual_seed(config.seed + 1)
    records: list[dict[str, Any]] = [{"epoch": 0, **_evaluate(net, feats, labels)}]
    log.append(records[-1])
    for epoch in tqdm(range(1, config.epochs + 1), desc="head fine-tune", disable=not progress, leave=False):
        t0 = time.perf_counter()
        record: dict[str, Any] = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
        net.to(device)
        record.update(_epoch(net, opt, config, feats["train"], labels["train"], gen))
        sched.step()
        record["epoch_time_s"] = round(time.perf_counter() - t0, 3)
        record["images_per_s"] = round(labels["train"].shape[0] / max(record["epoch_time_s"], 1e-9), 1)
        if epoch == config.epochs or (config.eval_every and epoch % config.eval_every == 0):
            record.update(_evaluate(net.cpu(), feats, labels))
        log.append(record)
        records.append(record)
    return records


def _finish(net: WNLLNet, config: HeadConfig, out: Path, records: list[dict[str, Any]],
            wall_s: float) -> HeadResult:  # fmt: skip
    for p in net.parameters():
        p.requires_grad_(True)
    final = out / "final.pt"
    atomic_save(net.state_dict(), final)
    last = records[-1]
    zoo = write_zoo_record(
        final, model=net, reference_accuracy=last["test_acc_wnll"], num_blocks=9,
        notes="public ResNet-56 (frozen) + buffer block and heads fine-tuned by wnll_art.train.finetune_head",
        extra={"config": {**dataclasses.asdict(config), "lr_milestones": list(config.lr_milestones)},
               "test_images": "first %s" % (config.test_subset or 10000), "wall_s": round(wall_s, 1)},
    )  # fmt: skip
    return HeadResult(net, last["test_acc_wnll"], records[0]["test_acc_wnll"], last["test_acc_linear"],
                      wall_s, final, zoo, records)  # fmt: skip
