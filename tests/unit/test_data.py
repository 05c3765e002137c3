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


def test_relative_env_root_is_resolved_where_it_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The README's own command uses WNLL_ART_DATA=../shared/data: a later chdir must not change its meaning."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WNLL_ART_DATA", "../shared/data")
    root = data.default_data_root()
    assert root.is_absolute() and root == Path.cwd() / "../shared/data"
    monkeypatch.setenv("WNLL_ART_DATA", "~/cifar")
    assert data.default_data_root() == Path.home() / "cifar"


def test_test_fixtures_resolve_a_relative_env_root(monkeypatch: pytest.MonkeyPatch, cifar_root: Path) -> None:
    """tests/conftest.py reads WNLL_ART_DATA once; tests that chdir later must still find the data."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).parents[1] / "conftest.py")
    assert spec is not None and spec.loader is not None
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    real = cifar_root.resolve()
    monkeypatch.chdir(real.parent)
    monkeypatch.setenv("WNLL_ART_DATA", real.name)
    found = conftest._data_root()
    assert found is not None and found.is_absolute() and found.resolve() == real


def test_failed_download_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)  # force the stdlib path
    with pytest.raises(OSError, match="unreachable"):
        load_cifar10(tmp_path, split="test", download=True)
    assert list(tmp_path.iterdir()) == []
