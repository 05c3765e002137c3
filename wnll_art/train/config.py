"""Configuration of WNLL training (full network) and its learning-rate schedule.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from wnll_art._checks import check_positive_int
from wnll_art.train.tvm_cache import TVMSettings

__all__ = ["DataMode", "TrainConfig", "lr_factor", "milestone_epochs"]

DataMode = Literal["original", "tvm", "original+tvm"]
Schedule = Literal["step", "authors"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded in every checkpoint; resume checks it).

    Schedule. Default: the standard CIFAR ResNet recipe (He et al. 2016, as used by most public CIFAR
    ResNet-56 checkpoints): SGD, momentum 0.9, weight decay 5e-4, batch 128, lr 0.1 divided by 10 after
    50 % and 75 % of 200 epochs. We could not confirm a schedule stated in the paper itself; the authors'
    public code (BaoWangMath/DNN-DataDependentActivation, ``TrainWNLLDNN.py``) runs lr 0.1 for 80
    epochs and then ``0.1 * 0.5 ** (epoch // 40)`` (momentum 0.9, wd 5e-4, batch 128), restarted at a
    smaller lr in a second 200-epoch outer loop; ``lr_schedule="authors"`` reproduces one such loop.

    Attributes:
        data: ``"original"``, ``"tvm"`` (TVM-purified training images) or ``"original+tvm"`` (both).
        epochs: Training epochs ``N``.
        batch_size: Images per step (the last partial batch of an epoch is dropped).
        lr: Initial learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay (all parameters).
        nesterov: Nesterov momentum.
        lr_schedule: ``"step"`` (divide by ``1 / lr_gamma`` at ``lr_milestones``) or ``"authors"``.
        lr_milestones: Fractions of ``epochs`` after which the step schedule decays.
        lr_gamma: Decay factor of the step schedule.
        gradient: WNLL-step gradient, ``"surrogate"`` (straight through the linear head) or ``"exact"``.
        wnll_every: A WNLL step follows every ``wnll_every``-th linear step.
        wnll_weight: Factor on the WNLL loss.
        train_template_size: Template size of each WNLL training step (balanced, from the training set,
            the batch excluded).
        eval_template_size: Template size of the trained model (balanced, drawn with ``seed`` from the
            training pool, TVM copies included in the TVM data modes).
        wnll_batch_size: Transductive chunk size of the trained model (and of the final evaluation).
        buffer_dim: Width of the FC+ReLU buffer block.
        k: Neighbours of the WNLL kNN graph.
        sigma_neighbor: Neighbour setting the Gaussian scale.
        kernel: ``"gaussian"`` or ``"quartic"``.
        num_blocks: BasicBlocks per stage of the backbone (9: ResNet-56; 1 for quick tests).
        augment: Random crop (4-pixel padding) + horizontal flip.
        seed: Seed of every generator (initialisation, shuffling, templates, augmentation).
        train_subset: Use only the first ``n`` training images (smoke tests); ``None``: all.
        test_subset: Evaluate on the first ``n`` test images; ``None``: all 10,000.
        eval_every: Linear-head test accuracy every ``n`` epochs (0: never).
        final_eval: Measure the WNLL test accuracy of the final model (the zoo reference accuracy).
        tvm: TVM settings (data modes with TVM).
        bf16: bfloat16 autocast of the network forward (CUDA only; a no-op on CPU).
        channels_last: channels-last memory format (CUDA only; a no-op on CPU).
        data_on_device: Keep the whole uint8 training set on the GPU (CUDA only; a no-op on CPU).
    """

    data: DataMode = "original"
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
    num_blocks: int = 9
    augment: bool = True
    seed: int = 0
    train_subset: int | None = None
    test_subset: int | None = None
    eval_every: int = 1
    final_eval: bool = True
    tvm: TVMSettings = dataclasses.field(default_factory=TVMSettings)
    bf16: bool = False
    channels_last: bool = False
    data_on_device: bool = True

    def __post_init__(self) -> None:
        if self.data not in ("original", "tvm", "original+tvm"):
            raise ValueError(f"data must be 'original', 'tvm' or 'original+tvm', got {self.data!r}")
        if self.gradient not in ("surrogate", "exact"):
            raise ValueError(f"gradient must be 'surrogate' or 'exact', got {self.gradient!r}")
        if self.lr_schedule not in ("step", "authors"):
            raise ValueError(f"lr_schedule must be 'step' or 'authors', got {self.lr_schedule!r}")
        for name in ("epochs", "batch_size", "wnll_every", "train_template_size", "eval_template_size",
                     "wnll_batch_size", "buffer_dim", "num_blocks"):  # fmt: skip
            check_positive_int(getattr(self, name), name)
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if any(not 0.0 < f < 1.0 for f in self.lr_milestones):
            raise ValueError(f"lr_milestones must be fractions in (0, 1), got {self.lr_milestones}")
        if self.lr <= 0 or self.eval_every < 0 or self.wnll_weight < 0:
            raise ValueError("lr must be > 0, eval_every and wnll_weight >= 0")
        for name in ("train_template_size", "eval_template_size"):
            if getattr(self, name) % 10:
                raise ValueError(f"{name} must be a multiple of the 10 classes, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["lr_milestones"] = tuple(data.get("lr_milestones", (0.5, 0.75)))
        data["tvm"] = TVMSettings(**data.get("tvm", {}))
        return cls(**data)


def lr_factor(epoch: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` during (0-based) ``epoch``.

    ``"step"``: ``lr_gamma ** (number of milestone epochs <= epoch)`` (see :func:`milestone_epochs`). ``"authors"``: 1 for
    the first 80 epochs, then ``0.5 ** (epoch // 40)`` (0.25 from epoch 80, 0.125 from 120, ...).
    """
    if config.lr_schedule == "authors":
        return 1.0 if epoch < 80 else 0.5 ** (epoch // 40)
    passed = sum(1 for m in milestone_epochs(config.lr_milestones, config.epochs) if epoch >= m)
    return config.lr_gamma**passed


def milestone_epochs(fractions: tuple[float, ...], epochs: int) -> list[int]:
    """0-based epochs from which each decay applies: ``max(1, round(f * epochs))`` (never the first)."""
    return sorted(max(1, round(f * epochs)) for f in fractions)
