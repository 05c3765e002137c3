"""The results folder's pieces without a run: exact cell keys, the threat-model check, atomic writes, the
``--out`` checks, the lock (with and without ``flock``) and the rule for settings that gain a key."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wnll_art import _files
from wnll_art._argparse import UsageError, check_out_dir
from wnll_art._files import LOCK_NAME, LockHeldError, atomic_write, check_results_dir, results_lock
from wnll_art.evaluation import records
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import ThreatModelError, merge_threat, threat_model
from wnll_art.evaluation.parser import run_script
from wnll_art.evaluation.records import cell_key


def _eps_part(eps: float) -> str:
    return cell_key("main", "softmax", "none", "fgsm", eps).split("__eps")[1]


def test_cell_keys_are_exact_and_keep_the_old_names() -> None:
    assert _eps_part(0.02) == "0.0200" and _eps_part(0.0) == "0.0000" and _eps_part(1.0) == "1.0000"
    assert _eps_part(8 / 255) == repr(8 / 255)  # not exact in 4 decimals: its exact repr
    assert _eps_part(0.02004) == "0.02004" and _eps_part(1e-05) == "1e-05"
    assert float(_eps_part(0.02004)) == 0.02004 and float(_eps_part(8 / 255)) == 8 / 255


def test_cell_keys_never_collide() -> None:
    rng = random.Random(0)
    values = {round(rng.random(), rng.randrange(1, 8)) for _ in range(3000)}
    values |= (
        {k / 255 for k in range(1, 256)} | {k / 10000 for k in range(1, 10001)} | {0.02, 0.02004, 0.020001}
    )
    keys = {_eps_part(v) for v in values}
    assert len(keys) == len(values)
    assert all(float(k) == v for k, v in ((_eps_part(v), v) for v in values))  # the key gives the value back


def test_repeated_eps_refused() -> None:
    with pytest.raises(ValueError, match="must not repeat a radius"):
        EvalConfig(eps=(0.02, 0.04, 0.02))


def test_threat_model_measures_and_refuses() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=gen)
    step = (torch.rand(x.shape, generator=gen) * 2 - 1).sign() * 0.03
    inside = (x + step).clamp(0, 1)
    got = threat_model(inside, x, eps=0.03, what="cell")
    assert got["linf_max"] == pytest.approx(float((inside - x).abs().max()))
    assert got["linf_max"] == pytest.approx(0.03, abs=1e-6)
    assert (got["x_adv_min"], got["x_adv_max"]) == (float(inside.min()), float(inside.max()))
    with pytest.raises(ThreatModelError, match=r"cell: max \|x_adv - x\| = 0.03.* exceeds eps = 0.02"):
        threat_model(inside, x, eps=0.02, what="cell")
    with pytest.raises(ThreatModelError, match="outside \\[0, 1\\]"):
        threat_model(x + step, x, eps=0.03, what="cell")  # in the ball, out of range
    nan = inside.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ThreatModelError):
        threat_model(nan, x, eps=0.03, what="cell")
    with pytest.raises(ThreatModelError, match="shape"):
        threat_model(inside[:2], x, eps=0.03, what="cell")
    merged = merge_threat([got, {**got, "linf_max": 0.01, "x_adv_min": -0.0, "x_adv_max": 0.5}])
    assert merged["linf_max"] == got["linf_max"] and merged["x_adv_max"] == got["x_adv_max"]


def _enospc_after_half(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _files._write_all

    def full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_files, "_write_all", full)


def test_atomic_write_on_a_full_disk_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "results.md"
    atomic_write(target, "old table")
    _enospc_after_half(monkeypatch)
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device") as info:
        atomic_write(target, "new table " * 1000)
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == "old table" and sorted(p.name for p in tmp_path.iterdir()) == ["results.md"]


def test_out_checks(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--out is empty"):
        check_out_dir("")
    with pytest.raises(UsageError, match="--out is empty"):
        check_out_dir("  ")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    for out in (link, link / "sub"):
        with pytest.raises(NotADirectoryError, match="is a symbolic link to .*missing, which does not exist"):
            check_out_dir(out)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "real").mkdir()
    (tmp_path / "good").symlink_to(tmp_path / "real")
    assert check_out_dir(tmp_path / "good") == tmp_path / "good"


def test_a_folder_not_ours_is_refused(tmp_path: Path) -> None:
    check_results_dir(tmp_path / "new")  # missing: fine
    check_results_dir(tmp_path)  # empty: fine
    (tmp_path / LOCK_NAME).write_text("{}")
    check_results_dir(tmp_path)  # only a lock: fine
    (tmp_path / "results.md").write_text("mine")
    with pytest.raises(UsageError, match=r"holds files that are not a wnll-art run \(results.md\)"):
        check_results_dir(tmp_path)
    (tmp_path / "cells").mkdir()
    check_results_dir(tmp_path)  # a run of ours


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lock_file(out: Path, pid: int, host: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    path.write_text(
        json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00"})
    )
    return path


def test_lock_held_names_the_holder_and_is_released(tmp_path: Path) -> None:
    out = tmp_path / "a" / "run"
    with results_lock(out):
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
        named = f"in use by another run (pid {os.getpid()} on {socket.gethostname()}, started {holder['started']})"
        with pytest.raises(LockHeldError, match=re.escape(named)), results_lock(out):
            pass
    assert not (tmp_path / "a").exists()  # what the lock created and left empty is removed
    out.mkdir(parents=True)
    (out / "mine").write_text("x")
    with results_lock(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["mine"]


@pytest.mark.parametrize("flock", [True, False])
def test_stale_lock_taken_over_with_a_warning(
    flock: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if not flock:  # a file system without flock: the pid decides
        monkeypatch.setattr(_files, "_flock", lambda fd: None)
    pid = _dead_pid()
    _lock_file(tmp_path, pid)
    with caplog.at_level(logging.WARNING, logger="wnll_art.evaluation"), results_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of a run that is gone (pid {pid} on {socket.gethostname()}" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_without_flock_a_live_or_foreign_holder_is_respected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files, "_flock", lambda fd: None)
    path = _lock_file(tmp_path, os.getppid())  # alive
    with pytest.raises(LockHeldError, match=f"pid {os.getppid()} on"), results_lock(tmp_path):
        pass
    _lock_file(tmp_path, _dead_pid(), host="elsewhere")  # another host: cannot tell, so held
    with pytest.raises(LockHeldError, match="on elsewhere"), results_lock(tmp_path):
        pass
    assert path.exists()  # a refused run leaves the holder's lock alone


@pytest.mark.parametrize(
    ("registered", "current", "same"),
    [({"attack.knob": 1}, 1, True), ({"knob": 1}, 1, True), ({"attack.knob": 1}, 2, False), ({}, 1, False),
     ({"other.knob": 1}, 1, False)],
)  # fmt: skip
def test_a_gained_key_matches_only_when_registered_with_the_current_value(
    registered: dict[str, int], current: int, same: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in registered.items():
        monkeypatch.setitem(records.GAINED_SETTINGS, key, value)
    stored = {"spec": {"attack": {"steps": 3}}, "plan": [{"attack": {"steps": 3}}]}
    now = {
        "spec": {"attack": {"steps": 3, "knob": current}},
        "plan": [{"attack": {"steps": 3, "knob": current}}],
    }
    assert (records._differences(stored, now, stored="old") == []) is same
    assert (records._differences(now, stored, stored="new") == []) is same
    assert records._differences(now, stored) != []  # without a stored side every difference counts
    lost = records._differences({"spec": {"attack": {"steps": 3, "knob": 1}}}, {"spec": {"attack": {"steps": 3}}},
                                stored="old")  # fmt: skip
    assert lost == ['spec.attack.knob: 1 -> "<absent>"']  # a key the run lost always counts


def test_the_scripts_hold_the_lock_and_report_faults_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = argparse.Namespace(out=str(out), deterministic=False)
    seen: list[bool] = []
    assert run_script(lambda: seen.append((out / LOCK_NAME).is_file()), "prog", args) == 0
    assert seen == [True] and not out.exists()  # held while the body ran, released and cleaned up after
    with results_lock(out):
        assert run_script(lambda: seen.append(False), "prog", args) == 2
    err = capsys.readouterr().err
    assert (
        seen == [True] and err.count("\n") == 1 and f"is in use by another run (pid {os.getpid()} on " in err
    )

    def full() -> None:
        atomic_write(out / "table.md", "x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "cells" / "c.json"))

    assert run_script(full, "prog", args) == 1
    err = capsys.readouterr().err
    assert err == (f"prog: error: No space left on device: {out / 'cells' / 'c.json'}; the results finished so far "
                   "are kept, and the same command resumes\n")  # fmt: skip
    assert (out / "table.md").read_text() == "x"
