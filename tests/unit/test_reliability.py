"""Bad input and faults in the library: dtypes, image sizes, constructor options, weights, offline download,
records read back (fast)."""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from wnll_art import data
from wnll_art.evaluation.records import CellRecord, RecordError, RunStore, load_record, read_records
from wnll_art.models.resnet import resnet56
from wnll_art.wnll.model import WNLLNet
from wnll_art.zoo import load_pretrained


class _Backbone(nn.Module):
    """features: mean-pool to 2x2, flatten (12) -> 6; linear 6 -> 3 (works at any image size)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 6)
        self.linear = nn.Linear(6, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)))


def _model(**kwargs: object) -> WNLLNet:
    torch.manual_seed(0)
    images = torch.rand(30, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    opts = {"k": 6, "sigma_neighbor": 4, "wnll_batch_size": 10, **kwargs}
    return WNLLNet(_Backbone(), images, torch.arange(30) % 3, **opts).eval()  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- item 4
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_cast_and_not_mutated(dtype: torch.dtype) -> None:
    model = _model()
    x32 = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x = x32.to(dtype)
    before = x.clone()
    with torch.no_grad():
        out, ref = model(x), model(x.float())
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert x.dtype == dtype and torch.equal(x, before)


def test_float64_gradient_flows_back_in_float64() -> None:
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(_model()(x).sum(), x)
    assert grad.dtype == torch.float64 and bool(torch.isfinite(grad).all())


# ------------------------------------------------------------------------------------------- item 7
@pytest.mark.parametrize("size", [64, 16, 1])
def test_other_image_sizes_refused(size: int) -> None:
    model = _model()
    assert model.input_shape == (3, 8, 8)
    with pytest.raises(ValueError, match=rf"\(N, 3, 8, 8\).*\(2, 3, {size}, {size}\)"):
        model(torch.rand(2, 3, size, size))


# ------------------------------------------------------------------------------------------- item 8
@pytest.mark.parametrize(
    ("option", "error", "match"),
    [
        ({"k": 1}, ValueError, "k must satisfy"),
        ({"k": 31}, ValueError, r"k must satisfy 2 <= k < number of points \(n \+ m = 31\)"),
        ({"k": 6.0}, TypeError, "k must be an int"),
        ({"sigma_neighbor": 7}, ValueError, "sigma_neighbor"),
        ({"kernel": "cosine"}, ValueError, "kernel"),
        ({"solver": "lu"}, ValueError, "solver"),
        ({"gamma": -1.0}, ValueError, "gamma"),
        ({"gamma": "big"}, TypeError, "gamma"),
    ],
)
def test_constructor_checks_every_option(option: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _model(**option)


def test_k_up_to_template_size_works_for_a_single_image() -> None:
    model = _model(k=30, sigma_neighbor=4)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3)


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def test_wrong_shape_and_nan_weights_refused(tmp_path: Path) -> None:
    state = resnet56().state_dict()
    wrong = {**state, "linear.weight": torch.zeros(5, 64)}
    with pytest.raises(ValueError, match=r"wrong shapes.*linear.weight: \(5, 64\) \(expected \(10, 64\)\)"):
        load_pretrained("resnet56", weights=_save(wrong, tmp_path / "w.th"), check_hash=False)
    nan = {**state, "conv1.weight": torch.full_like(state["conv1.weight"], float("nan"))}
    with pytest.raises(ValueError, match=r"NaN or infinite values in \['conv1.weight'\]"):
        load_pretrained("resnet56", weights=_save(nan, tmp_path / "n.th"), check_hash=False)


def test_offline_download_is_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setitem(sys.modules, "torchvision.datasets.utils", None)  # import fails -> urllib
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="could not download CIFAR-10.*offline machine") as info:
        data.load_cifar10(tmp_path, download=True)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not list(tmp_path.glob(".download-*"))


# ------------------------------------------------------------------------------ records (items 1-3, 8)
RUN = {"run": {"n": 2, "start": 0, "seed": 0}, "protocol": "main"}


def _record(**kwargs: object) -> CellRecord:
    base = dict(model="softmax", defence="none", attack="fgsm", eps=0.02, protocol="main", accuracy=0.5, n=2,
                per_image_correct=[1, 0], image_indices=[0, 1], settings={**RUN, "victim": {}})  # fmt: skip
    return CellRecord(**{**base, **kwargs})  # type: ignore[arg-type]


def test_opening_writes_nothing_and_files_follow_the_umask(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = RunStore(out, RUN)
    assert not out.exists() and store.get(_record().key) is None
    old = os.umask(0o027)
    try:
        store.put(_record())
    finally:
        os.umask(old)
    for p in (out / "run.json", store.path(_record().key)):
        assert p.stat().st_mode & 0o777 == 0o640, p
    assert store.get(_record().key) == _record()


def test_refusal_names_each_differing_setting(tmp_path: Path) -> None:
    RunStore(tmp_path, RUN).put(_record())
    other = {"run": {"n": 4, "start": 0, "seed": 1}, "protocol": "main"}
    with pytest.raises(ValueError, match=r"run.n: 2 -> 4; run.seed: 0 -> 1"):
        RunStore(tmp_path, other)


@pytest.mark.parametrize("how", ["truncate", "empty", "nul_fill", "drop_field", "edit_accuracy", "other_run"])
def test_invalid_cells_named_and_set_aside(
    tmp_path: Path, how: str, fault: Callable[[Path, str, Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    store = RunStore(tmp_path / "run", RUN)
    store.put(_record())
    path = store.path(_record().key)
    other = tmp_path / "other.json"  # a valid record, hash and all, of another run
    other.write_text(_record(settings={"run": {"n": 2, "start": 0, "seed": 7}, "protocol": "main"}).to_json())
    fault(path, how, other)
    damaged = path.read_bytes()
    with pytest.raises(RecordError, match=str(path)):
        read_records(tmp_path / "run")  # the library reader refuses, moving nothing
    assert path.read_bytes() == damaged
    with caplog.at_level(logging.WARNING, logger="wnll_art.evaluation"):
        assert store.get(_record().key) is None
    assert str(path) in caplog.text and "recomputing" in caplog.text
    assert not path.exists() and store.rejected[0].read_bytes() == damaged


def test_consistency_checks_without_the_hash(tmp_path: Path) -> None:
    path = tmp_path / f"{_record().key}.json"
    for bad, match in [
        ({"accuracy": 1.0}, "disagrees"),
        ({"n": 3}, "n=3"),
        ({"image_indices": [0, 5]}, "indices"),
    ]:
        path.write_text(_record(**bad).to_json())  # hash matches; the numbers do not
        with pytest.raises(RecordError, match=match):
            load_record(path, RUN)


def test_rejected_files_are_never_overwritten(tmp_path: Path) -> None:
    store = RunStore(tmp_path, RUN)
    for _ in range(2):
        store.put(_record())
        store.path(_record().key).write_text("{")
        assert store.records() == []
    assert sorted(p.name for p in (tmp_path / "rejected").iterdir()) == [
        f"{_record().key}.json", f"{_record().key}.json.1"
    ]  # fmt: skip


def test_device_facts_are_treated_like_library_versions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another machine's folder is not refused, but its cells made under other device facts are recomputed."""
    here = {**RUN, "device_facts": {"device": "cpu", "num_threads": 1, "deterministic": False}}
    there = {**RUN, "device_facts": {"device": "cpu", "num_threads": 4, "deterministic": False}}
    RunStore(tmp_path, there).put(_record(settings={**there, "victim": {}}))
    store = RunStore(tmp_path, here)  # no "different settings" refusal
    with caplog.at_level(logging.WARNING, logger="wnll_art.evaluation"):
        assert store.get(_record().key) is None  # set aside: computed with 4 threads
    assert "other device facts (num_threads: 1 -> 4)" in caplog.text
    store.put(_record(settings={**here, "victim": {}}))
    assert json.loads((tmp_path / "run.json").read_text()) == here  # run.json now states this machine
    assert store.get(_record().key) == _record(settings={**here, "victim": {}})
    with pytest.raises(RecordError, match="other device facts"):
        load_record(store.path(_record().key), there)
