"""``evaluations/gpu_compare.sh`` takes its defences from the registry (integration tier).

The script runs with ``PYTHON`` set to a shim that records every ``python -m wnll_art evaluate`` call instead of
running it (anything else goes to this interpreter), and with one more ART entry (``median5``) added to
:data:`~wnll_art.adapters.art_preprocessors.ART_PREPROCESSORS` by a ``sitecustomize`` in its processes, as a user
would add it in the file: the jobs it starts must then include that entry, and ART's slow ones only with ``SLOW_N``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wnll_art.adapters.art_preprocessors import ART_PREPROCESSORS
from wnll_art.evaluation.victims import PURIFIERS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout"),
]

ROOT = Path(__file__).resolve().parents[2]
EXTRA = """from wnll_art.adapters.art_preprocessors import ART_PREPROCESSORS, ArtEntry
ART_PREPROCESSORS["median5"] = ArtEntry("SpatialSmoothing", {"window_size": 5}, "BPDA")
"""


def _evaluate_calls(tmp_path: Path, **env: str) -> list[list[str]]:
    """The ``evaluate`` command lines the script starts (each as its words after ``evaluate``)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls.txt"
    shim = tmp_path / "python"
    shim.write_text(f'#!/usr/bin/env bash\nif [ "$1 $2 $3" = "-m wnll_art evaluate" ]; then shift 3; echo "$*" >> {log}; '
                    f'exit 0; fi\nexec {sys.executable} "$@"\n')  # fmt: skip
    shim.chmod(0o755)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(EXTRA)
    path = os.pathsep.join([str(tmp_path / "site"), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run_env = {**os.environ, "PYTHONPATH": path, "OUT": str(tmp_path / "out"), "RES": str(tmp_path / "res"), "WEIGHTS": "w.th",
               "DEVICE": "cpu", "N": "4", "JOBS": "2", "PYTHON": str(shim), **env}  # fmt: skip
    done = subprocess.run(["bash", "evaluations/gpu_compare.sh"], cwd=ROOT, env=run_env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr  # 1: no evaluation ran, so no run folder was written
    assert "no run folder was written" in (tmp_path / "out" / "log.txt").read_text()
    return [line.split() for line in log.read_text().splitlines()]


def _option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_the_script_runs_every_registered_defence_and_the_slow_ones_only_with_slow_n(tmp_path: Path) -> None:
    slow = [n for n in PURIFIERS.names() if n in ART_PREPROCESSORS and ART_PREPROCESSORS[n].slow]
    fast = [*(n for n in PURIFIERS.names() if n not in slow), "median5"]  # the registry's, then the added entry
    assert {"none", "tvm", "jpeg"} <= set(fast) and {"art_tvm", "art_tvm_guo"} == set(slow)

    calls = _evaluate_calls(tmp_path / "a")
    adaptive = [_option(c, "--defences") for c in calls if _option(c, "--protocol") == "adaptive"]
    assert sorted(adaptive) == sorted(["none,tvm", *fast])  # the FGSM-RS row (none,tvm), then one job per defence
    (paper,) = [c for c in calls if _option(c, "--out").endswith("defences_paper")]
    assert _option(paper, "--defences").split(",") == fast and _option(paper, "--protocol") == "paper"
    assert all(_option(c, "--n") == "4" and _option(c, "--device") == "cpu" for c in calls)

    with_slow = _evaluate_calls(tmp_path / "b", SLOW_N="2")
    slow_jobs = sorted((_option(c, "--defences"), _option(c, "--protocol"), _option(c, "--n")) for c in with_slow
                       if _option(c, "--defences") in slow)  # fmt: skip
    assert slow_jobs == sorted((d, p, "2") for d in slow for p in ("adaptive", "paper"))
