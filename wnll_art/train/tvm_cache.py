"""TVM-purified copies of the training images, computed once and cached on disk.

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018), Sec. 4: training on total-variation-minimised images (alone or
together with the originals) is the "augmented training" that makes the WNLL network robust to TVM-purified
inputs at test time. The TVM itself is :func:`wnll_art.tvm.solver.total_variation_minimize`
(C. Guo et al., "Countering Adversarial Images using Input Transformations", ICLR 2018).

The cache file name is a hash of (cache format, TVM settings, sha256 of the input images), so a cache is
reused only for the same images and the same settings and any change recomputes it. Images are stored as
uint8 (rounded to the 8-bit grid, like the originals): 150 MB for the 50,000 CIFAR-10 training images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from wnll_art._checks import check_positive_int
from wnll_art.train.augment import to_unit_float
from wnll_art.train.checkpoint import atomic_save, load_checkpoint

__all__ = ["TVMSettings", "data_fingerprint", "tvm_cache_path", "tvm_images"]

CACHE_VERSION = 1
TVMFunction = Callable[..., torch.Tensor]


@dataclasses.dataclass(frozen=True)
class TVMSettings:
    """Settings of the TVM applied to the training images (all of them enter the cache key).

    Attributes:
        prob: Probability that a pixel value is kept in the Bernoulli dropout mask.
        norm: Norm of the (anisotropic) total variation, ``1`` or ``2``.
        lamb: Weight of the total-variation term.
        objective: ``"art"`` (ART TotalVarMin's objective) or ``"isotropic"`` (Guo et al.).
        preset: Iteration preset of the solver (``"art-default"`` or ``"converged"``).
        seed: Seed of the ``torch.Generator`` drawing the dropout masks.
        chunk_size: Images per solver call (the masks are drawn chunk by chunk from one generator).
    """

    prob: float = 0.3
    norm: int = 2
    lamb: float = 0.5
    objective: str = "art"
    preset: str = "art-default"
    seed: int = 0
    chunk_size: int = 500

    def solver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the solver (all fields but ``seed`` and ``chunk_size``)."""
        return {"prob": self.prob, "norm": self.norm, "lamb": self.lamb,
                "objective": self.objective, "preset": self.preset}  # fmt: skip


def data_fingerprint(images: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (the data identity in cache keys)."""
    digest = hashlib.sha256(f"{images.dtype}|{tuple(images.shape)}|".encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def tvm_cache_path(cache_dir: Path, settings: TVMSettings, fingerprint: str) -> Path:
    """``cache_dir/tvm-<key>.pt``, the key hashing the cache format, the settings and the data."""
    material = {"version": CACHE_VERSION, "settings": dataclasses.asdict(settings), "data": fingerprint}
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir / f"tvm-{key}.pt"


def _default_tvm() -> TVMFunction:
    from wnll_art.tvm import total_variation_minimize

    return total_variation_minimize


def tvm_images(
    images: torch.Tensor,
    *,
    settings: TVMSettings,
    cache_dir: Path,
    tvm_fn: TVMFunction | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """TVM-purified copies of ``images``, read from the cache or computed once and written to it.

    Args:
        images: ``(N, 3, H, W)`` uint8 images (0..255), on CPU; not modified.
        settings: The TVM settings.
        cache_dir: Directory of the cache files (created if missing).
        tvm_fn: The TVM, called as ``tvm_fn(x, generator=g, **settings.solver_kwargs())`` on float
            ``(n, 3, H, W)`` chunks in [0, 1] on ``device``; default
            :func:`wnll_art.tvm.solver.total_variation_minimize`.
        device: Where the TVM runs (the masks come from a CPU generator, so the draws do not depend on it).
        progress: Show a progress bar while computing.

    Returns:
        ``(N, 3, H, W)`` uint8 CPU tensor (the TVM output clamped to [0, 1] and rounded to 8 bits).

    Raises:
        TypeError: If ``images`` is not a uint8 tensor.
        ValueError: On a wrong shape, or a cache file holding something else.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise TypeError("images must be a uint8 torch.Tensor (0..255)")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    check_positive_int(settings.chunk_size, "settings.chunk_size")
    fingerprint = data_fingerprint(images)
    path = tvm_cache_path(Path(cache_dir), settings, fingerprint)
    if path.is_file():
        cached = load_checkpoint(path)
        out = cached.get("images")
        if cached.get("data") == fingerprint and isinstance(out, torch.Tensor) and out.shape == images.shape:
            return out
        raise ValueError(f"{path} does not hold TVM images of these data; delete it to recompute")
    fn = tvm_fn if tvm_fn is not None else _default_tvm()
    gen = torch.Generator().manual_seed(settings.seed)
    chunks = []
    steps = range(0, images.shape[0], settings.chunk_size)
    for start in tqdm(steps, desc="TVM of training images", disable=not progress, leave=False):
        x = to_unit_float(images[start : start + settings.chunk_size]).to(device)
        with torch.no_grad():
            z = fn(x, generator=gen, **settings.solver_kwargs())
        chunks.append((z.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu())
    out = torch.cat(chunks)
    atomic_save({"images": out, "data": fingerprint, "settings": dataclasses.asdict(settings)}, path)
    return out
