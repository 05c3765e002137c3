"""Trained models as package data: write, index, sha256, load (as WNLL or softmax), through load_defence.

Uses the public ResNet-56 weights (the frozen backbone every shipped head sits on); no CIFAR-10 needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wnll_art.defence import Defence
from wnll_art.zoo_trained import LinearHead, load_trained, trained_models, write_trained

CHECKPOINT = "resnet56-4bfd9763.th"


def _trained_state(hub_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    from wnll_art import load_pretrained
    from wnll_art.wnll.model import WNLLNet

    backbone = load_pretrained("resnet56", weights=hub_dir / "hub" / "checkpoints" / CHECKPOINT)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), generator=gen, dtype=torch.uint8)
    torch.manual_seed(0)
    wnll = {"buffer_dim": 64, "k": 15, "sigma_neighbor": 8, "wnll_batch_size": 20}
    net = WNLLNet(backbone, images, torch.arange(40) % 10, **wnll)  # type: ignore[arg-type]
    return net.state_dict(), wnll


def test_round_trip_and_damage(hub_dir: Path, tmp_path: Path) -> None:
    state, wnll = _trained_state(hub_dir)
    weights = hub_dir / "hub" / "checkpoints" / CHECKPOINT
    entry = write_trained(state, name="tiny-wnll", wnll=wnll, output="wnll", training_data="tvm",
                          record={"seed": 0}, directory=tmp_path)  # fmt: skip
    assert trained_models(tmp_path)["tiny-wnll"] == entry and entry.base == "resnet56"
    assert (tmp_path / entry.file).stat().st_size < 500_000  # head + uint8 template, no backbone copy
    net = load_trained("tiny-wnll", weights=weights, directory=tmp_path)
    for key, value in state.items():  # everything a user gets equals what training wrote
        torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    softmax = load_trained("tiny-wnll", output="softmax", weights=weights, directory=tmp_path)
    assert isinstance(softmax, LinearHead)
    with torch.no_grad():
        torch.testing.assert_close(softmax(x), net.linear_logits(x))
    with pytest.raises(ValueError, match="x must have shape"):
        softmax(torch.rand(2, 3, 16, 16))
    with pytest.raises(KeyError, match="tiny-wnll"):
        load_trained("nope", weights=weights, directory=tmp_path)
    data = (tmp_path / entry.file).read_bytes()
    (tmp_path / entry.file).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one flipped bit
    with pytest.raises(ValueError, match="sha256"):
        load_trained("tiny-wnll", weights=weights, directory=tmp_path)


def test_shipped_models_load_through_load_defence(hub_dir: Path) -> None:
    """Every model in the package index loads by name, with and without TVM (offline, sha256-checked)."""
    import wnll_art

    weights = hub_dir / "hub" / "checkpoints" / CHECKPOINT
    shipped = trained_models()
    if not shipped:
        pytest.skip("no trained models shipped in this checkout")
    for name, entry in shipped.items():
        plain = wnll_art.load_defence(name, weights=weights)
        defended = wnll_art.load_defence(name, tvm=True, weights=weights)
        assert isinstance(plain, Defence) and plain.purifier is None and defended.randomised
        assert plain.settings()["classifier"] == ("wnll" if entry.output == "wnll" else "softmax")
        assert 0.5 < float(entry.record["test_accuracy"]) <= 1.0  # type: ignore[arg-type]


def test_training_rows_place_each_shipped_model_and_build_its_victims(hub_dir: Path) -> None:
    """The paper's training-data rows come from the index (not from names), and the victims built for a row
    are exactly the shipped models: the WNLL victim carries the shipped template, the softmax one its head."""
    from wnll_art.evaluation.config import EvalConfig
    from wnll_art.evaluation.setup import rows as table_rows
    from wnll_art.evaluation.setup import victims_of
    from wnll_art.wnll.model import WNLLNet
    from wnll_art.zoo_trained import training_rows

    shipped = trained_models()
    if not shipped:
        pytest.skip("no trained models shipped in this checkout")
    rows = training_rows()
    assert rows["original"]["softmax"] == "resnet56"
    for data, row in rows.items():
        assert shipped[row["wnll"]].output == "wnll" and shipped[row["wnll"]].training_data == data
        if data != "original":
            assert shipped[row["softmax"]].output == "softmax" and shipped[row["softmax"]].training_data == data
    assert {"original", "tvm", "original+tvm"} <= set(rows)
    cfg = EvalConfig(n=4, eps=(0.02,), defences=("none", "tvm"), wnll_batch_size=7)
    weights = hub_dir / "hub" / "checkpoints" / CHECKPOINT
    (row,) = table_rows(cfg, ["tvm"])
    victims, sources = victims_of(row, cfg, sources={"softmax"}, weights=weights)
    assert [(v.model, v.defence) for v in victims] == [("softmax", "none"), ("softmax", "tvm"), ("wnll", "none"),
                                                       ("wnll", "tvm")]  # fmt: skip
    plain = sources["softmax"]
    assert plain is victims[0] and isinstance(plain.module.classifier, LinearHead)
    # attacking only the WNLL model, the transfer source is still the row's own softmax model, not the public one
    (wnll_only,) = table_rows(EvalConfig(n=4, eps=(0.02,), models=("wnll",), defences=("none",)), ["tvm"])
    _, alone = victims_of(wnll_only, cfg, sources={"softmax"}, weights=weights)
    assert isinstance(alone["softmax"].module.classifier, LinearHead)
    wnll = victims[2].module.classifier
    expected = load_trained(row_name := rows["tvm"]["wnll"], weights=weights)
    assert isinstance(wnll, WNLLNet) and wnll.wnll_batch_size == 7, row_name
    torch.testing.assert_close(wnll.template_images, expected.template_images, rtol=0, atol=0)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the softmax victim is the tvm model's own linear head, not the public one
        torch.testing.assert_close(plain.module.classifier(x), load_trained(rows["tvm"]["softmax"], weights=weights)(x))
