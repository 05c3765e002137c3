"""Training WNLL networks (Wang et al. 2018, arXiv:1809.08516): full training and a CPU head fine-tune.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).

* :func:`train` / :class:`TrainConfig`: ResNet-56 + buffer block + linear and WNLL heads, trained by
  alternating linear and WNLL steps on original, TVM-purified or both kinds of training images, with
  exact-resume checkpoints, a JSON-lines metrics log and a model-zoo record of the result.
* :func:`finetune_head` / :class:`HeadConfig`: only the buffer block and heads, on cached features of
  the pretrained ResNet-56 (minutes on a CPU).
* :func:`zoo_entry_from_record`: a :class:`wnll_art.zoo.ZooEntry` for trained weights.
"""

from __future__ import annotations

from wnll_art.train.augment import random_crop_flip
from wnll_art.train.checkpoint import build_wnll_resnet, write_zoo_record, zoo_entry_from_record
from wnll_art.train.config import TrainConfig, lr_factor
from wnll_art.train.head_finetune import HeadConfig, HeadResult, cached_features, finetune_head
from wnll_art.train.recipe import TrainResult, train
from wnll_art.train.tvm_cache import TVMSettings, tvm_images

__all__ = [
    "HeadConfig",
    "HeadResult",
    "TVMSettings",
    "TrainConfig",
    "TrainResult",
    "build_wnll_resnet",
    "cached_features",
    "finetune_head",
    "lr_factor",
    "random_crop_flip",
    "train",
    "tvm_images",
    "write_zoo_record",
    "zoo_entry_from_record",
]
