"""ResNet-56 and the model zoo on synthetic checkpoints (fast)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from wnll_art import ZOO, load_pretrained, resnet56, zoo
from wnll_art.zoo import ZooEntry


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet56().eval()


def test_shapes_and_head_split(model: torch.nn.Module) -> None:
    x = torch.rand(3, 3, 32, 32)
    feats = model.features(x)
    assert feats.shape == (3, 64)
    torch.testing.assert_close(model(x), model.linear(feats))


def test_normalisation_is_buffer_not_state(model: torch.nn.Module) -> None:
    names = dict(model.named_buffers())
    assert "mean" in names and "std" in names
    assert "mean" not in model.state_dict() and "std" not in model.state_dict()
    torch.testing.assert_close(names["mean"].flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_option_a_shortcut_is_parameter_free(model: torch.nn.Module) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 853_018  # He et al. report 0.85M; conv + BN + linear, no shortcut weights


@pytest.mark.parametrize(
    ("x", "err", "match"),
    [
        (torch.rand(2, 32, 32, 3), ValueError, "channels-last"),
        (torch.rand(3, 32, 32), ValueError, "shape"),
        (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), TypeError, "floating-point"),
        (torch.rand(2, 3, 32, 32) * 255, ValueError, r"\[0.0, 1.0\]"),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, "NaN"),
        (torch.empty(0, 3, 32, 32), ValueError, "empty"),
        ([[0.0]], TypeError, "Tensor"),
    ],
)
def test_bad_inputs(model: torch.nn.Module, x: object, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        model(x)


def _fake_checkpoint(tmp_path: Path) -> tuple[Path, str]:
    torch.manual_seed(1)
    net = resnet56()
    state = {f"module.{k}": v for k, v in net.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "fake-resnet56.th"
    torch.save({"best_prec1": 0.0, "state_dict": state}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def fake_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    path, digest = _fake_checkpoint(tmp_path)
    entry = ZooEntry(
        url="https://example.invalid/w/fake-resnet56.th",
        sha256=digest,
        reference_accuracy=10.0,
        builder=resnet56,
    )
    monkeypatch.setitem(ZOO, "fake", entry)
    return path, digest


def test_loads_from_path_strips_module_prefix(fake_entry: tuple[Path, str]) -> None:
    path, _ = fake_entry
    model = load_pretrained("fake", weights=path)
    assert not model.training
    saved = torch.load(path, weights_only=True)["state_dict"]
    torch.testing.assert_close(model.conv1.weight, saved["module.conv1.weight"])


def test_loads_from_hub_cache(
    fake_entry: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = fake_entry
    home = tmp_path / "home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / "fake-resnet56.th").write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert zoo.cached_weights_path(ZOO["fake"]).parent == home / "hub" / "checkpoints"
    model = load_pretrained("fake")
    torch.testing.assert_close(
        model.linear.bias, torch.load(path, weights_only=True)["state_dict"]["module.linear.bias"]
    )


def test_wrong_hash_refused(fake_entry: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = fake_entry
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_pretrained("resnet56", weights=path)


def test_truncated_checkpoint_refused(fake_entry: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = fake_entry
    cut = tmp_path / "cut.th"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_pretrained("fake", weights=cut)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_pretrained("fake", weights=cut, check_hash=False)


def test_not_a_checkpoint_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_pretrained("resnet56", weights=text, check_hash=False)
    other = tmp_path / "other.pt"
    torch.save({"linear.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ValueError, match="does not fit"):
        load_pretrained("resnet56", weights=other, check_hash=False)


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_pretrained("resnet56", weights=tmp_path / "nope.th")
    with pytest.raises(KeyError, match="resnet56"):
        load_pretrained("resnet1000")


def test_offline_cache_miss_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(zoo.torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match="TORCH_HOME"):
        load_pretrained("resnet56")
