"""Disk caches of training: TVM-purified training images and frozen-backbone features.

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018), Sec. 4: training on total-variation-minimised images (alone or
together with the originals) is the "augmented training" that makes the WNLL network robust to TVM-purified
inputs at test time. The TVM itself is :func:`wnll_art.tvm.algorithm.total_variation_minimize`
(C. Guo et al., "Countering Adversarial Images using Input Transformations", ICLR 2018), configured by
:class:`wnll_art.tvm.settings.TVMSettings`.

A cache file is named by a hash of what its content depends on (cache format, settings, sha256 of the
input data), so it is reused only for the same inputs and any change recomputes it. TVM images are stored
as uint8 (rounded to the 8-bit grid, like the originals): 150 MB for the 50,000 CIFAR-10 training images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from wnll_art._checks import check_positive_int
from wnll_art.train.augment import to_unit_float
from wnll_art.train.checkpoint import atomic_save, load_checkpoint
from wnll_art.tvm.settings import TVMSettings

__all__ = ["cached_features", "data_fingerprint", "tvm_images"]

CACHE_VERSION = 2
TVMFunction = Callable[..., torch.Tensor]


def data_fingerprint(data: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (the data identity in cache keys)."""
    digest = hashlib.sha256(f"{data.dtype}|{tuple(data.shape)}|".encode())
    digest.update(data.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cached(
    cache_dir: Path, kind: str, material: Mapping[str, Any], rows: int, compute: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """The tensor stored under ``cache_dir/<kind>-<hash of material>.pt``, computed and written if missing.

    Raises:
        ValueError: If the file holds something else than ``rows`` rows computed from ``material``.
    """
    material = {"version": CACHE_VERSION, "kind": kind, **material}
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{kind}-{key}.pt"
    if path.is_file():
        saved = load_checkpoint(path)
        out = saved.get("tensor")
        if saved.get("material") == material and isinstance(out, torch.Tensor) and out.shape[0] == rows:
            return out
        raise ValueError(f"{path} does not hold the {kind} it is named for; delete it to recompute")
    out = compute()
    atomic_save({"tensor": out, "material": material}, path)
    return out


def tvm_images(
    images: torch.Tensor,
    *,
    settings: TVMSettings,
    seed: int,
    cache_dir: Path,
    chunk_size: int = 500,
    tvm_fn: TVMFunction | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """TVM-purified copies of ``images``, read from the cache or computed once and written to it.

    The cache key holds ``settings.solver_kwargs()`` (what the solver is called with), ``seed``,
    ``chunk_size`` and the sha256 of ``images``.

    Args:
        images: ``(N, 3, H, W)`` uint8 images (0..255), on CPU; not modified.
        settings: The TVM settings.
        seed: Seed of the CPU ``torch.Generator`` drawing the dropout masks (chunk by chunk).
        cache_dir: Directory of the cache files (created if missing).
        chunk_size: Images per solver call.
        tvm_fn: The TVM, called as ``tvm_fn(x, generator=g, **settings.solver_kwargs())`` on float
            ``(n, 3, H, W)`` chunks in [0, 1] on ``device``; default
            :func:`wnll_art.tvm.algorithm.total_variation_minimize`.
        device: Where the TVM runs (the masks come from a CPU generator, so the draws do not depend on it).
        progress: Show a progress bar while computing.

    Returns:
        ``(N, 3, H, W)`` uint8 CPU tensor (the TVM output clamped to [0, 1] and rounded to 8 bits).

    Raises:
        TypeError: If ``images`` is not a uint8 tensor or ``settings`` not a :class:`TVMSettings`.
        ValueError: On a wrong shape, or a cache file holding something else.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise TypeError("images must be a uint8 torch.Tensor (0..255)")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if not isinstance(settings, TVMSettings):
        raise TypeError(f"settings must be a TVMSettings, got {type(settings).__name__}")
    check_positive_int(chunk_size, "chunk_size")

    def compute() -> torch.Tensor:
        fn = tvm_fn if tvm_fn is not None else _default_tvm()
        gen = torch.Generator().manual_seed(seed)
        chunks = []
        for start in tqdm(range(0, images.shape[0], chunk_size), desc="TVM of training images",
                          disable=not progress, leave=False):  # fmt: skip
            x = to_unit_float(images[start : start + chunk_size]).to(device)
            with torch.no_grad():
                z = fn(x, generator=gen, **settings.solver_kwargs())
            chunks.append((z.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu())
        return torch.cat(chunks)

    material = {"settings": settings.solver_kwargs(), "seed": seed, "chunk_size": chunk_size,
                "data": data_fingerprint(images)}  # fmt: skip
    return _cached(Path(cache_dir), "tvm", material, images.shape[0], compute)


def _default_tvm() -> TVMFunction:
    from wnll_art.tvm.algorithm import total_variation_minimize  # lazily: training on originals needs no TVM

    return total_variation_minimize


def cached_features(
    backbone: nn.Module,
    images: torch.Tensor,
    *,
    cache_dir: Path,
    weights_sha256: str,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """``backbone.features`` of uint8 images (eval mode, float32), read from or written to the cache.

    Args:
        backbone: Module with ``features(x) -> (N, D)``; put in eval mode and moved to ``device``.
        images: ``(N, 3, H, W)`` uint8 CPU images.
        cache_dir: Cache directory (created if missing).
        weights_sha256: sha256 of the backbone's weights file (part of the key, with the images').
        batch_size: Images per forward pass.
        device: Where the backbone runs.
        progress: Progress bar while computing.

    Returns:
        ``(N, D)`` float32 CPU features.
    """
    check_positive_int(batch_size, "batch_size")

    def compute() -> torch.Tensor:
        backbone.eval().to(device)
        chunks = []
        with torch.inference_mode():
            for i in tqdm(range(0, images.shape[0], batch_size), desc="backbone features",
                          disable=not progress, leave=False):  # fmt: skip
                x = to_unit_float(images[i : i + batch_size]).to(device)
                chunks.append(backbone.features(x).float().cpu())  # type: ignore[operator]
        return torch.cat(chunks)

    material = {"weights": weights_sha256, "data": data_fingerprint(images)}
    return _cached(Path(cache_dir), "features", material, images.shape[0], compute)
