"""One device story: reproducible algorithms on request, and the device facts every record carries.

PyTorch, "Reproducibility" (docs): ``torch.use_deterministic_algorithms``, ``CUBLAS_WORKSPACE_CONFIG``,
cuDNN benchmarking and TF32 are what decide whether two CUDA runs give the same numbers.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Dist",
    "check_device",
    "device_facts",
    "device_problem",
    "library_versions",
    "rank_device",
    "set_deterministic",
]


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


def device_problem(device: str | torch.device, *, cpu_remedy: str) -> str | None:
    """What is wrong with ``device`` on this machine, as text starting with ``repr(device)``; ``None``: usable.

    Usable devices: ``cpu``, and ``cuda`` / ``cuda:N`` when CUDA is available and device ``N`` exists.

    Args:
        device: A device string or ``torch.device``.
        cpu_remedy: How the caller asks for the CPU instead (``"--device cpu"``, ``"device='cpu'"``).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"{device!r} is not a torch device (use cpu, cuda or cuda:N)"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"{device!r}: CUDA is not available on this machine; use {cpu_remedy}"
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"{device!r}: this machine has {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})"
    elif dev.type != "cpu":
        return f"{device!r}: only cpu and cuda devices are supported (cpu, cuda or cuda:N)"
    return None


def check_device(device: object, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` usable here (see :func:`device_problem`), checked before any work.

    Raises:
        TypeError: ``device`` is neither a ``str`` nor a ``torch.device``.
        ValueError: Not a device name, CUDA absent, a CUDA index out of range, or another device type
            (``meta``, ...); the message names ``name``.
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a str or torch.device, got {type(device).__name__} {device!r}")
    problem = device_problem(device, cpu_remedy=f"{name}='cpu'")
    if problem is not None:
        raise ValueError(f"{name}={problem}")
    return torch.device(device)


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


def library_versions() -> dict[str, str]:
    """Versions of everything that can change a number (facts of the machine, like :func:`device_facts`)."""
    import numpy

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    versions["wnll_art"] = sys.modules["wnll_art"].__version__  # the package this module belongs to
    for module in ("art", "foolbox", "eagerpy", "scipy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:  # pragma: no cover - all are dependencies
            versions[module] = "missing"
    return versions


@dataclass
class Dist:
    """Rank, world size and this rank's device; ``torch.distributed`` over gloo when launched by ``torchrun``.

    Only Python objects are exchanged (per-image results, device facts), so gloo serves CPU and CUDA runs
    alike. Under ``torchrun`` a ``"cuda"`` run puts rank ``r`` on ``cuda:{LOCAL_RANK % device_count}``
    (:func:`rank_device`) and makes it the current device, so ``"cuda"`` in the run's
    configuration means this rank's GPU everywhere in the process.

    Attributes:
        rank: This process's rank.
        world: Number of processes.
        device: This rank's device; ``None``: the configured one (single process).
    """

    rank: int = 0
    world: int = 1
    device: str | None = None

    @classmethod
    def from_env(cls, device: str = "cpu") -> Dist:
        """The processes as launched: one (no ``WORLD_SIZE`` > 1) or ``torchrun``'s, joined over gloo."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as tdist

        mine = rank_device(device)
        if mine.startswith("cuda"):
            torch.cuda.set_device(torch.device(mine))
        if not tdist.is_initialized():
            tdist.init_process_group("gloo")
        return cls(tdist.get_rank(), tdist.get_world_size(), mine)

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        import torch.distributed as tdist

        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as tdist

            tdist.barrier()
