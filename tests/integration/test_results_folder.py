"""A results folder nothing can corrupt, and the threat model checked by the engine, on tiny real runs of
`wnll-art evaluate` (integration tier: real data and weights, softmax only, 4 images).

Two runs racing on one folder (one exits 2 naming the other), a stale lock, close eps values, ``--out ""``,
a folder of the user's own files, a dangling link, a full disk, settings that gain a key, and a projection
widened to 2 eps.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wnll_art import _files as file_io
from wnll_art._files import LOCK_NAME
from wnll_art.attacks import base as attack_base
from wnll_art.cli import main
from wnll_art.evaluation import engine, records
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import ThreatModelError
from wnll_art.evaluation.jobs.main import evaluate
from wnll_art.evaluation.protocols import AttackSpec, PlanOptions
from wnll_art.evaluation.victims import Victim

pytestmark = pytest.mark.integration

EPS = (0.02, 0.02004)  # 4 decimals made these one file
CFG = EvalConfig(n=4, eps=EPS, models=("softmax",), defences=("none",), wnll_batch_size=4, template_size=100)
PLAN = {"attacks": ("fgsm", "fb_cw_l2"), "options": PlanOptions(cw_steps=3)}
CELLS = 1 + 2 * 2 + 2  # clean, 2 attacks x 2 eps, a worst case per eps


def _cli_args(out: Path | str, cifar_root: Path, hub_dir: Path) -> list[str]:
    return ["evaluate", "--out", str(out), "--n", "4", "--wnll-batch-size", "4", "--template-size", "100",
            "--models", "softmax", "--defences", "none", "--attacks", "fgsm", "--eps", "0.02,0.04",
            "--no-progress", "--data-root", str(cifar_root),
            "--weights", str(hub_dir / "hub" / "checkpoints" / "resnet56-4bfd9763.th")]  # fmt: skip


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, cifar_root: Path, hub_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("results_folder") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(hub_dir))
    try:
        evaluate(CFG, **PLAN, out_dir=out, data_root=cifar_root)
    finally:
        mp.undo()
    return out


@pytest.fixture
def run(base: Path, tmp_path: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the finished tiny run."""
    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    shutil.copytree(base, tmp_path / "run")
    return tmp_path / "run"


# --- close eps, and the threat model on valid runs -------------------------------------------------------------


def test_close_eps_get_their_own_cells_and_the_folder_settles(
    run: Path, cifar_root: Path, computed_cells: list[str]
) -> None:
    cells = {p.name: json.loads(p.read_text()) for p in (run / "cells").glob("*.json")}
    assert len(cells) == CELLS and LOCK_NAME not in os.listdir(run)
    for attack in ("fgsm", "fb_cw_l2", "worst_case"):
        assert cells[f"main__softmax__none__{attack}__eps0.0200.json"]["eps"] == 0.02
        assert cells[f"main__softmax__none__{attack}__eps0.02004.json"]["eps"] == 0.02004
    before = _files(run)
    evaluate(CFG, **PLAN, out_dir=run, data_root=cifar_root)
    assert computed_cells == [] and not (run / "rejected").exists()  # every cell read back
    assert _files(run) == before


def test_valid_cells_record_the_measured_perturbation(base: Path) -> None:
    for p in (base / "cells").glob("*.json"):
        rec = json.loads(p.read_text())
        if rec["attack"] == "worst_case":
            continue
        tm = rec["extra"]["threat_model"]
        assert (
            0.0 <= tm["x_adv_min"] <= tm["x_adv_max"] <= 1.0
            and tm["linf_max"] <= rec["eps"] + tm["linf_tolerance"]
        )
        if rec["attack"] == "clean":
            assert tm["linf_max"] == 0.0
        elif rec["attack"] == "fgsm":  # one full step: some pixel moves by exactly eps
            assert tm["linf_max"] == pytest.approx(rec["eps"], abs=1e-6), p.name
        else:  # 3 C&W steps of 0.01 then the eps ball: a perturbation, inside it
            assert 0.0 < tm["linf_max"] <= rec["eps"], p.name


