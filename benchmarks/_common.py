"""Helpers shared by the benchmark scripts: real data when available, interleaved median timing."""

from __future__ import annotations

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


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time (s) of each function, run round-robin so load affects all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}
