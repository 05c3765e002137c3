"""Model zoo: named pretrained weights with URL, sha256 and reference accuracy (RobustBench style).

Weights are verified by sha256 before they are deserialised, and loaded with ``weights_only=True``.
``weights=None`` uses the torch hub cache (``$TORCH_HOME/hub/checkpoints`` by default, or
``torch.hub.get_dir()``), downloading on first use; for offline use put the file there yourself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from wnll_art.models.resnet import resnet56

__all__ = ["ZOO", "ZooEntry", "cached_weights_path", "load_pretrained", "load_state_dict_file", "sha256_file"]


@dataclass(frozen=True)
class ZooEntry:
    """One named set of weights.

    Attributes:
        url: Where the file is published.
        sha256: Hex digest of the exact file.
        reference_accuracy: Top-1 accuracy (%) on the 10,000 CIFAR-10 test images, as measured by us.
        builder: Builds the randomly initialised architecture the weights belong to.
        license: Licence of the weights.
        notes: Provenance.
    """

    url: str
    sha256: str
    reference_accuracy: float
    builder: Callable[[], nn.Module]
    license: str = ""
    notes: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        """File name in the hub cache: the last component of the URL."""
        return Path(urlparse(self.url).path).name


ZOO: dict[str, ZooEntry] = {
    "resnet56": ZooEntry(
        url=(
            "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/"
            "pretrained_models/resnet56-4bfd9763.th"
        ),
        sha256="4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
        reference_accuracy=93.39,
        builder=resnet56,
        license="BSD-2-Clause",
        notes="akamaster/pytorch_resnet_cifar10, ImageNet mean/std normalisation, softmax training",
    ),
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_weights_path(entry: ZooEntry) -> Path:
    """Where ``weights=None`` looks for an entry's file: ``torch.hub.get_dir()/checkpoints/<filename>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / entry.filename


def _fetch(entry: ZooEntry, progress: bool) -> Path:
    path = cached_weights_path(entry)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(entry.url, str(path), hash_prefix=None, progress=progress)
        except Exception as exc:  # offline machines end here
            raise FileNotFoundError(
                f"weights not in the hub cache ({path}) and the download from {entry.url} failed ({exc}); "
                f"copy the file there (or set TORCH_HOME to a directory whose hub/checkpoints/ holds it), "
                f"or pass weights=<path>"
            ) from exc
    return path


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Reads a checkpoint with ``weights_only=True`` and returns its state dict, ``module.`` stripped.

    Accepts a bare state dict or a dict holding one under ``"state_dict"``.

    Raises:
        ValueError: If the file is not a PyTorch checkpoint holding a state dict.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types on garbage (KeyError, EOFError, ...)
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is a PyTorch file but holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    for key, value in expected.items():  # the public checkpoint predates num_batches_tracked
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit {type(model).__name__}: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    wrong = [f"{k}: {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if state[k].shape != v.shape]  # fmt: skip
    if wrong:
        raise ValueError(f"{path} does not fit {type(model).__name__}: wrong shapes {wrong[:5]}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path} holds NaN or infinite values in {bad[:5]}; the weights are corrupt")
    model.load_state_dict(state, strict=True)


def load_pretrained(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    check_hash: bool = True,
    progress: bool = True,
) -> nn.Module:
    """Builds a zoo model and loads its verified weights.

    Args:
        name: A key of :data:`ZOO` (e.g. ``"resnet56"``).
        weights: ``None`` for the hub cache (downloaded on first use), or a path to the file.
        check_hash: Verify the file's sha256 against the zoo entry before loading. Turn off only to
            load your own fine-tuned weights of the same architecture from ``weights``.
        progress: Show a progress bar while downloading.

    Returns:
        The model on CPU, in eval mode, taking images in [0, 1].

    Raises:
        KeyError: Unknown name (the message lists the zoo).
        FileNotFoundError: No file at ``weights``, or not cached and not downloadable.
        ValueError: Wrong sha256, not a checkpoint, keys or shapes that do not fit the architecture, or
            NaN/infinite values.
    """
    if name not in ZOO:
        raise KeyError(f"unknown model {name!r}; the zoo has {sorted(ZOO)}")
    entry = ZOO[name]
    if weights is None:
        path = _fetch(entry, progress)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
    if check_hash:
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ValueError(
                f"sha256 mismatch for {path}: got {actual}, expected {entry.sha256} ({name}); the file is "
                f"corrupt, truncated or not the {name} weights; delete it to re-download, or pass "
                f"check_hash=False for your own weights"
            )
    model = entry.builder()
    _load_into(model, load_state_dict_file(path), path)
    return model.eval()
