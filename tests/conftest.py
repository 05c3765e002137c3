"""Shared fixtures.

Real data comes through the package's own loading code: ``WNLL_ART_DATA`` names the CIFAR-10 root
(CI points it at ``../shared/data``) and ``TORCH_HOME`` a hub cache holding
``hub/checkpoints/resnet56-4bfd9763.th``. When they are unset the fixtures fall back to ``../shared``
beside the checkout (a hub cache is then assembled in a temporary directory with a symlink).
Tests that need real data are skipped, with the reason, when none can be found.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from wnll_art.wnll.model import WNLLNet

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CHECKPOINT_NAME = "resnet56-4bfd9763.th"


def _test_device_name() -> str:
    return os.environ.get("WNLL_ART_TEST_DEVICE", "cpu").strip() or "cpu"


def pytest_configure(config: pytest.Config) -> None:
    """Refuses a ``WNLL_ART_TEST_DEVICE`` that is not a torch device (before any test runs)."""
    name = _test_device_name()
    try:
        kind = torch.device(name).type
    except (RuntimeError, ValueError):
        kind = ""
    if kind not in ("cpu", "cuda"):
        raise pytest.UsageError(f"WNLL_ART_TEST_DEVICE={name!r}: expected cpu, cuda or cuda:N")


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device of the device-relevant tests: ``$WNLL_ART_TEST_DEVICE`` (``cpu``, ``cuda``, ``cuda:N``;
    default ``cpu``). Tests using it are skipped, with the reason, when CUDA is asked for and absent.

    ``WNLL_ART_TEST_DEVICE=cuda python -m pytest -m "not slow"`` runs them on the GPU. A test that moves a
    session-scoped model to this device must move a copy (``copy.deepcopy``), never the shared one.
    """
    name = _test_device_name()
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            pytest.skip(f"WNLL_ART_TEST_DEVICE={name}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            pytest.skip(f"WNLL_ART_TEST_DEVICE={name}: only {torch.cuda.device_count()} CUDA device(s) here")
        if dev.index is None:  # a tensor's device is always indexed ("cuda:0"), and cuda != cuda:0
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _data_root() -> Path | None:
    env = os.environ.get("WNLL_ART_DATA")
    candidates = [Path(env).expanduser().absolute()] if env else []  # tests may chdir later
    candidates.append(SHARED / "data")
    for c in candidates:
        if (c / "cifar-10-batches-py" / "test_batch").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The CIFAR-10 data root (holding ``cifar-10-batches-py/``)."""
    root = _data_root()
    if root is None:
        pytest.skip("CIFAR-10 not found: set WNLL_ART_DATA to a root holding cifar-10-batches-py/")
    return root


@pytest.fixture(scope="session")
def hub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``TORCH_HOME`` directory whose ``hub/checkpoints/`` holds the public ResNet-56 checkpoint."""
    env = os.environ.get("TORCH_HOME")
    if env and (Path(env) / "hub" / "checkpoints" / CHECKPOINT_NAME).is_file():
        return Path(env)
    src = SHARED / "weights" / CHECKPOINT_NAME
    if not src.is_file():
        pytest.skip("pretrained ResNet-56 not found: set TORCH_HOME to a hub cache holding it")
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / CHECKPOINT_NAME).symlink_to(src)
    return home


@pytest.fixture(scope="session")
def test_set(cifar_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 CIFAR-10 test images (uint8, N x 3 x 32 x 32) and labels (int64)."""
    from wnll_art import load_cifar10

    return load_cifar10(cifar_root, split="test")


@pytest.fixture(scope="session")
def pretrained_resnet56(hub_dir: Path) -> torch.nn.Module:
    """The public pretrained ResNet-56 through ``load_pretrained`` (eval mode, CPU)."""
    from wnll_art import load_pretrained

    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(hub_dir)
    try:
        return load_pretrained("resnet56")
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="module")
def tiny_wnll_net() -> WNLLNet:
    """A random 10-class WNLLNet over a one-block CIFAR ResNet (eval mode, CPU): template of 40 random images
    (labels ``arange(40) % 10``), ``k=6``, ``sigma_neighbor=3``, transductive batches of 8. One per test module."""
    from wnll_art.models.resnet import CifarResNet
    from wnll_art.wnll.model import WNLLNet

    torch.manual_seed(0)
    images = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return WNLLNet(
        CifarResNet(1, 10), images, torch.arange(40) % 10, k=6, sigma_neighbor=3, wnll_batch_size=8
    ).eval()


def inject_fault(cell: Path, fault: str, other: Path) -> None:
    """Damages a cell file as a user or a crash might (``other_run``: replaced by ``other``, a valid cell of
    another run)."""
    rec = json.loads(cell.read_text())
    if fault == "truncate":
        cell.write_text(cell.read_text()[:295])
    elif fault == "empty":
        cell.write_text("")
    elif fault == "nul_fill":
        cell.write_bytes(b"\0" * cell.stat().st_size)
    elif fault == "drop_field":
        del rec["per_image_correct"]
        cell.write_text(json.dumps(rec, indent=1))
    elif fault == "edit_accuracy":
        rec["accuracy"] = 1.0 - rec["accuracy"] + 0.25
        cell.write_text(json.dumps(rec, indent=1))
    elif fault == "other_run":
        shutil.copyfile(other, cell)
    else:
        raise ValueError(f"unknown fault {fault!r}")


@pytest.fixture
def fault() -> Callable[[Path, str, Path], None]:
    """:func:`inject_fault`."""
    return inject_fault
