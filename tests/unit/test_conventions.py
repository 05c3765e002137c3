"""Packaging conventions: ``py.typed`` shipped, ``wnll-art --version``, ``python -m wnll_art``."""

from __future__ import annotations

import re
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


def _readme_row(start: str) -> str:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| `{start}(")]
    assert len(rows) == 1, f"README has {len(rows)} table rows for {start}"
    return rows[0].split("`")[1]


def test_readme_states_the_real_defaults() -> None:
    """The README's signature rows give the defaults the code has (not the values a user should pass)."""
    import inspect

    from wnll_art.adapters.art_tvm import TotalVarMinimization
    from wnll_art.defence import load_defence

    code = _readme_row("TotalVarMinimization")
    params = inspect.signature(TotalVarMinimization).parameters
    stated = dict(re.findall(r"(\w+)=([^,)]+)", code))
    assert {"settings", "clip_values", "seed"} <= stated.keys(), code
    for name, value in stated.items():
        assert value.replace('"', "'") == repr(params[name].default), f"README says {name}={value}"
    row = _readme_row("load_defence")
    assert f"template_size={inspect.signature(load_defence).parameters['template_size'].default}" in row
