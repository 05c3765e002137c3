"""``evaluations/gpu_compare.sh`` takes its defences from the registry (integration tier).

The script runs with ``PYTHON`` set to a shim that records every ``python -m wnll_art evaluate`` call instead of
running it (anything else goes to this interpreter), and with two more ART entries (``median5``, and ``tvm_slow``
marked ``slow``) added to :data:`~wnll_art.adapters.art_preprocessors.ART_PREPROCESSORS` by a ``sitecustomize`` in
its processes, as a user would add them in the file. The jobs it starts must then include them (the slow one only
with ``SLOW_N``), and a shared paper-protocol folder started before them must keep its recorded list.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout"),
]

ROOT = Path(__file__).resolve().parents[2]
EXTRA = """from wnll_art.adapters.art_preprocessors import ART_PREPROCESSORS, ArtEntry
ART_PREPROCESSORS["median5"] = ArtEntry("SpatialSmoothing", {"window_size": 5}, "BPDA")
ART_PREPROCESSORS["tvm_slow"] = ArtEntry("TotalVarMin", {}, "BPDA", channels_first=False, slow=True)
"""
OLD = ["none", "tvm", "jpeg", "spatial_smoothing", "feature_squeezing", "gaussian_noise"]  # registered before
FAST = [*OLD, "median5"]
SLOW = ["art_tvm", "art_tvm_guo", "tvm_slow"]


def _evaluate_calls(tmp_path: Path, **env: str) -> list[list[str]]:
    """The ``evaluate`` command lines the script starts (each as its words after ``evaluate``)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log, shim, site = tmp_path / "calls.txt", tmp_path / "python", tmp_path / "site"
    shim.write_text(f'#!/usr/bin/env bash\nif [ "$1 $2 $3" = "-m wnll_art evaluate" ]; then shift 3; '
                    f'echo "$*" >> {shlex.quote(str(log))}; exit 0; fi\nexec {shlex.quote(sys.executable)} "$@"\n')  # fmt: skip
    shim.chmod(0o755)
    site.mkdir()
    (site / "sitecustomize.py").write_text(EXTRA)
    path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run_env = {**os.environ, "PYTHONPATH": path, "OUT": str(tmp_path / "out"), "WEIGHTS": "w.th", "DEVICE": "cpu",
               "N": "4", "JOBS": "2", "PYTHON": str(shim), "RES": str(tmp_path / "res"), **env}  # fmt: skip
    done = subprocess.run(["bash", "evaluations/gpu_compare.sh"], cwd=ROOT, env=run_env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr  # 1: no evaluation ran (no folder, or only a stub: phase 3 fails)
    return [line.split() for line in log.read_text().splitlines()]


def _option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def _jobs(calls: list[list[str]]) -> dict[str, tuple[str, str, str]]:
    """Each call's run folder name -> (protocol, defences, n)."""
    return {Path(_option(c, "--out")).name: (_option(c, "--protocol"), _option(c, "--defences"), _option(c, "--n"))
            for c in calls}  # fmt: skip


def test_the_script_runs_every_registered_defence_and_the_slow_ones_only_with_slow_n(tmp_path: Path) -> None:
    calls = _evaluate_calls(tmp_path / "a")
    assert "no run folder was written" in (tmp_path / "a" / "out" / "log.txt").read_text()
    assert all(_option(c, "--device") == "cpu" for c in calls)
    assert _jobs(calls) == {
        "adversarial": ("adaptive", "none,tvm", "4"), "adversarial_paper": ("paper", "none,tvm", "4"),
        **{f"defences_{d}": ("adaptive", d, "4") for d in FAST}, "defences_paper": ("paper", ",".join(FAST), "4"),
    }  # fmt: skip

    slow = {k: v for k, v in _jobs(_evaluate_calls(tmp_path / "b", SLOW_N="2")).items() if v[1] in SLOW}
    assert slow == {f"{d}_{p}_n2": (p, d, "2") for d in SLOW for p in ("adaptive", "paper")}


def test_a_shared_paper_folder_keeps_its_list_and_later_entries_get_their_own(tmp_path: Path) -> None:
    folder = tmp_path / "res" / "defences_paper"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"protocol": "paper", "run": {"defences": OLD, "n": 4}}))
    (tmp_path / "res" / "logs").mkdir()
    (tmp_path / "res" / "logs" / "stale.rc").write_text("124\n")  # an earlier call's job
    jobs = _jobs(_evaluate_calls(tmp_path))
    assert "stale" not in (tmp_path / "out" / "log.txt").read_text()
    assert jobs["defences_paper"] == ("paper", ",".join(OLD), "4")  # as recorded: the folder resumes
    assert jobs["paper_median5"] == ("paper", "median5", "4")
    assert not {k for k in jobs if k.startswith("paper_")} - {"paper_median5"}


def test_phase_two_runs_the_ladders_then_the_budget_reruns_that_checks_asks_for(tmp_path: Path) -> None:
    """Phase 2 on a folder already there: ``checks`` (then ``checks --budget``) is asked which victims need a
    convergence ladder (a full-budget re-run); each ``--records`` line it prints becomes one job with the ladder's
    (no) sizes, the weights and the device, any other line (a warning) none; then the report. ``compare_defences.py``
    is replaced by a recorder here: what runs is the script's wiring."""
    folder = tmp_path / "res" / "defences_jpeg"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"protocol": "adaptive", "run": {"defences": ["jpeg"], "n": 4}}))
    log, shim = tmp_path / "calls.txt", tmp_path / "python"
    line = f"--records {folder} --victims softmax+jpeg"
    shim.write_text(f"""#!/usr/bin/env bash
if [ "$1 $2 $3" = "-m wnll_art evaluate" ]; then exit 0; fi
if [ "$1" = evaluations/compare_defences.py ]; then
  case "$2" in
    checks) echo "a warning on stdout"; echo "warn" >&2; echo "{line}"; exit 0 ;;
    convergence|budget|report) shift; echo "$*" >> {shlex.quote(str(log))}; exit 0 ;;
  esac
fi
exec {shlex.quote(sys.executable)} "$@"
""")  # fmt: skip
    shim.chmod(0o755)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WEIGHTS": "w.th", "DEVICE": "cpu", "N": "4", "JOBS": "2",
           "PYTHON": str(shim), "RES": str(tmp_path / "res"), "PYTHONPATH": str(ROOT)}  # fmt: skip
    done = subprocess.run(["bash", "evaluations/gpu_compare.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    calls = log.read_text().splitlines()
    ladder = "--convergence-steps 1,2 --convergence-eot 1 --convergence-images 2"
    assert calls[:2] == [f"convergence {line} {ladder} --weights w.th --device cpu",
                         f"budget {line} --weights w.th --device cpu"], done.stderr  # fmt: skip
    assert calls[2].startswith("report --records ") and len(calls) == 3  # no job for the warning
    text = (tmp_path / "out" / "log.txt").read_text()
    assert "convergence 1: exit 0" in text and "budget 1: exit 0" in text
    assert (tmp_path / "res" / "logs" / "budget.err").read_text() == "warn\n"
