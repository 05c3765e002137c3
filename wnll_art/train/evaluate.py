"""Test-set accuracy of the linear head and of the WNLL head of a :class:`WNLLNet`.

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018): at test time the WNLL head labels the test images in transductive
batches solved together with a labelled template from the training set.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from tqdm.auto import tqdm

from wnll_art.train.augment import to_unit_float
from wnll_art.wnll.model import WNLLNet

__all__ = ["linear_accuracy", "wnll_accuracy", "wnll_accuracy_from_features"]


def linear_accuracy(
    net: WNLLNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> float:
    """Top-1 accuracy (%) of the linear head; the model is left in the mode it was in.

    Args:
        net: The model (on ``device``).
        images: ``(N, 3, H, W)`` uint8 (or float in [0, 1]) CPU images.
        labels: ``(N,)`` int64 labels.
        device: Where the model is.
        batch_size: Images per forward pass.
        autocast: Mixed-precision context factory.
    """
    was_training = net.training
    net.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, images.shape[0], batch_size):
            x = to_unit_float(images[i : i + batch_size]).to(device)
            with autocast():
                pred = net.linear_logits(x).argmax(1).cpu()
            correct += int((pred == labels[i : i + batch_size]).sum())
    net.train(was_training)
    return 100.0 * correct / max(images.shape[0], 1)


def wnll_accuracy(
    net: WNLLNet, images: torch.Tensor, labels: torch.Tensor, *, progress: bool = False
) -> float:
    """Top-1 accuracy (%) of ``net(x)`` (the WNLL head) over the images, in calls of ``net.wnll_batch_size``.

    Args:
        net: The model on CPU (put in eval mode).
        images: ``(N, 3, H, W)`` uint8 (or float in [0, 1]) CPU images.
        labels: ``(N,)`` int64 labels.
        progress: Show a progress bar.
    """
    net.eval()
    step = net.wnll_batch_size
    correct = 0
    with torch.inference_mode():
        for i in tqdm(range(0, images.shape[0], step), desc="WNLL test", disable=not progress, leave=False):
            pred = net(to_unit_float(images[i : i + step])).argmax(1)
            correct += int((pred == labels[i : i + step]).sum())
    return 100.0 * correct / max(images.shape[0], 1)


def wnll_accuracy_from_features(
    net: WNLLNet, features: torch.Tensor, labels: torch.Tensor, template_features: torch.Tensor
) -> float:
    """WNLL accuracy (%) from precomputed backbone features: the same function as ``net(x)``.

    ``net(x)`` embeds ``x`` as ``buffer(backbone.features(x))`` and solves it, in chunks of
    ``net.wnll_batch_size``, against the embedded template; given ``backbone.features`` of the inputs
    and of the template images, this does the same without running the backbone.

    Args:
        net: A model with a buffer block (eval mode, CPU).
        features: ``(N, D)`` float32 backbone features of the test images.
        labels: ``(N,)`` int64 labels.
        template_features: ``(M, D)`` backbone features of ``net.template_images``.
    """
    if net.buffer is None:
        raise ValueError("net has no buffer block (buffer_dim=None)")
    net.eval()
    with torch.inference_mode():
        u = net.interpolate(net.buffer(features), net.buffer(template_features))
    return 100.0 * int((u.argmax(1) == labels).sum()) / max(labels.shape[0], 1)
