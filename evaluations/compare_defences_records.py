"""The records of the comparison of defences as files a reader can take away: the deterministic archive of the run
folders (``cells/`` and ``run.json``, convergence cells included), its unpacking, and the ``wnll-art evaluate``
command that rebuilds each folder's settings (read from its ``run.json``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wnll_art._files import atomic_write

__all__ = ["ROOT", "command_of", "convergence_command", "extract_archive", "relative", "write_archive"]

ROOT = Path(__file__).resolve().parents[1]  # the repository
_RUN = {"n": "--n", "start": "--start", "wnll_batch_size": "--wnll-batch-size", "template_size": "--template-size",
        "coupling": "--coupling", "kernel": "--kernel", "tvm_draws": "--tvm-draws", "seed": "--seed", "device": "--device"}  # fmt: skip
_TVM = {"eot_samples": "--eot-samples", "prob": "--tvm-prob", "lamb": "--tvm-lamb", "objective": "--tvm-objective",
        "iterations": "--tvm-iterations"}  # fmt: skip
_OPTIONS = {"steps": "--steps", "restarts": "--restarts", "square_queries": "--square-queries", "cw_steps": "--cw-steps"}
WEIGHTS = "../shared/weights/resnet56-4bfd9763.th"
DATA = "../shared/data"


def relative(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the repository when inside it (or inside another checkout's ``evaluations/``: from
    there on), else as it is."""
    p = Path(path).resolve()
    if p.is_relative_to(ROOT):
        return str(p.relative_to(ROOT))
    parts = p.parts
    if "evaluations" in parts:
        return str(Path(*parts[len(parts) - 1 - parts[::-1].index("evaluations"):]))
    return str(path)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def _defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """``wnll-art evaluate``'s defaults: (the run configuration, the plan's sizes) as ``run.json`` writes them."""
    from wnll_art.evaluation.parser import add_run_options, config_from_args, plan_from_args

    args = add_run_options(argparse.ArgumentParser(), out="-").parse_args([])
    return config_from_args(args).to_dict(), plan_from_args(args).to_dict()


def _plan_flag(settings: Mapping[str, Any]) -> list[str]:
    """``--attacks ...`` when the recorded plan is not the protocol's default plan (as ``evaluate`` trims it)."""
    from wnll_art.evaluation.protocols import PlanOptions, plan

    protocol, models = settings["protocol"], set(settings["run"]["models"])
    recorded = [s["name"] for s in settings["plan"] if s["name"] != "clean"]
    default = [s.name for s in plan(protocol, PlanOptions(**settings["options"]))[1:]
               if s.source == "self" or models != {s.source}]  # fmt: skip
    return [] if recorded == default else ["--attacks", _text(recorded)]


def command_of(settings: Mapping[str, Any], out: str | os.PathLike[str]) -> str:
    """The ``wnll-art evaluate`` command whose ``run.json`` is ``settings`` (every setting that is not the command's
    default is spelled out; re-running it on ``out`` resumes the run)."""
    run, options = settings["run"], settings.get("options", {})
    run_default, options_default = _defaults()
    words = ["WNLL_ART_DATA=" + DATA, "wnll-art", "evaluate", "--protocol", settings["protocol"]]
    words += ["--models", _text(run["models"]), "--defences", _text(run["defences"]), "--eps", _text(run["eps"])]
    words += _plan_flag(settings)
    for key, flag in _RUN.items():
        if key == "n" or run.get(key) != run_default[key]:
            words += [flag, _text(run[key])]
    for key, flag in _TVM.items():
        if run["tvm"].get(key) != run_default["tvm"][key]:
            words += [flag, _text(run["tvm"][key])]
    for key, flag in _OPTIONS.items():
        if key in options and options[key] != options_default[key]:
            words += [flag, _text(options[key])]
    fixed = [f"tvm.{k}={run['tvm'][k]!r}" for k in ("norm", "gradient") if run["tvm"].get(k) != run_default["tvm"][k]]
    line = " ".join([*words, "--weights", WEIGHTS, "--out", relative(out)])
    return line + (f"  # not settable from the command line: {', '.join(fixed)}" if fixed else "")


def convergence_command(folder: str | os.PathLike[str], victims: Sequence[str], *, kind: str = "convergence") -> str:
    """The command that runs the convergence ladders (``kind="budget"``: the full-budget re-runs) of ``victims``
    (``model+defence``) on ``folder``'s run."""
    return (f"WNLL_ART_DATA={DATA} python evaluations/compare_defences.py {kind} --records {relative(folder)} "
            f"--victims {','.join(victims)} --weights {WEIGHTS}")  # fmt: skip


def _members(folders: Sequence[Path]) -> list[Path]:
    """The files of the archive: each folder's ``run.json`` and ``cells/*.json``, and those of its convergence and
    budget runs."""
    out = []
    for folder in folders:
        for root in (folder, folder / "convergence", folder / "budget"):
            out += [p for p in [root / "run.json"] if p.is_file()]
            out += sorted((root / "cells").glob("*.json")) if (root / "cells").is_dir() else []
    return sorted(set(out), key=lambda p: relative(p))


def write_archive(folders: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str]) -> list[str]:
    """Writes the records of ``folders`` to the gzipped tar ``path`` (atomically); returns the member names.

    The archive is a function of the files alone: members sorted by name (their path in the repository), mtime 0,
    owner 0 / 0 without names, mode 0644, no gzip file name or time; the same records give the same bytes.
    """
    members = _members([Path(f) for f in folders])
    if not members:
        raise FileNotFoundError(f"no run.json or cells/*.json under {[str(f) for f in folders]}")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for p in members:
            data = p.read_bytes()
            info = tarfile.TarInfo(relative(p).lstrip("/"))
            info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as gz:
        gz.write(raw.getvalue())
    atomic_write(path, packed.getvalue())
    return [relative(p).lstrip("/") for p in members]


def extract_archive(path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Unpacks an archive of :func:`write_archive` into ``dest``; returns the run folders (those holding a
    ``run.json``, convergence and budget runs left to their parents), sorted."""
    with tarfile.open(path, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    runs = sorted(p.parent for p in Path(dest).rglob("run.json"))
    return [p for p in runs if not (p.name in ("convergence", "budget") and (p.parent / "run.json").is_file())]
