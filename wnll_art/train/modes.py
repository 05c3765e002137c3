"""What the two training modes differ in: the model, what the loop iterates over, which parameters train.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018), Sec. 3: a
backbone, an FC+ReLU buffer block, and parallel linear and WNLL heads.

* ``"full"`` (:class:`TrainConfig`): a CIFAR ResNet (random or given initial weights) trained whole, on
  augmented images.
* ``"head"`` (:class:`HeadConfig`): the frozen pretrained ResNet-56; only the buffer block and heads
  train, on its cached features (computed once, a few minutes on two CPU cores; each image has one
  feature vector, so no augmentation).

Everything that can fail on user input (weights, class count, data size) is checked here before
anything is written.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wnll_art.data import CIFAR10_CLASSES
from wnll_art.models.resnet import CifarResNet
from wnll_art.train.augment import random_crop_flip, to_unit_float
from wnll_art.train.caches import TVMFunction, cached_features
from wnll_art.train.checkpoint import with_placeholder_template
from wnll_art.train.config import HeadConfig, LoopConfig, TrainConfig
from wnll_art.train.data import TrainingData, training_data
from wnll_art.train.steps import Autocast, draw_template_indices, take
from wnll_art.wnll.model import WNLLNet
from wnll_art.zoo import ZOO, load_pretrained, load_state_dict_file

__all__ = ["Pool", "Setup", "prepare"]


@dataclass(frozen=True)
class Pool:
    """The training set as the loop iterates over it.

    Attributes:
        inputs: ``(N, ...)`` uint8 images (full mode) or float32 backbone features (head mode), on the
            CPU or the training device.
        labels: ``(N,)`` int64 labels, CPU.
        source: ``(N,)`` int64 CPU index of the original image of each row (TVM copies share it).
        augment: Random crop + flip of every batch (images only).
        channels_last: Batches in channels-last memory format.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    source: torch.Tensor
    augment: bool = False
    channels_last: bool = False

    def batch(self, index: torch.Tensor, *, device: torch.device, generator: torch.Generator) -> torch.Tensor:
        """Float32 rows ``index`` on ``device`` (images in [0, 1]), augmented with ``generator``."""
        x = to_unit_float(take(self.inputs, index).to(device, non_blocking=True))
        if self.augment:
            x = random_crop_flip(x, generator=generator)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


@dataclass(frozen=True)
class Setup:
    """A model ready to train on ``device`` and what the loop needs about it.

    Attributes:
        net: The :class:`WNLLNet` (its template drawn from the pool), on the training device.
        embed: Pool rows -> ``(B, D)`` WNLL features (``net.embed`` or ``net.buffer``).
        params: The parameters that train.
        pool: The training pool.
        test_inputs: ``(T, ...)`` test inputs of the kind of ``pool.inputs`` (CPU or device).
        test_labels: ``(T,)`` int64 CPU test labels.
        template_inputs: ``(M, ...)`` inputs of ``net``'s template, of the kind of ``pool.inputs``.
        device: The training device.
        autocast: Mixed-precision context of the forward passes of training.
    """

    net: WNLLNet
    embed: Callable[[torch.Tensor], torch.Tensor]
    params: list[nn.Parameter]
    pool: Pool
    test_inputs: torch.Tensor
    test_labels: torch.Tensor
    template_inputs: torch.Tensor
    device: torch.device
    autocast: Autocast


def prepare(
    config: LoopConfig,
    *,
    data_root: str | os.PathLike[str] | None,
    weights: str | os.PathLike[str] | None,
    cache_dir: Path,
    device: torch.device,
    tvm_fn: TVMFunction | None,
    progress: bool,
) -> Setup:
    """Builds the model of ``config``'s mode (seeded from ``config.seed``), loads the data, fills caches.

    Args:
        config: :class:`TrainConfig` (full) or :class:`HeadConfig` (head).
        data_root: CIFAR-10 root.
        weights: Backbone weights: full mode's initialisation (default random), head mode's frozen
            pretrained ResNet-56 (sha256-checked; default the hub cache).
        cache_dir: Directory of the TVM and feature caches (the first thing written).
        device: Training device.
        tvm_fn: TVM function of the TVM data modes (default the library's).
        progress: Progress bars.

    Raises:
        ValueError: Template sizes that are not multiples of the model's class count, subsets larger
            than the data, unreadable weights.
        FileNotFoundError: Missing weights or data.
    """
    if isinstance(config, HeadConfig):
        net = _head_net(config, weights, progress)
    elif isinstance(config, TrainConfig):
        net = _full_net(config, weights)
    else:
        raise TypeError(f"config must be a TrainConfig or a HeadConfig, got {type(config).__name__}")
    data = training_data(config, data_root=data_root, cache_dir=cache_dir, tvm_fn=tvm_fn, device=device,
                         progress=progress)  # fmt: skip
    gen = torch.Generator().manual_seed(config.seed)
    t_idx = draw_template_indices(data.labels, config.eval_template_size // net.num_classes, generator=gen,
                                  num_classes=net.num_classes)  # fmt: skip
    with torch.no_grad():
        net.template_images.copy_(to_unit_float(data.images[t_idx]))
        net.template_labels.copy_(data.labels[t_idx])
    if isinstance(config, HeadConfig):
        return _head_setup(net, data, t_idx, cache_dir, device, progress)
    return _full_setup(net, data, config, device)


