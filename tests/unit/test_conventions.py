"""Packaging conventions: ``py.typed`` shipped, ``wnll-art --version``, ``python -m wnll_art``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import wnll_art
from wnll_art.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_py_typed_is_package_data() -> None:
    """mypy treats the package as typed only when ``py.typed`` is installed with it (PEP 561)."""
    assert (Path(wnll_art.__file__).parent / "py.typed").is_file()
    text = (ROOT / "pyproject.toml").read_text()  # tomllib needs Python 3.11; the package supports 3.10
    package_data = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert '"py.typed"' in package_data


def test_version_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"wnll-art {wnll_art.__version__}"


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "wnll_art", "--version"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"wnll-art {wnll_art.__version__}"
