"""One device story: reproducible algorithms on request, and the device facts every record carries.

PyTorch, "Reproducibility" (docs): ``torch.use_deterministic_algorithms``, ``CUBLAS_WORKSPACE_CONFIG``,
cuDNN benchmarking and TF32 are what decide whether two CUDA runs give the same numbers.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["device_facts", "set_deterministic"]


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
    torch.backends.cuda.matmul.allow_tf32 = not enabled and torch.backends.cuda.matmul.allow_tf32
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