def _wnll_net(backbone: nn.Module, config: LoopConfig) -> WNLLNet:
    """``backbone`` + a seeded buffer block and heads, after checking the template sizes against it."""
    config.check_classes(int(backbone.linear.out_features))  # type: ignore[union-attr, arg-type]
    return with_placeholder_template(
        backbone, template_size=config.eval_template_size, buffer_dim=config.buffer_dim,
        gradient=config.gradient, wnll_batch_size=config.wnll_batch_size, k=config.k,
        sigma_neighbor=config.sigma_neighbor, kernel=config.kernel,
    )  # fmt: skip


def _full_net(config: TrainConfig, weights: str | os.PathLike[str] | None) -> WNLLNet:
    path = None if weights is None else Path(weights)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = None if path is None else load_state_dict_file(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = CifarResNet(config.num_blocks, len(CIFAR10_CLASSES), check_inputs=False)
        net = _wnll_net(backbone, config)
    if state is not None:
        for key, value in backbone.state_dict().items():  # the public checkpoint predates num_batches_tracked
            if key.endswith("num_batches_tracked"):
                state.setdefault(key, torch.zeros_like(value))
        try:
            backbone.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"{path} does not fit the backbone (num_blocks={config.num_blocks}?): {exc}"
            ) from exc
    return net


def _head_net(config: HeadConfig, weights: str | os.PathLike[str] | None, progress: bool) -> WNLLNet:
    with torch.random.fork_rng(devices=[]):
        backbone = load_pretrained("resnet56", weights=weights, progress=progress)
        torch.manual_seed(config.seed)
        net = _wnll_net(backbone, config)
    buffer, head = net.buffer, net.buffer_head
    if config.buffer_init == "identity" and buffer is not None and head is not None:
        fc: nn.Linear = buffer[0]  # type: ignore[index, assignment]
        if fc.in_features != config.buffer_dim:
            raise ValueError(f"buffer_init='identity' needs buffer_dim = the feature width {fc.in_features}")
        with torch.no_grad():
            fc.weight.copy_(torch.eye(config.buffer_dim))
            fc.bias.zero_()
            head.load_state_dict(backbone.linear.state_dict())  # type: ignore[union-attr, operator]
    return net


def _full_setup(net: WNLLNet, data: TrainingData, config: TrainConfig, device: torch.device) -> Setup:
    cuda = device.type == "cuda"
    net = net.to(device)
    if config.channels_last and cuda:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    params = [p for n, p in net.named_parameters() if not n.startswith("backbone.linear.")]
    images = data.images.to(device) if config.data_on_device and cuda else data.images
    pool = Pool(
        images, data.labels, data.source, augment=config.augment, channels_last=config.channels_last and cuda
    )
    autocast: Any = nullcontext
    if config.bf16 and cuda:
        autocast = functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    return Setup(net, net.embed, params, pool, data.test_images, data.test_labels, net.template_images,
                 device, autocast)  # fmt: skip


def _head_setup(
    net: WNLLNet,
    data: TrainingData,
    t_idx: torch.Tensor,
    cache_dir: Path,
    device: torch.device,
    progress: bool,
) -> Setup:
    sha = ZOO["resnet56"].sha256  # load_pretrained has verified the weights file against it
    kw: dict[str, Any] = {
        "cache_dir": cache_dir,
        "weights_sha256": sha,
        "device": device,
        "progress": progress,
    }
    feats = cached_features(net.backbone, data.images, **kw).to(device)
    test_feats = cached_features(net.backbone, data.test_images, **kw).to(device)
    net = net.to(device)
    buffer, head = net.buffer, net.buffer_head
    if buffer is None or head is None:
        raise ValueError("head mode needs a buffer block (buffer_dim)")
    params = [*buffer.parameters(), *head.parameters()]
    return Setup(net, buffer, params, Pool(feats, data.labels, data.source), test_feats, data.test_labels,
                 take(feats, t_idx), device, nullcontext)  # fmt: skip
