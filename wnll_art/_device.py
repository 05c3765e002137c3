"""One device story: reproducible algorithms on request, and the device facts every record carries.

PyTorch, "Reproducibility" (docs): ``torch.use_deterministic_algorithms``, ``CUBLAS_WORKSPACE_CONFIG``,
cuDNN benchmarking and TF32 are what decide whether two CUDA runs give the same numbers.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["device_facts", "rank_device", "set_deterministic"]


def set_deterministic(enabled: bool = True) -> None:
    """Makes PyTorch use deterministic kernels (and no TF32) from now on, or restores the defaults.

    Sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in this process's environment when it is unset (cuBLAS needs
    it before its first call), turns cuDNN benchmarking off, and turns TF32 off for matmuls and
    convolutions; an op without a deterministic kernel then raises instead of running.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled
    if enabled:  # PyTorch's default for matmuls is already off; only deterministic mode forces it
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = not enabled


def device_facts(device: torch.device | str) -> dict[str, Any]:
    """What decides the numbers on ``device``: versions, GPU name, TF32 and determinism flags."""
    dev = torch.device(device)
    facts: dict[str, Any] = {
        "device": str(dev),
        "torch": torch.__version__,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "num_threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        facts.update({
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "gpu": torch.cuda.get_device_name(index),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        })  # fmt: skip
    return facts


def rank_device(device: str, *, local_rank: int | None = None, device_count: int | None = None) -> str:
    """The device of this process: under ``torchrun``, ``"cuda"`` means ``cuda:{LOCAL_RANK}``.

    Every process of ``torchrun --nproc_per_node W`` otherwise takes ``cuda:0`` (NCCL then aborts with
    "Duplicate GPU"; the evaluation gathers Python objects only, over gloo). The index is taken modulo the
    device count, so more processes than GPUs share them round-robin. An explicit index (``"cuda:1"``) and
    ``"cpu"`` are kept as given.

    Args:
        device: The configured device (``"cpu"``, ``"cuda"`` or ``"cuda:N"``).
        local_rank: The process's rank on this machine; default ``$LOCAL_RANK`` (``None`` when unset:
            not launched by ``torchrun``, ``device`` is kept).
        device_count: CUDA devices to spread over; default ``torch.cuda.device_count()``.

    Returns:
        The device string this process computes on.
    """
    dev = torch.device(device)
    if local_rank is None and "LOCAL_RANK" in os.environ:
        local_rank = int(os.environ["LOCAL_RANK"])
    if dev.type != "cuda" or dev.index is not None or local_rank is None:
        return device
    count = torch.cuda.device_count() if device_count is None else device_count
    if count < 1:
        raise ValueError(f"device {device!r}: no CUDA device is visible to this process (rank {local_rank})")
    return f"cuda:{local_rank % count}"
