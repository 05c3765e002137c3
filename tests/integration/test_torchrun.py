"""``torchrun --nproc_per_node 2`` (CPU, gloo) on ``wnll-art evaluate`` gives the per-image results of one process.

Both runs are subprocesses with one OpenMP thread each: the same thread count on both sides keeps float
reductions, and so every prediction, bitwise comparable (and avoids oversubscribing a small machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as tdist

pytestmark = pytest.mark.integration

if not tdist.is_available() or not tdist.is_gloo_available():
    pytest.skip(
        "torch.distributed with the gloo backend is not available in this torch build",
        allow_module_level=True,
    )


def _evaluate(
    out: Path, launcher: list[str], cifar_root: Path, hub_dir: Path
) -> subprocess.CompletedProcess[str]:
    # --num-images: torchrun's own argument parser rejects --n as an ambiguous abbreviation of its options
    args = ["-m", "wnll_art.cli", "evaluate", "--num-images", "8", "--wnll-batch-size", "4", "--template-size", "100",
            "--eps", "0.08", "--attacks", "fgsm,bim,transfer_bim", "--defences", "none,tvm",
            "--eot-samples", "2", "--no-progress", "--data-root", str(cifar_root), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "TORCH_HOME": str(hub_dir), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *launcher, *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_torchrun_two_processes_match_one(tmp_path: Path, cifar_root: Path, hub_dir: Path) -> None:
    single = _evaluate(tmp_path / "single", [], cifar_root, hub_dir)
    assert single.returncode == 0, single.stderr[-3000:]
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    sharded = _evaluate(tmp_path / "sharded", launcher, cifar_root, hub_dir)
    if sharded.returncode != 0 and "gloo" in sharded.stderr.lower() and "error" in sharded.stderr.lower():
        pytest.skip(f"gloo could not start here: {sharded.stderr[-500:]}")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert sharded.stdout.count("| main | wnll | none | bim |") == 2  # both ranks ran and read the table
    one = {p.name: json.loads(p.read_text()) for p in sorted((tmp_path / "single" / "cells").glob("*.json"))}
    two = {p.name: json.loads(p.read_text()) for p in sorted((tmp_path / "sharded" / "cells").glob("*.json"))}
    assert one and sorted(one) == sorted(two)
    for name, rec in one.items():
        assert rec["image_indices"] == two[name]["image_indices"] == list(range(8))
        assert rec["per_image_correct"] == two[name]["per_image_correct"], name
        assert rec["accuracy"] == two[name]["accuracy"] and rec["flags"] == two[name]["flags"], name
    assert any(
        r["accuracy"] < one["main__softmax__none__clean__eps0.0000.json"]["accuracy"] for r in one.values()
    )
