"""CIFAR-10 loader: error paths on small synthetic layouts (fast, no real data needed)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from wnll_art import data
from wnll_art.data import load_cifar10


def _write_fake_test_batch(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    path = folder / "test_batch"
    rng = np.random.default_rng(0)
    entry = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    path.write_bytes(pickle.dumps(entry))
    return path


def test_missing_root_names_file_md5_and_remedy(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path, split="test")
    msg = str(info.value)
    assert "test_batch" in msg and data.TEST_FILES["test_batch"] in msg and "download=True" in msg


def test_wrong_md5_is_refused(tmp_path: Path) -> None:
    path = _write_fake_test_batch(tmp_path)
    with pytest.raises(ValueError, match="corrupt") as info:
        load_cifar10(tmp_path, split="test")
    assert str(path) in str(info.value) and data.TEST_FILES["test_batch"] in str(info.value)


def test_reads_layout_when_md5_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_fake_test_batch(tmp_path)
    monkeypatch.setitem(data.TEST_FILES, "test_batch", data._md5(path))
    images, labels = load_cifar10(tmp_path, split="test")
    raw = pickle.loads(path.read_bytes())
    assert images.dtype.is_floating_point is False and str(images.dtype) == "torch.uint8"
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [0, 1, 2, 3]
    # channel-major rows: the first 1024 bytes are the red plane
    assert images[2, 0].flatten().tolist() == raw[b"data"][2, :1024].tolist()
    assert images[2, 2].flatten().tolist() == raw[b"data"][2, 2048:].tolist()


def test_bad_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_cifar10(tmp_path, split="validation")  # type: ignore[arg-type]


def test_default_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WNLL_ART_DATA", str(tmp_path))
    assert data.default_data_root() == tmp_path
    monkeypatch.delenv("WNLL_ART_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.default_data_root() == tmp_path / "cache" / "wnll_art"


def test_failed_download_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)  # force the stdlib path
    with pytest.raises(OSError, match="unreachable"):
        load_cifar10(tmp_path, split="test", download=True)
    assert list(tmp_path.iterdir()) == []
