"""``to_maite`` and ``maite_cifar10`` without MAITE installed: the protocol's shapes, the checks, the coupling.

MAITE's protocols are structural (no base class), so everything here runs in the dev environment; the same
objects inside ``maite.tasks.evaluate`` are tested in ``tests/ecosystem/`` where MAITE is installed.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from wnll_art.adapters.maite import Cifar10Dataset, MaiteClassifier, maite_cifar10, to_maite
from wnll_art.data import CIFAR10_CLASSES
from wnll_art.defence import Defence
from wnll_art.models.resnet import CifarResNet
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet


def _batch(n: int, seed: int = 0) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).random((n, 3, 32, 32), dtype=np.float32))


def test_metadata_and_call_give_the_models_scores_per_image(tiny_wnll_net: WNLLNet) -> None:
    model = to_maite(tiny_wnll_net, warn_small_batches=False)
    assert isinstance(model, MaiteClassifier)
    assert model.metadata == {"id": "wnll-art:WNLLNet", "index2label": dict(enumerate(CIFAR10_CLASSES))}
    batch = _batch(8)
    out = model(batch)
    with torch.no_grad():
        expected = tiny_wnll_net(torch.from_numpy(np.stack(batch))).numpy()
    assert isinstance(out, list) and len(out) == 8
    assert all(isinstance(o, np.ndarray) and o.shape == (10,) and o.dtype == np.float32 for o in out)
    np.testing.assert_array_equal(np.stack(out), expected)  # one call: the batch is solved together
    assert model.observed_batches == {8: 1}


def test_call_takes_tensors_4d_arrays_and_empty_batches(tiny_wnll_net: WNLLNet) -> None:
    model = to_maite(tiny_wnll_net, model_id="mine", warn_small_batches=False)
    batch = _batch(8, seed=1)
    ref = np.stack(model(batch))
    np.testing.assert_array_equal(np.stack(model([torch.from_numpy(b) for b in batch])), ref)
    np.testing.assert_array_equal(np.stack(model(np.stack(batch))), ref)
    np.testing.assert_array_equal(np.stack(model(np.stack(batch).astype(np.float64))), ref)
    assert model([]) == [] and model.metadata["id"] == "mine"


def test_call_restores_modes_and_builds_no_graph(tiny_wnll_net: WNLLNet) -> None:
    model = to_maite(tiny_wnll_net, warn_small_batches=False)
    tiny_wnll_net.train()
    try:
        out = model(_batch(8))
        assert tiny_wnll_net.training and all(m.training for m in tiny_wnll_net.modules())
        with torch.no_grad():
            tiny_wnll_net.eval()
            np.testing.assert_array_equal(
                np.stack(out), tiny_wnll_net(torch.from_numpy(np.stack(_batch(8)))).numpy()
            )
    finally:
        tiny_wnll_net.eval()


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ([np.zeros((3, 32, 32), np.uint8)], TypeError, "uint8 images"),
        ([np.full((3, 32, 32), 2.0, np.float32)], ValueError, "must lie in"),
        ([np.zeros((3, 32, 32), np.float32), np.zeros((3, 16, 16), np.float32)], ValueError, "one shape"),
        ([np.zeros((32, 32), np.float32)], ValueError, r"\(C, H, W\)"),
        ([np.zeros((32, 32, 3), np.float32)], ValueError, "channels-last"),
        ("images", TypeError, "sequence"),
        (3, TypeError, "sequence"),
    ],
)
def test_call_refuses_bad_batches(
    tiny_wnll_net: WNLLNet, batch: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        to_maite(tiny_wnll_net, warn_small_batches=False)(batch)  # type: ignore[arg-type]


def test_small_batches_warn_once(tiny_wnll_net: WNLLNet) -> None:
    model = to_maite(tiny_wnll_net)
    with pytest.warns(UserWarning, match="to_maite.*wnll_batch_size=8"):
        model(_batch(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(_batch(2))
        to_maite(tiny_wnll_net, warn_small_batches=False)(_batch(1))
    assert model.observed_batches == {2: 2}


def test_defence_id_score_views_and_argument_checks(tiny_wnll_net: WNLLNet) -> None:
    defence = Defence(tiny_wnll_net, tvm=TVMSettings(iterations=2)).eval()
    assert to_maite(defence).metadata["id"] == "wnll-art:Defence(wnll, tvm)"
    assert to_maite(Defence(tiny_wnll_net)).metadata["id"] == "wnll-art:Defence(wnll)"
    view = to_maite(tiny_wnll_net, score="log64", warn_small_batches=False)
    assert view.model is not tiny_wnll_net and view.model.score == "log64" and tiny_wnll_net.score == "log"
    assert (
        np.argmax(np.stack(view(_batch(8))), 1).tolist()
        == np.argmax(np.stack(to_maite(tiny_wnll_net)(_batch(8))), 1).tolist()
    )
    four = CifarResNet(1, 4)
    assert "index2label" not in to_maite(four).metadata
    assert to_maite(four, index2label={0: "a"}).metadata["index2label"] == {0: "a"}
    with pytest.raises(TypeError, match="nn.Module"):
        to_maite(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score"):
        to_maite(tiny_wnll_net, score="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="WNLL"):
        to_maite(four, score="log64")
    with pytest.raises(ValueError, match="model_id"):
        to_maite(tiny_wnll_net, model_id=" ")
    with pytest.raises(TypeError, match="model_id"):
        to_maite(tiny_wnll_net, model_id=3)  # type: ignore[arg-type]


def test_defence_with_tvm_runs_one_draw_per_call(tiny_wnll_net: WNLLNet) -> None:
    defence = Defence(tiny_wnll_net, tvm=TVMSettings(iterations=2), seed=0).eval()
    out = to_maite(defence, warn_small_batches=False)(_batch(8))
    assert np.isfinite(np.stack(out)).all() and len(out) == 8


def test_dataset_arguments_are_checked_before_any_data_is_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="target"):
        maite_cifar10(tmp_path, target="probs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start"):
        maite_cifar10(tmp_path, start=-1)
    with pytest.raises((TypeError, ValueError), match="n"):
        maite_cifar10(tmp_path, n=0)
    with pytest.raises(ValueError, match="split"):
        maite_cifar10(tmp_path, split="val")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        maite_cifar10(tmp_path)


def test_dataset_items_follow_the_protocol() -> None:
    images = torch.randint(
        0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    labels = torch.tensor([3, 1, 4, 1, 5])
    one_hot = Cifar10Dataset(images, labels, name="cifar10-test[7:12]", start=7, target="one_hot")
    assert len(one_hot) == 5 and one_hot.metadata["id"] == "cifar10-test[7:12]"
    assert one_hot.metadata["index2label"][9] == "truck"
    image, target, datum = one_hot[1]
    assert (
        image.shape == (3, 32, 32) and image.dtype == np.float32 and 0.0 <= image.min() <= image.max() <= 1.0
    )
    np.testing.assert_array_equal(image * 255, images[1].numpy().astype(np.float32))
    assert target.shape == (10,) and target.dtype == np.float32 and target.argmax() == 1 and target.sum() == 1
    assert datum == {"id": 8}
    assert one_hot[-1][2] == {"id": 11}
    label = Cifar10Dataset(images, labels, name="x", start=0, target="label")
    assert label[2][1].shape == () and label[2][1].dtype == np.int64 and int(label[2][1]) == 4
    with pytest.raises(IndexError):
        one_hot[5]
    with pytest.raises(IndexError):
        one_hot[-6]
    with pytest.raises(TypeError, match="int"):
        one_hot[1.0]  # type: ignore[index]
    assert [d["id"] for _, _, d in (one_hot[i] for i in range(len(one_hot)))] == [7, 8, 9, 10, 11]


@pytest.mark.slow
def test_cifar10_dataset_is_load_cifar10s_slice(
    cifar_root: Path, test_set: tuple[torch.Tensor, torch.Tensor]
) -> None:
    ds = maite_cifar10(cifar_root, n=4, start=10, target="label")
    x, y = test_set
    assert len(ds) == 4 and ds.metadata["id"] == "cifar10-test[10:14]"
    for i in range(4):
        image, label, datum = ds[i]
        np.testing.assert_array_equal(image, x[10 + i].numpy() / np.float32(255))
        assert int(label) == int(y[10 + i]) and datum == {"id": 10 + i}
    with pytest.raises(ValueError, match="past"):
        maite_cifar10(cifar_root, n=2, start=9999)


def test_maite_is_never_imported() -> None:
    code = ("import sys, wnll_art; wnll_art.to_maite, wnll_art.maite_cifar10; "
            "assert not {'maite', 'heart_library', 'armory', 'art', 'foolbox'} & set(sys.modules), "
            "sorted({'maite', 'heart_library', 'armory', 'art', 'foolbox'} & set(sys.modules)); print('ok')")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
