"""Input validation shared by every public entry point.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape,
range or content) with a message that names the argument, what was expected and what was given.
Nothing here mutates its input.
"""

from __future__ import annotations

import torch

__all__ = [
    "check_images",
    "check_labels",
    "check_finite",
    "check_same_device_dtype",
    "check_positive_int",
]


def check_images(
    x: object,
    name: str = "images",
    *,
    channels: int = 3,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    allow_empty: bool = False,
    atol: float = 0.0,
) -> torch.Tensor:
    """Checks a batch of images in NCHW layout.

    Args:
        x: The candidate batch. Must be a floating-point ``torch.Tensor`` of shape
            ``(N, channels, H, W)``.
        name: Argument name used in error messages.
        channels: Expected number of channels (dimension 1).
        value_range: Inclusive ``(low, high)`` the values must lie in, or ``None`` to skip.
        allow_empty: Whether ``N == 0`` is accepted.
        atol: Slack allowed outside ``value_range`` (floating-point round-off of attacks).

    Returns:
        The same tensor (not copied).

    Raises:
        TypeError: If ``x`` is not a tensor or not floating point.
        ValueError: On wrong rank, channel count (with a hint when the layout looks NHWC),
            empty batch, NaN/inf values or values outside ``value_range``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}"
            " (convert uint8 images with x.float() / 255)"
        )
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        hint = ""
        if x.shape[-1] == channels:
            hint = " (it looks channels-last: permute with x.permute(0, 3, 1, 2))"
        raise ValueError(
            f"{name} must have {channels} channels in dimension 1 (N, C, H, W), "
            f"got shape {tuple(x.shape)}{hint}"
        )
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    check_finite(x, name)
    if value_range is not None and x.numel() > 0:
        low, high = value_range
        # one pass for both bounds, one host read (a device synchronisation on a GPU)
        x_min, x_max = torch.stack(torch.aminmax(x.detach())).tolist()
        if x_min < low - atol or x_max > high + atol:
            raise ValueError(f"{name} must lie in [{low}, {high}], got values in [{x_min:.4g}, {x_max:.4g}]")
    return x


def check_labels(y: object, name: str = "labels", *, num_classes: int | None = None) -> torch.Tensor:
    """Checks a 1-D integer label vector.

    Args:
        y: Candidate labels, an integer ``torch.Tensor`` of shape ``(N,)``.
        name: Argument name used in error messages.
        num_classes: If given, labels must lie in ``[0, num_classes)``.

    Returns:
        The same tensor.

    Raises:
        TypeError: If ``y`` is not an integer tensor.
        ValueError: On wrong rank or out-of-range labels.
    """
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {tuple(y.shape)}")
    if num_classes is not None and y.numel() > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}), got values in [{lo}, {hi}]")
    return y


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raises ``ValueError`` if ``x`` holds NaN or infinite values; returns ``x``."""
    if x.is_floating_point() and x.numel() > 0 and not bool(torch.isfinite(x.detach()).all()):
        n_bad = int((~torch.isfinite(x.detach())).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s)")
    return x


def check_same_device_dtype(*named: tuple[str, torch.Tensor]) -> None:
    """Raises ``ValueError`` unless all tensors share one device and one dtype.

    Args:
        *named: ``(name, tensor)`` pairs.
    """
    if not named:
        return
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first.device}; move them to one device"
            )
        if t.dtype != first.dtype:
            raise ValueError(
                f"{name} has dtype {t.dtype} but {first_name} has dtype {first.dtype}; use one dtype"
            )


def check_positive_int(value: object, name: str) -> int:
    """Returns ``value`` if it is a positive ``int`` (not ``bool``), else raises."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value
