"""Standard CIFAR augmentation on tensors on the training device, driven by an explicit generator.

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018), train their ResNets with the usual CIFAR augmentation of
K. He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2: pad 4 pixels on each
side, take a random 32 x 32 crop, flip horizontally with probability 1/2.

Everything is batched tensor arithmetic (no per-image Python loop, no torchvision), so it runs where the
images are (GPU included). The random draws are made on the generator's device and moved to the images,
so a CPU generator gives the same crops and flips on every device (and its state resumes anywhere).
"""

from __future__ import annotations

import torch

from wnll_art._checks import check_images

__all__ = ["random_crop_flip", "to_unit_float"]


def to_unit_float(images: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (0..255) -> ``dtype`` in [0, 1]; floating images are cast (not rescaled).

    Args:
        images: ``(N, C, H, W)`` uint8 or floating tensor, any device.
        dtype: Floating dtype of the result.

    Returns:
        A new ``(N, C, H, W)`` tensor of ``dtype`` on the same device.
    """
    if images.dtype == torch.uint8:
        return images.to(dtype) / 255.0
    return images.to(dtype)


def random_crop_flip(
    images: torch.Tensor,
    *,
    generator: torch.Generator,
    padding: int = 4,
    flip: bool = True,
    check: bool = True,
) -> torch.Tensor:
    """Zero-pads by ``padding``, crops back to the original size at a random offset, flips at random.

    Per image, the crop offset ``(dy, dx)`` is uniform on ``{0, ..., 2 * padding}^2`` and the flip a fair
    coin, both drawn from ``generator`` (offsets first, then flips), as torchvision's
    ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` do image by image.

    Args:
        images: ``(N, C, H, W)`` float in [0, 1] (checked), on any device; not modified.
        generator: The only source of randomness, on any device (the draws are made there and moved to
            ``images.device``); the same state gives the same output.
        padding: Zero padding on each side (pixels), ``>= 0``.
        flip: Whether to apply the random horizontal flip.
        check: Check that ``images`` are finite and lie in [0, 1] (host reads, a synchronisation on a GPU);
            a training loop whose images are uint8 / 255 can skip it.

    Returns:
        A new ``(N, C, H, W)`` tensor, same dtype and device, values in [0, 1] (padding is black).

    Raises:
        TypeError: If ``generator`` is not a ``torch.Generator`` or ``padding`` not an int.
        ValueError: On bad images or a negative padding.
    """
    if check:
        check_images(images, "images", channels=images.shape[1] if images.ndim == 4 else 3, allow_empty=True)
    elif not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise TypeError("images must be a floating (N, C, H, W) torch.Tensor")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(padding, bool) or not isinstance(padding, int):
        raise TypeError(f"padding must be an int, got {type(padding).__name__}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, _, h, w = images.shape
    dev, gen_dev = images.device, generator.device
    out = images
    if padding > 0 and n > 0:
        padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=gen_dev).to(dev)
        rows = offsets[:, 0, None] + torch.arange(h, device=dev)  # (N, H)
        cols = offsets[:, 1, None] + torch.arange(w, device=dev)  # (N, W)
        batch = torch.arange(n, device=dev)[:, None, None]
        # advanced indexing over (batch, row, col) -> (N, H, W, C); back to NCHW
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip and n > 0:
        flips = (torch.rand(n, generator=generator, device=gen_dev) < 0.5).to(dev)
        out = torch.where(flips[:, None, None, None], out.flip(3), out)
    return out.contiguous() if out is not images else images.clone()
