"""`wnll-art evaluate` killed mid-run (SIGKILL) loses at most the cell in flight (integration tier)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ARGS = ["--n", "4", "--wnll-batch-size", "4", "--template-size", "100", "--defences", "none", "--attacks",
        "fgsm,bim", "--eps", "0.02,0.04,0.08", "--no-progress"]  # fmt: skip


def _cells(out: Path) -> dict[str, tuple[float, list[int]]]:
    """Cell file -> (compute time, per-image results); a recomputed cell would get a new time."""
    if not (out / "cells").is_dir():
        return {}
    cells = {}
    for p in (out / "cells").glob("*.json"):
        rec = json.loads(p.read_text())
        cells[p.name] = (rec["time_s"], rec["per_image_correct"])
    return cells


def test_sigkill_then_resume(tmp_path: Path, cifar_root: Path, hub_dir: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "WNLL_ART_DATA": str(cifar_root), "TORCH_HOME": str(hub_dir), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "wnll_art.cli", "evaluate", "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(_cells(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _cells(out)
    total = 2 * (1 + 2 * 3) + 2 * 3  # + a worst case per model and eps (written at the end)
    assert 3 <= len(before) < total
    assert not list((out / "cells").glob(".*.tmp"))  # nothing half-written
    lock = json.loads((out / ".wnll-art.lock").read_text())  # the killed run could not release its lock
    assert lock["pid"] == proc.pid
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        f"taking over the lock of a run that is gone (pid {proc.pid} on " in done.stderr
    )  # stale: taken over
    assert not (out / ".wnll-art.lock").exists()
    after = _cells(out)
    assert len(after) == total
    assert all(after[name] == cell for name, cell in before.items())  # read back, not recomputed
    assert "| main | wnll | none | bim |" in (out / "results.md").read_text()
