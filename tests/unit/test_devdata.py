"""evaluations/devdata.py: CIFAR-10 split into parts that fit a device call, then reassembled md5-checked."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "evaluations"))
import devdata  # noqa: E402


@pytest.fixture()
def fake_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Seven small files standing in for the official ones, their md5s made the 'official' ones."""
    src = tmp_path / "src"
    src.mkdir()
    md5s = {}
    for i, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                              "test_batch", "batches.meta"]):  # fmt: skip
        data = bytes((j * (i + 3)) % 251 for j in range(20_000 + 1000 * i))
        (src / name).write_bytes(data)
        md5s[name] = hashlib.md5(data).hexdigest()
    monkeypatch.setattr(devdata, "official_md5", lambda: md5s)
    return src


def test_pack_stage_unpack_restores_every_file(fake_cifar: Path, tmp_path: Path) -> None:
    parts = devdata.pack(fake_cifar, tmp_path / "parts", parts=3, limit=10**6)
    assert len(parts) == 3
    stage = tmp_path / "stage"
    for part in parts[:2]:
        devdata.stage(part, stage)
    with pytest.raises(ValueError, match="not staged yet"):
        devdata.unpack(stage, tmp_path / "dest")
    devdata.stage(parts[2], stage)
    folder = devdata.unpack(stage, tmp_path / "dest")
    for name in devdata.official_md5():
        assert (folder / name).read_bytes() == (fake_cifar / name).read_bytes()


def test_unpack_refuses_a_damaged_part(fake_cifar: Path, tmp_path: Path) -> None:
    parts = devdata.pack(fake_cifar, tmp_path / "parts", parts=1, limit=10**6)
    stage = tmp_path / "stage"
    devdata.stage(parts[0], stage)
    victim = stage / "test_batch.xz"
    other = devdata.compress(b"something else")
    victim.write_bytes(other)
    with pytest.raises(ValueError, match="test_batch: md5"):
        devdata.unpack(stage, tmp_path / "dest")


def test_pack_refuses_parts_over_the_limit_and_wrong_sources(fake_cifar: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="over the limit"):
        devdata.pack(fake_cifar, tmp_path / "parts", parts=1, limit=100)
    (fake_cifar / "data_batch_3").write_bytes(b"not the official file")
    with pytest.raises(ValueError, match="data_batch_3"):
        devdata.pack(fake_cifar, tmp_path / "parts2", parts=3, limit=10**6)
    assert devdata.main(["pack", str(fake_cifar), str(tmp_path / "p3")]) == 1  # one line, exit 1
