"""Run folders as files: every file replaced atomically, one run at a time (evaluation results and training runs).

* :func:`atomic_write` writes every file of a run folder (cells, ``run.json``, ``results.md``, PNGs, training
  checkpoints): a temporary file beside the target, then ``os.replace``, so a reader or a killed run never sees
  half a file and a failed write (disk full) leaves the earlier file as it was.
* :func:`check_results_dir` refuses, before anything is written, an ``--out`` that holds files but no run of
  ours (an evaluation's: no ``run.json``, no ``cells/``): the user's own ``results.md`` or PNGs are never overwritten.
* :func:`results_lock` holds ``<out>/.wnll-art.lock`` for a whole run. The lock is an ``flock`` on that file
  (the kernel drops it when its holder dies, however it dies); the file names the holder (pid, host, start
  time) so a second run can say who holds it. A lock file found unlocked was left by a run that was killed: it
  is taken over with a warning. Where ``flock`` is unavailable, the pid in the file decides (alive on this host:
  held). The file is removed at exit, and so is the folder when the run created it and left nothing in it.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wnll_art._argparse import UsageError

__all__ = ["LOCK_NAME", "LockHeldError", "atomic_write", "check_results_dir", "results_lock"]

LOCK_NAME = ".wnll-art.lock"
_OURS = ("run.json", "cells")  # what makes a folder an evaluation run of ours
_log = logging.getLogger("wnll_art.evaluation")  # the logger the lock's take-over warning has always used


class LockHeldError(UsageError):
    """The run folder is in use by another run (printed as one line, exit status 2)."""


def _write_all(fd: int, data: bytes) -> None:
    """Writes all of ``data`` to ``fd`` (the one place a results file's bytes are written)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Writes ``data`` (text as UTF-8) to a temporary file beside ``path`` (mode 0666 less the umask), then
    renames it onto ``path``.

    Raises:
        OSError: The write failed (e.g. ``ENOSPC``); the message names ``path``, the temporary file is
            removed and an earlier ``path`` is left as it was.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            _write_all(fd, raw)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _flock(fd: int) -> bool | None:
    """Takes an exclusive ``flock`` on ``fd`` without waiting: taken, held by another, or ``None`` (no flock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock
        return None
    return True


def _holder(fd: int) -> dict[str, Any] | None:
    """Who the lock file names (``None``: nobody yet, or unreadable)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        found = json.loads(os.read(fd, 65536).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder may still run (``True`` when it cannot be told: another host)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "another process (not named yet)"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _acquire(path: Path, flag: str) -> int:
    """Opens and locks ``path``; returns the descriptor, or raises :class:`LockHeldError` naming the holder."""
    holder = None
    for _ in range(40):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder was removed by a run that just released it
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        taken = _flock(fd)
        holder = _holder(fd)
        if taken is None:
            taken = holder is None or not _alive(holder)
        if taken and _same_file(fd, path):  # not a file its last holder unlinked meanwhile
            if holder is not None:
                _log.warning("%s: taking over the lock of a run that is gone (%s)", path, _describe(holder))
            return fd
        os.close(fd)
        if not taken and holder is not None:
            break
        time.sleep(0.05)  # the holder is between taking the lock and naming itself
    raise LockHeldError(f"{flag} {path.parent} is in use by another run ({_describe(holder)}); wait for it to "
                        f"finish or choose another {flag} (if that run is gone: remove {path})")  # fmt: skip


@contextmanager
def results_lock(path: str | os.PathLike[str], flag: str = "--out") -> Iterator[None]:
    """Holds the lock of the run folder ``path`` for the ``with`` block (see the module docstring).

    The folder (and its missing parents) are created; those this call created are removed again at exit when
    they are empty.

    Raises:
        LockHeldError: Another run holds the lock (the message names its pid, host and start time).
    """
    out = Path(path)
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_NAME
    try:
        fd = _acquire(lock, flag)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        _write_all(fd, json.dumps(me).encode())
        yield
    finally:
        if _same_file(fd, lock):
            lock.unlink()
        os.close(fd)
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return


def check_results_dir(path: str | os.PathLike[str], flag: str = "--out", *, ours: tuple[str, ...] = _OURS) -> None:
    """Refuses, writing nothing, a folder that holds files but no run of ours: the user's own files are never
    overwritten.

    A folder is ours when it is missing, empty (a lock file and temporary files aside), or holds one of ``ours``
    (an evaluation's ``run.json`` or ``cells/``); whether its settings fit the run is the run's own check.

    Raises:
        UsageError: ``path`` holds files and none of ``ours``.
    """
    out = Path(path)
    if not out.is_dir() or any((out / name).exists() for name in ours):
        return
    # a lock, and temporary files of an interrupted write (".<name>.<hex>.tmp"), are not the user's
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name != LOCK_NAME and not (p.name.startswith(".") and p.name.endswith(".tmp")))  # fmt: skip
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UsageError(f"{flag} {out} holds files that are not a wnll-art run ({shown}); choose a new or empty "
                         f"folder, or the folder of an earlier run")  # fmt: skip
