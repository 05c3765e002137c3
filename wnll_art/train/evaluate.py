"""Test accuracy of the linear head and of the WNLL head of a :class:`WNLLNet` during and after training.

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018): at test time the WNLL head labels the test images in transductive
batches solved together with a labelled template from the training set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wnll_art.train.augment import to_unit_float
from wnll_art.wnll.model import WNLLNet

__all__ = ["evaluate_heads"]


def evaluate_heads(
    net: WNLLNet,
    embed: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    template_inputs: torch.Tensor,
    device: torch.device,
) -> dict[str, float]:
    """Top-1 accuracies of both heads, as fractions in [0, 1]; the model is left in the mode it was in.

    The WNLL head computes what ``net(x)`` computes (eval mode, float32, no autocast): the inputs are
    embedded and solved in chunks of ``net.wnll_batch_size`` against the template, itself embedded in
    chunks of that size. Given the backbone features of images and template (head mode), ``embed`` =
    ``net.buffer`` does the same without running the backbone.

    Args:
        net: The model, on ``device``.
        embed: Inputs -> ``(n, D)`` WNLL features (``net.embed`` on images, ``net.buffer`` on features).
        inputs: ``(N, ...)`` test inputs: uint8 (or float in [0, 1]) images, or float features; any device.
        labels: ``(N,)`` int64 labels, any device.
        template_inputs: ``(M, ...)`` inputs of ``net``'s template (``net.template_images`` or their
            features), rows in the order of ``net.template_labels``.
        device: Where ``net`` is.

    Returns:
        ``{"test_acc_linear": ..., "test_acc_wnll": ...}``.
    """
    was_training = net.training
    net.eval()
    step = net.wnll_batch_size
    correct_linear = correct_wnll = 0
    with torch.inference_mode():
        template = torch.cat([_embed(embed, template_inputs[i : i + step], device)
                              for i in range(0, template_inputs.shape[0], step)])  # fmt: skip
        for i in range(0, inputs.shape[0], step):
            feats = _embed(embed, inputs[i : i + step], device)
            y = labels[i : i + step].to(device)
            correct_linear += int((net.linear_head(feats).argmax(1) == y).sum())
            correct_wnll += int((net.interpolate(feats, template).argmax(1) == y).sum())
    net.train(was_training)
    n = max(inputs.shape[0], 1)
    return {"test_acc_linear": correct_linear / n, "test_acc_wnll": correct_wnll / n}


def _embed(
    embed: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device
) -> torch.Tensor:
    return embed(to_unit_float(x.to(device)))
