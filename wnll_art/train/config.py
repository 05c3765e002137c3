"""Configuration of WNLL training (whole network, or buffer block on frozen features) and its lr schedule.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).

:class:`LoopConfig` holds what the one training loop (:mod:`wnll_art.train.loop`) needs;
:class:`TrainConfig` (``mode = "full"``) and :class:`HeadConfig` (``mode = "head"``) add what only one
mode uses and set that mode's defaults.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

from wnll_art._checks import check_positive_int
from wnll_art.tvm.settings import TVMSettings

__all__ = ["DataMode", "HeadConfig", "LoopConfig", "Mode", "TrainConfig", "lr_factor", "milestone_epochs"]

DataMode = Literal["original", "tvm", "original+tvm"]
Mode = Literal["full", "head"]
Schedule = Literal["step", "authors"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Settings of both training modes (recorded in every checkpoint; resume checks them).

    Schedule. Default: the standard CIFAR ResNet recipe (He et al. 2016, as used by most public CIFAR
    ResNet-56 checkpoints): SGD, momentum 0.9, weight decay 5e-4, batch 128, lr 0.1 divided by 10 after
    50 % and 75 % of 200 epochs. We could not confirm a schedule stated in the paper itself; the authors'
    public code (BaoWangMath/DNN-DataDependentActivation, ``TrainWNLLDNN.py``) runs lr 0.1 for 80
    epochs and then ``0.1 * 0.5 ** (epoch // 40)`` (momentum 0.9, wd 5e-4, batch 128), restarted at a
    smaller lr in a second 200-epoch outer loop; ``lr_schedule="authors"`` reproduces one such loop.

    Attributes:
        data: ``"original"``, ``"tvm"`` (TVM-purified training images) or ``"original+tvm"`` (both).
        tvm: TVM of the training images in the TVM data modes (default Guo et al.'s setting, the one
            the evaluation purifies with); the masks are drawn from ``seed``.
        epochs: Training epochs.
        batch_size: Training points per step, ``>= 2`` (the last partial batch of an epoch is dropped).
        lr: Initial learning rate, finite, ``> 0``.
        momentum: SGD momentum in ``[0, 1)``.
        weight_decay: L2 weight decay of the trained parameters, ``>= 0``.
        nesterov: Nesterov momentum.
        lr_schedule: ``"step"`` (multiply by ``lr_gamma`` at ``lr_milestones``) or ``"authors"``.
        lr_milestones: Fractions of ``epochs`` in ``(0, 1)`` after which the step schedule decays.
        lr_gamma: Decay factor of the step schedule, in ``(0, 1]``.
        gradient: WNLL-step gradient, ``"surrogate"`` (straight through the linear head) or ``"exact"``.
        wnll_every: A WNLL step follows every ``wnll_every``-th linear step.
        wnll_weight: Factor on the WNLL loss, ``>= 0``.
        train_template_size: Template of each WNLL training step (balanced, drawn from the training
            pool, the batch and its TVM copies excluded); a multiple of the model's class count.
        eval_template_size: Template of the trained model (balanced, drawn with ``seed`` from the
            training pool, TVM copies included in the TVM data modes); a multiple of the class count.
        wnll_batch_size: Transductive chunk size of the trained model (and of every evaluation).
        buffer_dim: Width of the FC+ReLU buffer block.
        k: Neighbours of the WNLL kNN graph.
        sigma_neighbor: Neighbour setting the Gaussian scale.
        kernel: ``"gaussian"`` or ``"quartic"``.
        seed: Seed of every generator (initialisation, templates, shuffling, augmentation, TVM masks).
        train_subset: Use only the first ``n`` training images; ``None``: all 50,000.
        test_subset: Evaluate on the first ``n`` test images; ``None``: all 10,000.
        eval_every: Linear and WNLL test accuracy every ``n`` epochs and before training (0: never).
        final_eval: Measure the WNLL test accuracy of the final model (the zoo reference accuracy).
    """

    mode: ClassVar[Mode]

    data: DataMode = "original"
    tvm: TVMSettings = dataclasses.field(default_factory=TVMSettings)
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    lr_schedule: Schedule = "step"
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.1
    gradient: Literal["surrogate", "exact"] = "surrogate"
    wnll_every: int = 1
    wnll_weight: float = 1.0
    train_template_size: int = 500
    eval_template_size: int = 500
    wnll_batch_size: int = 500
    buffer_dim: int = 64
    k: int = 15
    sigma_neighbor: int = 8
    kernel: Literal["gaussian", "quartic"] = "gaussian"
    seed: int = 0
    train_subset: int | None = None
    test_subset: int | None = None
    eval_every: int = 1
    final_eval: bool = True

    def __post_init__(self) -> None:
        if not hasattr(self, "mode"):
            raise TypeError(
                "LoopConfig is the shared part; create a TrainConfig (full) or a HeadConfig (head)"
            )
        _check_choice(self.data, "data", ("original", "tvm", "original+tvm"))
        _check_choice(self.gradient, "gradient", ("surrogate", "exact"))
        _check_choice(self.lr_schedule, "lr_schedule", ("step", "authors"))
        _check_choice(self.kernel, "kernel", ("gaussian", "quartic"))
        if not isinstance(self.tvm, TVMSettings):
            raise TypeError(f"tvm must be a TVMSettings, got {type(self.tvm).__name__}")
        for name in ("epochs", "batch_size", "wnll_every", "train_template_size", "eval_template_size",
                     "wnll_batch_size", "buffer_dim", "k", "sigma_neighbor"):  # fmt: skip
            check_positive_int(getattr(self, name), name)
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be an int >= 0, got {self.eval_every!r}")
        _check_float(self.lr, "lr", low=0.0, low_open=True)
        _check_float(self.momentum, "momentum", low=0.0, high=1.0)
        _check_float(self.weight_decay, "weight_decay", low=0.0)
        _check_float(self.wnll_weight, "wnll_weight", low=0.0)
        _check_float(self.lr_gamma, "lr_gamma", low=0.0, low_open=True, high=1.0, high_closed=True)
        if any(not 0.0 < f < 1.0 for f in self.lr_milestones):
            raise ValueError(f"lr_milestones must be fractions in (0, 1), got {self.lr_milestones}")

    def check_classes(self, num_classes: int) -> None:
        """Raises ``ValueError`` unless both template sizes are multiples of ``num_classes`` (the model's)."""
        for name in ("train_template_size", "eval_template_size"):
            size = getattr(self, name)
            if size % num_classes:
                raise ValueError(
                    f"{name}={size} is not a multiple of the model's {num_classes} classes "
                    f"(balanced templates); use e.g. {max(1, round(size / num_classes)) * num_classes}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: every field, ``mode``, the TVM settings whole (``to_dict()``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(mode=self.mode, lr_milestones=list(self.lr_milestones), tvm=self.tvm.to_dict())
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopConfig:
        """Inverse of :meth:`to_dict` (called on :class:`LoopConfig`, ``mode`` picks the class)."""
        data = dict(data)
        mode = data.pop("mode", "full")
        target = {"full": TrainConfig, "head": HeadConfig}.get(mode)
        if target is None or not issubclass(target, cls):
            raise ValueError(f"mode {mode!r} does not name a {cls.__name__}")
        data["lr_milestones"] = tuple(data.get("lr_milestones", (0.5, 0.75)))
        data["tvm"] = TVMSettings.from_dict(data.get("tvm", {}))
        return target(**data)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(LoopConfig):
    """Full training: the whole network (ResNet + buffer block + heads) on images (GPU advised).

    Attributes (besides :class:`LoopConfig`'s):
        num_blocks: BasicBlocks per stage of the backbone (9: ResNet-56; 1 for quick tests).
        augment: Random crop (4-pixel padding) + horizontal flip of every training batch.
        bf16: bfloat16 autocast of the network forward (CUDA only; a no-op on CPU). The WNLL solve
            always runs in float32.
        channels_last: channels-last memory format (CUDA only; a no-op on CPU).
        data_on_device: Keep the whole uint8 training set on the GPU (CUDA only; a no-op on CPU).
    """

    mode: ClassVar[Mode] = "full"

    num_blocks: int = 9
    augment: bool = True
    bf16: bool = False
    channels_last: bool = False
    data_on_device: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.num_blocks, "num_blocks")


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadConfig(LoopConfig):
    """Head fine-tune: only the buffer block and heads, on cached features of the frozen pretrained
    ResNet-56 (minutes on a CPU). Each training image has one feature vector: no augmentation.

    Attributes (besides :class:`LoopConfig`'s, whose ``epochs`` and ``lr`` defaults differ here):
        buffer_init: ``"identity"`` (buffer = identity, which ReLU keeps on the non-negative pooled
            features, and linear head = the pretrained one, so training starts from the pretrained
            classifier; needs ``buffer_dim`` = feature width) or ``"random"``.
    """

    mode: ClassVar[Mode] = "head"

    epochs: int = 6
    lr: float = 0.01
    buffer_init: Literal["identity", "random"] = "identity"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice(self.buffer_init, "buffer_init", ("identity", "random"))