def test_a_widened_projection_fails_the_run(
    tmp_path: Path, cifar_root: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    original = attack_base.project_linf

    def widened(x_adv, x, eps):  # type: ignore[no-untyped-def]
        return original(x_adv, x, 2 * eps)

    out = tmp_path / "run"
    cfg = EvalConfig(**{**CFG.__dict__, "eps": (0.004,)})  # below the 3 C&W steps' reach
    evaluate(cfg, **PLAN, out_dir=tmp_path / "control", data_root=cifar_root)  # the same run, honest projection: fine
    monkeypatch.setattr(attack_base, "project_linf", widened)
    monkeypatch.setattr(engine, "project_linf", widened)
    with pytest.raises(ThreatModelError, match=r"softmax/none/fb_cw_l2 at eps=0.004, batch 0: max \|x_adv - x\| = "
                                               r"0.00[5-8]\d* exceeds eps = 0.004"):  # fmt: skip
        evaluate(cfg, **PLAN, out_dir=out, data_root=cifar_root)
    names = sorted(p.name for p in (out / "cells").glob("*.json"))
    assert names and not [n for n in names if "fb_cw_l2" in n]  # the refused cell is not written
    assert not (out / "results.md").exists() and not (out / LOCK_NAME).exists()


# --- the lock ------------------------------------------------------------------------------------------------------

WAITING_CLI = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import wnll_art.evaluation.jobs.main as job
    from wnll_art.cli import main

    go, real = Path(sys.argv[1]), job.victims_of

    def waiting(*args, **kwargs):  # holds the lock until the test says go
        deadline = time.monotonic() + 300
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return real(*args, **kwargs)

    job.victims_of = waiting
    sys.exit(main(sys.argv[2:]))
""")


def _env(cifar_root: Path, hub_dir: Path) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "WNLL_ART_DATA": str(cifar_root), "TORCH_HOME": str(hub_dir), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}  # fmt: skip


def test_two_runs_racing_on_one_folder(tmp_path: Path, cifar_root: Path, hub_dir: Path) -> None:
    out, go = tmp_path / "run", tmp_path / "go"
    env = _env(cifar_root, hub_dir)
    cmd = [sys.executable, "-c", WAITING_CLI, str(go), *_cli_args(out, cifar_root, hub_dir)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # both start up (imports, data) well within this
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        losers = [p for p in procs if p.poll() is not None]
        assert len(losers) == 1, "no run was refused"
        loser, winner = losers[0], next(p for p in procs if p is not losers[0])
        err = loser.stderr.read()  # type: ignore[union-attr]
        assert loser.returncode == 2, err
        assert err.count("\n") == 1 and err.startswith("wnll-art evaluate: error: --out ")
        assert f"is in use by another run (pid {winner.pid} on {socket.gethostname()}, started 20" in err
        # the plain command line meets the same lock while the winner holds it
        plain = subprocess.run([sys.executable, "-m", "wnll_art.cli", *_cli_args(out, cifar_root, hub_dir)],
                               env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert (
            plain.returncode == 2
            and f"(pid {winner.pid} on " in plain.stderr
            and plain.stderr.count("\n") == 1
        )
        go.touch()
        _, werr = winner.communicate(timeout=600)
        assert winner.returncode == 0, werr[-2000:]
    finally:
        go.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert len(list((out / "cells").glob("*.json"))) == 1 + 2 + 2 and (out / "results.md").is_file()
    assert not (out / LOCK_NAME).exists()  # released at exit


def test_a_stale_lock_is_taken_over(
    run: Path, cifar_root: Path, computed_cells: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"})
    )
    with caplog.at_level(logging.WARNING, logger="wnll_art.evaluation"):
        evaluate(CFG, **PLAN, out_dir=run, data_root=cifar_root)
    assert (
        f"taking over the lock of a run that is gone (pid {dead.pid} on {socket.gethostname()}" in caplog.text
    )
    assert computed_cells == [] and not (run / LOCK_NAME).exists()


# --- --out that is not a folder of ours -----------------------------------------------------------------------


def test_empty_out_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cifar_root: Path,
    hub_dir: Path,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(_cli_args("", cifar_root, hub_dir)) == 2
    err = capsys.readouterr().err
    assert (
        err == "wnll-art evaluate: error: --out is empty; name a results folder (e.g. --out results/run1)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_folder_of_the_users_files_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cifar_root: Path, hub_dir: Path
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.md").write_text("my notes")
    (out / "accuracy_vs_eps__main__fgsm.png").write_bytes(b"\x89PNG my figure")
    before = _files(out)
    assert main(_cli_args(out, cifar_root, hub_dir)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds files that are not a wnll-art run (accuracy_vs_eps__main__fgsm.png, " \
                                      "results.md); choose a new or empty folder" in err  # fmt: skip
    assert _files(out) == before and sorted(os.listdir(out)) == sorted(before)


def test_a_dangling_link_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cifar_root: Path, hub_dir: Path
) -> None:
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "unmounted" / "results")
    assert main(_cli_args(out, cifar_root, hub_dir)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a symbolic link to" in err and "which does not exist" in err, err
    assert sorted(os.listdir(tmp_path)) == ["out"]


# --- a full disk ---------------------------------------------------------------------------------------------


def _disk_full(monkeypatch: pytest.MonkeyPatch, *, after: int = 0, starting: bytes = b"") -> None:
    """``file_io._write_all`` writes half then fails with ENOSPC: from the ``after + 1``-th write on, or for data
    starting with ``starting``."""
    real, calls = file_io._write_all, []

    def full(fd: int, data: bytes) -> None:
        calls.append(1)
        if len(calls) > after and data.startswith(starting):
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(file_io, "_write_all", full)


def test_disk_full_is_one_line_exit_1_and_keeps_finished_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cifar_root: Path,
    hub_dir: Path, computed_cells: list[str],
) -> None:  # fmt: skip
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _disk_full(m, after=3)  # the lock, run.json, the clean cell; then the disk is full
        assert main(_cli_args(out, cifar_root, hub_dir)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wnll-art evaluate: error: cannot write ")
    assert (
        "No space left on device; the results finished so far are kept, and the same command resumes" in err
    )
    assert "eps0.0200.json" in err  # the cell in flight is named
    assert sorted(os.listdir(out)) == ["cells", "run.json"] and not list(out.rglob("*.tmp"))
    kept = [p.name for p in (out / "cells").iterdir()]
    assert kept == ["main__softmax__none__clean__eps0.0000.json"]
    records.load_record(out / "cells" / kept[0])  # whole and valid
    computed_cells.clear()
    assert main(_cli_args(out, cifar_root, hub_dir)) == 0  # resumes
    assert computed_cells == ["softmax/fgsm", "softmax/fgsm"]  # the clean cell was kept, not recomputed


@pytest.mark.parametrize("starting", [b"# Robust accuracy", b"\x89PNG"])
def test_results_md_and_pngs_are_replaced_atomically(
    starting: bytes, run: Path, cifar_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _files(run)
    _disk_full(monkeypatch, starting=starting)
    with pytest.raises(OSError, match="No space left on device"):
        evaluate(CFG, **PLAN, out_dir=run, data_root=cifar_root)  # every cell is read back, then the files rewritten
    assert _files(run) == before  # the earlier table and figures, whole


# --- settings that gain a key ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [AttackSpec, Victim])
@pytest.mark.parametrize(("registered", "value", "reused"), [(True, "legacy", True), (True, "new", False),
                                                            (False, "legacy", False)])  # fmt: skip
def test_settings_that_gain_a_key(
    where: type, registered: bool, value: str, reused: bool, run: Path, cifar_root: Path,
    monkeypatch: pytest.MonkeyPatch, computed_cells: list[str],
) -> None:  # fmt: skip
    real = where.settings

    def gained(self):  # type: ignore[no-untyped-def]
        return {**real(self), "knob": value}

    monkeypatch.setattr(where, "settings", gained)
    if registered:
        monkeypatch.setitem(records.GAINED_SETTINGS, "knob", "legacy")
    if where is AttackSpec and not reused:  # the plan is in run.json: a changed plan is another run
        with pytest.raises(ValueError, match=r'different settings .*plan.0.knob: "<absent>" -> "' + value):
            evaluate(CFG, **PLAN, out_dir=run, data_root=cifar_root)
        return
    evaluate(CFG, **PLAN, out_dir=run, data_root=cifar_root)
    assert len(computed_cells) == (0 if reused else 5), (
        computed_cells
    )  # victim settings: recomputed, not reused
    if reused and where is AttackSpec:
        assert all(s["knob"] == "legacy" for s in json.loads((run / "run.json").read_text())["plan"])
