"""Whole networks in the zoo (format trained-full/v1): written, indexed, sha256-checked and loaded back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wnll_art.models.resnet import CifarResNet
from wnll_art.train.checkpoint import with_placeholder_template
from wnll_art.wnll.model import WNLLNet
from wnll_art.zoo import sha256_file
from wnll_art.zoo_trained import (
    LinearHead,
    full_blob,
    full_from_blob,
    load_trained,
    trained_models,
    training_rows,
    write_index_row,
)


def _net() -> WNLLNet:
    torch.manual_seed(0)
    net = with_placeholder_template(CifarResNet(1, 10), template_size=20, buffer_dim=16, k=5, sigma_neighbor=3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        net.template_images.copy_(torch.randint(0, 256, (20, 3, 32, 32), generator=g).float() / 255)
    return net.eval()


def _ship(tmp_path: Path, name: str, net: WNLLNet, *, output: str, data: str, family: str) -> None:
    path = tmp_path / f"{name}.pt"
    torch.save(full_blob(net), path)
    row = {"file": path.name, "sha256": sha256_file(path), "base": None, "output": output, "training_data": data,
           "family": family, "record": {"test_accuracy": 0.5}}  # fmt: skip
    write_index_row(name, row, directory=tmp_path)


def test_full_blob_round_trip_keeps_template_and_rounds_only_weight_matrices() -> None:
    net = _net()
    blob = full_blob(net)
    assert blob["template_images"].dtype == torch.uint8
    back = full_from_blob(blob)
    state = net.state_dict()
    for key, value in back.state_dict().items():
        expected = state[key].half().float() if state[key].is_floating_point() and state[key].ndim >= 2 else state[key]
        if key == "template_images":
            expected = state[key]
        assert torch.equal(value, expected), key
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(back(x), full_from_blob(blob)(x))  # deterministic load


def test_full_blob_refuses_a_template_off_the_8_bit_grid() -> None:
    net = _net()
    with torch.no_grad():
        net.template_images[0, 0, 0, 0] = 0.5001
    with pytest.raises(ValueError, match="8-bit"):
        full_blob(net)


def test_shipped_whole_networks_load_by_name_and_check_sha256(tmp_path: Path) -> None:
    net = _net()
    _ship(tmp_path, "tiny-full-softmax", net, output="softmax", data="original", family="full")
    _ship(tmp_path, "tiny-full-wnll", net, output="wnll", data="original", family="full")
    entry = trained_models(tmp_path)["tiny-full-softmax"]
    assert entry.base is None and entry.family == "full"
    soft = load_trained("tiny-full-softmax", directory=tmp_path)
    assert isinstance(soft, LinearHead)
    wnll = load_trained("tiny-full-softmax", output="wnll", directory=tmp_path)
    assert isinstance(wnll, WNLLNet)
    assert training_rows(tmp_path, family="full") == {"original": {"softmax": "tiny-full-softmax",
                                                                   "wnll": "tiny-full-wnll"}}  # fmt: skip
    assert training_rows(tmp_path) == {}  # the head rows ignore whole networks
    (tmp_path / "tiny-full-wnll.pt").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="sha256"):
        load_trained("tiny-full-wnll", directory=tmp_path)


def test_index_rows_are_checked_before_they_are_written(tmp_path: Path) -> None:
    net = _net()
    path = tmp_path / "a.pt"
    torch.save(full_blob(net), path)
    row: dict[str, object] = {"file": "a.pt", "sha256": "0" * 64, "base": None, "output": "wnll", "training_data": "original",
           "family": "full", "record": {}}  # fmt: skip
    with pytest.raises(ValueError, match="sha256"):
        write_index_row("a", row, directory=tmp_path)
    with pytest.raises(ValueError, match="family"):
        write_index_row("a", {**row, "sha256": sha256_file(path), "family": "other"}, directory=tmp_path)
    assert not (tmp_path / "index.json").exists()
    write_index_row("a", {**row, "sha256": sha256_file(path)}, directory=tmp_path)
    assert json.loads((tmp_path / "index.json").read_text())["a"]["family"] == "full"
