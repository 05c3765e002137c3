"""``examples/heart_evaluation.py`` and ``examples/armory_evaluation.py`` on the full defence, as shipped.

Each runs in a subprocess of this interpreter with its default settings (50 test images as one WNLL batch, PGD
L-inf eps 8/255, 10 steps, BPDA + EOT through TVM) and must print a clean and an adversarial accuracy; the lines
are shown in the test log. CI runs this tier in its second environment (``.ci/run``); elsewhere it is skipped.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ecosystem, pytest.mark.slow]


def _needs(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed here: {', '.join(missing)} (see the example's docstring)")


def _run(script: str, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[float, float]:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    with capsys.disabled():
        print(f"\n{script}:\n{done.stdout.strip()}")
    clean = re.search(r"^clean accuracy: ([0-9.]+) \((\d+)/50\)$", done.stdout, re.M)
    adversarial = re.search(r"^adversarial accuracy: ([0-9.]+) \((\d+)/50;", done.stdout, re.M)
    assert clean and adversarial, done.stdout
    return float(clean.group(1)), float(adversarial.group(1))


def _paths(hub_dir: Path, cifar_root: Path) -> list[str]:
    return [
        "--weights",
        str(hub_dir / "hub" / "checkpoints" / "resnet56-4bfd9763.th"),
        "--data-root",
        str(cifar_root),
    ]


def test_heart_example(hub_dir: Path, cifar_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _needs("heart_library", "maite", "torchmetrics")
    clean, adversarial = _run("heart_evaluation.py", _paths(hub_dir, cifar_root), capsys)
    assert clean >= 0.7 and adversarial < clean


def test_armory_example(
    hub_dir: Path, cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs("armory", "lightning", "mlflow", "torchmetrics")
    args = [*_paths(hub_dir, cifar_root), "--armory-home", str(tmp_path / "armory")]
    clean, adversarial = _run("armory_evaluation.py", args, capsys)
    assert clean >= 0.7 and adversarial < clean
    assert (tmp_path / "armory" / "mlruns").is_dir()
