"""CIFAR-10 loading from the official "python version" batches, md5-checked.

Dataset: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
The on-disk layout is the one torchvision's ``CIFAR10(root=...)`` uses: ``root/cifar-10-batches-py/``.
torchvision is never required: when it is importable its downloader is used, otherwise the standard
library's.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Literal

import numpy as np
import torch

__all__ = ["CIFAR10_CLASSES", "default_data_root", "load_cifar10"]

ENV_DATA_ROOT = "WNLL_ART_DATA"
BASE_FOLDER = "cifar-10-batches-py"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_FILES: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
}
TEST_FILES: dict[str, str] = {"test_batch": "40351d587109b95175f43aff81a1287e"}
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def default_data_root() -> Path:
    """The data root: ``$WNLL_ART_DATA`` if set, else ``$XDG_CACHE_HOME/wnll_art`` (``~/.cache/wnll_art``).

    A relative ``$WNLL_ART_DATA`` is taken from the current directory now (the path returned is absolute), so a
    later change of directory does not change which data is read.
    """
    env = os.environ.get(ENV_DATA_ROOT)
    if env:
        return Path(env).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "wnll_art"


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_file(path: Path, expected_md5: str) -> None:
    remedy = (
        f"re-download with load_cifar10(root, download=True), or point {ENV_DATA_ROOT} at a root holding "
        f"an intact '{BASE_FOLDER}/' folder"
    )
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file missing: {path} (expected md5 {expected_md5}); {remedy}")
    actual = _md5(path)
    if actual != expected_md5:
        raise ValueError(
            f"CIFAR-10 file corrupt: {path} has md5 {actual}, expected md5 {expected_md5}; {remedy}"
        )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as f:
        entry = pickle.load(f, encoding="bytes")  # noqa: S301 - md5-verified official file
    data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(entry[b"labels"], dtype=np.int64)
    return data, labels


def _fetch_archive(archive: Path) -> None:
    """Downloads the official archive to ``archive`` (torchvision's downloader when it works, else urllib).

    Raises:
        ConnectionError: The download failed (offline machine, proxy, server); one message with the remedy.
    """
    try:
        from torchvision.datasets.utils import download_url

        download_url(ARCHIVE_URL, str(archive.parent), filename=ARCHIVE_NAME, md5=ARCHIVE_MD5)
        return
    except Exception:  # noqa: S110 - missing or broken torchvision (e.g. a CUDA build on a CPU torch), offline
        pass
    try:
        with urllib.request.urlopen(ARCHIVE_URL, timeout=60) as resp, archive.open("wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:  # URLError, timeouts, refused connections
        raise ConnectionError(
            f"could not download CIFAR-10 from {ARCHIVE_URL} ({exc}); on an offline machine copy "
            f"'{BASE_FOLDER}/' (or {ARCHIVE_NAME}, extracted) into the data root yourself"
        ) from None


def _download(root: Path) -> None:
    """Fetches and verifies the official archive, then extracts it atomically into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        archive = Path(tmp) / ARCHIVE_NAME
        _fetch_archive(archive)
        actual = _md5(archive)
        if actual != ARCHIVE_MD5:
            raise ValueError(f"downloaded {ARCHIVE_URL} has md5 {actual}, expected {ARCHIVE_MD5}")
        extract_dir = Path(tmp) / "extract"
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(extract_dir, filter="data")
        target = root / BASE_FOLDER
        if target.exists():
            shutil.rmtree(target)
        (extract_dir / BASE_FOLDER).rename(target)


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    split: Literal["train", "test"] = "test",
    *,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loads CIFAR-10 from ``root/cifar-10-batches-py/`` after checking every file's md5.

    Args:
        root: Directory holding ``cifar-10-batches-py/``. ``None`` uses :func:`default_data_root`.
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000 images).
        download: Fetch and verify the official archive if files are missing or corrupt.

    Returns:
        ``(images, labels)``: a uint8 tensor of shape ``(N, 3, 32, 32)`` (CPU, values 0..255) and an
        int64 tensor of shape ``(N,)`` with values in 0..9.

    Raises:
        ValueError: Unknown split, or a corrupt file (message names file, md5 and remedy).
        FileNotFoundError: A missing file (message names file, md5 and remedy).
        ConnectionError: ``download=True`` and the download failed (e.g. offline).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = Path(root).expanduser() if root is not None else default_data_root()
    files = TRAIN_FILES if split == "train" else TEST_FILES
    try:
        for name, md5 in files.items():
            _check_file(base / BASE_FOLDER / name, md5)
    except (FileNotFoundError, ValueError):
        if not download:
            raise
        _download(base)
        for name, md5 in files.items():
            _check_file(base / BASE_FOLDER / name, md5)
    parts = [_read_batch(base / BASE_FOLDER / name) for name in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return images, labels
