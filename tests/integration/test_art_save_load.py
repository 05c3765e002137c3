"""``WNLLClassifier.save`` / ``WNLLClassifier.load``: one call each, the same predictions after the round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wnll_art.adapters.art_estimator import WNLLClassifier
from wnll_art.defence import Defence
from wnll_art.models.resnet import CifarResNet
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet
from wnll_art.zoo_trained import LinearHead

pytestmark = pytest.mark.integration


def _net(buffer_dim: int | None = None) -> WNLLNet:
    torch.manual_seed(0)
    images = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return WNLLNet(CifarResNet(1, 4), images, torch.arange(40) % 4, k=6, sigma_neighbor=3, wnll_batch_size=8,
                   buffer_dim=buffer_dim).eval()  # fmt: skip


def _x(n: int = 8, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, 32, 32)).astype(dtype)


def _round_trip(clf: WNLLClassifier, tmp_path: Path) -> WNLLClassifier:
    folder = clf.save(tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.json", "weights.pt"]
    return WNLLClassifier.load(folder)


@pytest.mark.parametrize("buffer_dim", [None, 16])
def test_wnllnet_round_trip_predicts_the_same(tmp_path: Path, buffer_dim: int | None) -> None:
    clf = WNLLClassifier(_net(buffer_dim), warn_small_batches=False)
    back = _round_trip(clf, tmp_path)
    assert type(back.model) is WNLLNet and back.model.settings() == clf.model.settings()
    np.testing.assert_array_equal(back.predict(_x()), clf.predict(_x()))
    assert (back.nb_classes, back.input_shape, back.channels_first) == (4, (3, 32, 32), True)
    np.testing.assert_array_equal(back.clip_values, clf.clip_values)
    assert not back._small_batches.enabled and not back.model.training


def test_defence_with_tvm_round_trip_predicts_the_same(tmp_path: Path) -> None:
    """A fresh TVM purifier draws its masks from its seed: the saved and the loaded defence draw the same."""
    settings = TVMSettings(iterations=3, prob=0.6, eot_samples=3)
    clf = WNLLClassifier(
        Defence(_net(), tvm=settings, seed=7).eval(), score="log64", warn_small_batches=False
    )
    back = _round_trip(clf, tmp_path)
    assert isinstance(back.model, Defence) and back.model.settings() == clf.model.settings()
    assert back.model.tvm == settings and back.model.eot_samples == 3 and back.model.purifier.seed == 7
    assert back.model.wnll is not None and back.model.wnll.score == "log64"
    np.testing.assert_array_equal(back.predict(_x()), clf.predict(_x()))
    y = np.eye(4, dtype=np.float32)[np.arange(8) % 4]  # ART passes one-hot labels
    torch.manual_seed(0)
    fresh = WNLLClassifier.load(tmp_path / "saved")
    again = WNLLClassifier.load(tmp_path / "saved")
    np.testing.assert_array_equal(fresh.loss_gradient(_x(), y), again.loss_gradient(_x(), y))


def test_softmax_models_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    plain = WNLLClassifier(Defence(CifarResNet(1, 10)).eval())
    np.testing.assert_array_equal(plain.predict(_x()), _round_trip(plain, tmp_path / "a").predict(_x()))
    head = WNLLClassifier(LinearHead(_net(buffer_dim=16)).eval())
    back = _round_trip(head, tmp_path / "b")
    assert isinstance(back.model, LinearHead)
    np.testing.assert_array_equal(head.predict(_x()), back.predict(_x()))


def test_float64_model_keeps_its_dtype(tmp_path: Path) -> None:
    clf = WNLLClassifier(_net().double(), warn_small_batches=False)
    back = _round_trip(clf, tmp_path)
    assert next(back.model.parameters()).dtype == torch.float64
    np.testing.assert_array_equal(back.predict(_x(dtype=np.float64)), clf.predict(_x(dtype=np.float64)))


def test_save_takes_arts_arguments_and_refuses_to_overwrite(tmp_path: Path) -> None:
    clf = WNLLClassifier(_net(), warn_small_batches=False)
    assert clf.save("run", str(tmp_path)) == tmp_path / "run"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        clf.save(tmp_path / "run")
    assert clf.save(tmp_path / "run", overwrite=True) == tmp_path / "run"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="other files"):
        clf.save(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="is a file"):
        clf.save(tmp_path / "mine" / "notes.txt")
    with pytest.raises(TypeError, match="overwrite"):
        clf.save(tmp_path / "x", overwrite="yes")  # type: ignore[arg-type]


def test_load_checks_the_sha256_and_the_format(tmp_path: Path) -> None:
    folder = WNLLClassifier(_net(), warn_small_batches=False).save(tmp_path / "saved")
    record = json.loads((folder / "classifier.json").read_text())
    assert record["format"] == "wnll-art/classifier/v1" and len(record["weights"]["sha256"]) == 64
    weights = (folder / "weights.pt").read_bytes()
    (folder / "weights.pt").write_bytes(weights[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        WNLLClassifier.load(folder)
    (folder / "weights.pt").write_bytes(weights)
    (folder / "classifier.json").write_text(json.dumps({**record, "format": "other/v9"}))
    with pytest.raises(ValueError, match="format 'other/v9'"):
        WNLLClassifier.load(folder)
    (folder / "classifier.json").write_text(
        json.dumps({**record, "module": {**record["module"], "k": 6, "backbone": {"type": "Mystery"}}})
    )
    with pytest.raises(ValueError, match="unknown module type 'Mystery'"):
        WNLLClassifier.load(folder)
    with pytest.raises(FileNotFoundError, match="WNLLClassifier.save"):
        WNLLClassifier.load(tmp_path / "nothing")


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    folder = WNLLClassifier(_net(), warn_small_batches=False).save(tmp_path / "saved")
    record = json.loads((folder / "classifier.json").read_text())
    record["module"]["backbone"]["num_blocks"] = 2
    (folder / "classifier.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="does not fit the architecture"):
        WNLLClassifier.load(folder)


def test_load_overrides_and_unsavable_settings(tmp_path: Path) -> None:
    net = _net()
    folder = WNLLClassifier(net, warn_small_batches=False).save(tmp_path / "saved")
    back = WNLLClassifier.load(folder, score="log64", loss=nn.NLLLoss())
    assert back.model.score == "log64" and isinstance(back._loss, nn.NLLLoss)
    with pytest.raises(ValueError, match="not loss=NLLLoss"):
        WNLLClassifier(net, loss=nn.NLLLoss()).save(tmp_path / "other")
    with pytest.raises(ValueError, match="preprocessing"):
        WNLLClassifier(net, preprocessing=(0.5, 0.25)).save(tmp_path / "other")
    assert not (tmp_path / "other").exists()
    with pytest.raises(TypeError, match="cannot save a Sequential"):
        WNLLClassifier(nn.Sequential(nn.Identity(), net)).save(tmp_path / "other")
    assert not (tmp_path / "other").exists()
    with pytest.raises(ValueError, match="device"):
        WNLLClassifier.load(folder, device="meta")
