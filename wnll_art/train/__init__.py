"""Training WNLL networks (Wang et al. 2018, arXiv:1809.08516): the whole network, or its head on a CPU.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).

* :func:`train` with a :class:`TrainConfig`: ResNet-56 + buffer block + linear and WNLL heads, trained by
  alternating linear and WNLL steps on original, TVM-purified or both kinds of training images.
* :func:`train` with a :class:`HeadConfig`: only the buffer block and heads, on cached features of the
  frozen pretrained ResNet-56 (minutes on a CPU).
* Both run the same loop (:mod:`wnll_art.train.loop`) with exact-resume checkpoints, a JSON-lines metrics
  log and a model-zoo record of the result; accuracies are fractions in [0, 1].
* :func:`zoo_entry_from_record`: a :class:`wnll_art.zoo.ZooEntry` for trained weights.
"""

from __future__ import annotations

from wnll_art.train.augment import random_crop_flip
from wnll_art.train.caches import cached_features, tvm_images
from wnll_art.train.checkpoint import build_wnll_resnet, write_zoo_record, zoo_entry_from_record
from wnll_art.train.config import HeadConfig, LoopConfig, TrainConfig, lr_factor
from wnll_art.train.recipe import TrainResult, train

__all__ = [
    "HeadConfig",
    "LoopConfig",
    "TrainConfig",
    "TrainResult",
    "build_wnll_resnet",
    "cached_features",
    "lr_factor",
    "random_crop_flip",
    "train",
    "tvm_images",
    "write_zoo_record",
    "zoo_entry_from_record",
]
