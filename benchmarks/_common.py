"""Helpers shared by the benchmark scripts: real data when available, interleaved median timing."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def load_test_images(n: int, data_root: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` CIFAR-10 test images in [0, 1], or random images if no data root is found."""
    from wnll_art import load_cifar10

    try:
        x, y = load_cifar10(data_root, split="test")
        return x[:n].float() / 255, y[:n], "CIFAR-10 test"
    except (FileNotFoundError, ValueError) as exc:
        print(f"(no CIFAR-10: {exc}; timing on random images)")
        gen = torch.Generator().manual_seed(0)
        return torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen), "random"


def synchronize(device: torch.device | str) -> None:
    """Waits for the kernels queued on ``device`` (CUDA); nothing on CPU. Call it around timed regions."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Wall time (s) of ``fn()``, the device's queue drained before and after (CUDA launches are async)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int, *, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Median wall time (s) of each function, run round-robin so load affects all alike (synchronised on
    ``device`` around each call when it is a CUDA device)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return {name: statistics.median(ts) for name, ts in times.items()}


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device`` (cpu, cuda, cuda:N; default cpu), checked to exist here."""
    from wnll_art._argparse import device

    parser.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda or cuda:N [cpu]")