def lr_factor(epoch: int, config: LoopConfig) -> float:
    """Multiplier of ``config.lr`` during (0-based) ``epoch``.

    ``"step"``: ``lr_gamma ** (number of milestone epochs <= epoch)`` (see :func:`milestone_epochs`).
    ``"authors"``: 1 for the first 80 epochs, then ``0.5 ** (epoch // 40)`` (0.25 from epoch 80, ...).
    """
    if config.lr_schedule == "authors":
        return 1.0 if epoch < 80 else 0.5 ** (epoch // 40)
    passed = sum(1 for m in milestone_epochs(config.lr_milestones, config.epochs) if epoch >= m)
    return config.lr_gamma**passed


def milestone_epochs(fractions: tuple[float, ...], epochs: int) -> list[int]:
    """0-based epochs from which each decay applies: ``max(1, round(f * epochs))`` (never the first)."""
    return sorted(max(1, round(f * epochs)) for f in fractions)


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_float(
    value: object, name: str, *, low: float, low_open: bool = False, high: float = math.inf,
    high_closed: bool = False,
) -> None:  # fmt: skip
    """Raises unless ``value`` is a finite real number in the given interval."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    above = value > low if low_open else value >= low
    below = value <= high if high_closed else value < high
    if not math.isfinite(value) or not (above and below):
        lo, hi = "(" if low_open else "[", "]" if high_closed else ")"
        raise ValueError(f"{name} must be a finite number in {lo}{low:g}, {high:g}{hi}, got {value!r}")
