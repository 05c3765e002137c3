"""Result records: one JSON file per (model, defence, attack, eps) cell, and the results directory holding them.

Records follow RobustBench's habit of plain JSON a person can read and a program can parse. Each cell is
written atomically (temporary file + rename, with the permissions the umask gives) as soon as it finishes, so
a killed run loses at most the cell in flight, and a re-run with the same output directory and settings reads
finished cells back.

Every record read back is validated before it is used: its ``sha256`` (over all its other fields), its
internal consistency and its fit to the run (``settings.run``, image indices, and, as facts of the machine that
set a cell aside without refusing the folder, library versions and device facts); a record that fails is never
deleted but moved to ``<root>/rejected/`` with a logged line, and the cell recomputed (:class:`RunStore`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from wnll_art._device import library_versions
from wnll_art._files import atomic_write

__all__ = ["DEVICE_FACTS", "SCHEMA", "CellRecord", "RecordError", "RunStore", "cell_key", "load_record",
           "per_image_minimum", "read_records"]  # fmt: skip

SCHEMA = "wnll-art/cell/v2"
DEVICE_FACTS = (
    "device_facts"  # key of the device facts in run settings (run.json and every record's settings)
)
_log = logging.getLogger("wnll_art.evaluation")

GAINED_SETTINGS: dict[str, Any] = {
    # the WNLL ablation switches of the authors' scripts (AuthorsScript; their defaults are the scripts)
    "attack.wnll_loss": "script", "attack.wnll_graph": "script", "attack.wnll_template": "script",
    "attack.wnll_ball": "script", "attack.cw_output": "scaled",
}  # fmt: skip
"""Settings keys added after cells were stored, each with the value that computes what the code did before the key
existed (``{"attack.restarts": 1}``: any path ending in ``attack.restarts``). Stored settings lacking such a key
match a run whose value is that one, and no other; an unregistered new key never matches (see ``DEVELOPERS.md``)."""


class RecordError(ValueError):
    """A cell file that cannot be trusted: unreadable, incomplete, inconsistent or from another run."""


def cell_key(protocol: str, model: str, defence: str, attack: str, eps: float) -> str:
    """File-name-safe identifier of a cell (its file is ``cells/<key>.json``).

    Distinct eps get distinct keys: eps is written with 4 decimals when they give back its exact value (the
    names of earlier folders, which stay readable: ``eps0.0200``), else as its shortest exact ``repr``
    (``eps0.02004``, ``eps1e-05``), which never has exactly 4 decimals, so the two forms cannot meet.
    """
    short = f"{eps:.4f}"
    exact = short if float(short) == eps else repr(float(eps))
    return f"{protocol}__{model}__{defence}__{attack}__eps{exact}"


@dataclass
class CellRecord:
    """One robustness number with everything needed to reproduce and audit it.

    Attributes:
        model: ``"softmax"`` or ``"wnll"`` (or a zoo name).
        defence: ``"none"`` or a preprocessor name (``"tvm"``, ``"jpeg"``, ...).
        attack: Attack name (``"fgsm"``, ``"bim"``, ``"cw_l2"``, ``"adaptive_min"``, ...).
        eps: L-infinity radius in [0, 1] pixel units (0 for clean accuracy).
        protocol: ``"main"``, ``"paper"`` or ``"adaptive"``.
        accuracy: Fraction of the ``n`` images classified correctly after the attack.
        n: Number of images.
        per_image_correct: 0/1 per image, in image order (lets protocols take per-image minima).
        image_indices: Indices of the images in the CIFAR-10 test set.
        settings: Every setting of model, defence, attack and run (coupling, batch, template, seed, ...).
        flags: Gradient-masking and sanity warnings attached to this number.
        time_s: Wall time of the cell.
        versions: Library versions.
        extra: Attack-specific measurements (e.g. median L2 norm of CW perturbations).
    """

    model: str
    defence: str
    attack: str
    eps: float
    protocol: str
    accuracy: float
    n: int
    per_image_correct: list[int]
    image_indices: list[int]
    settings: dict[str, Any]
    flags: list[str] = field(default_factory=list)
    time_s: float = 0.0
    versions: dict[str, str] = field(default_factory=library_versions)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    @property
    def key(self) -> str:
        """File-name-safe identifier of the cell."""
        return cell_key(self.protocol, self.model, self.defence, self.attack, self.eps)

    def to_json(self) -> str:
        """The record as JSON, with ``sha256``: the digest of all its other fields."""
        data = json.loads(json.dumps(asdict(self)))
        return json.dumps({**data, "sha256": _digest(data)}, indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellRecord:
        """A record from parsed JSON, after checking its fields, digest and internal consistency.

        Raises:
            RecordError: Missing or unknown fields, a wrong schema or digest, or numbers that disagree.
        """
        if not isinstance(data, dict):
            raise RecordError(f"not a JSON object but {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise RecordError(f"not a {SCHEMA} record (schema={data.get('schema')!r})")
        body = {k: v for k, v in data.items() if k != "sha256"}
        names = {f.name for f in fields(cls)}
        missing, unknown = sorted(names - set(body)), sorted(set(body) - names)
        if missing or unknown:
            raise RecordError(f"missing field(s) {missing}, unknown field(s) {unknown}")
        if data.get("sha256") != _digest(body):
            raise RecordError("its sha256 does not match its contents (edited or damaged)")
        record = cls(**body)
        _check_consistent(record)
        return record


def _digest(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_consistent(r: CellRecord) -> None:
    """Raises :class:`RecordError` unless the record's numbers agree with each other."""
    correct, indices = r.per_image_correct, r.image_indices
    if not isinstance(correct, list) or any(c not in (0, 1) or isinstance(c, bool) for c in correct):
        raise RecordError("per_image_correct is not a list of 0/1")
    if not isinstance(indices, list) or not all(type(i) is int for i in indices):
        raise RecordError("image_indices is not a list of ints")
    if type(r.n) is not int or r.n < 1 or len(correct) != r.n or len(indices) != r.n:
        raise RecordError(f"n={r.n!r} but {len(correct)} per-image results and {len(indices)} image indices")
    if r.accuracy != sum(correct) / r.n:
        raise RecordError(f"accuracy {r.accuracy!r} disagrees with per_image_correct ({sum(correct)}/{r.n})")
    if not isinstance(r.settings, dict) or not isinstance(r.versions, dict):
        raise RecordError("settings and versions must be JSON objects")


def _is_gained(path: str, value: Any) -> bool:
    """Whether ``value`` at ``path`` is a registered gained key's legacy value (:data:`GAINED_SETTINGS`)."""
    return any((path == k or path.endswith(f".{k}")) and json.loads(json.dumps(v)) == value
               for k, v in GAINED_SETTINGS.items())  # fmt: skip


def _differences(
    old: Any, new: Any, prefix: str = "", *, stored: Literal["old", "new"] | None = None
) -> list[str]:
    """``"path: old -> new"`` for every leaf where two JSON values differ (lists of objects item by item).

    ``stored`` (``"old"`` or ``"new"``) names the side read from disk: a key missing there is no difference
    when it is a gained key holding its legacy value on the other side (:data:`GAINED_SETTINGS`).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        disk, now = (old, new) if stored == "old" else (new, old)
        return [d for k in sorted(set(old) | set(new), key=str)
                if not (stored and k not in disk and k in now and _is_gained(f"{prefix}{k}", now[k]))
                for d in _differences(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{prefix}{k}.",
                                      stored=stored)]  # fmt: skip
    both = (*old, *new) if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) else ()
    if both and all(isinstance(v, dict) for v in both):
        return [d for i, (o, n) in enumerate(zip(old, new, strict=True))
                for d in _differences(o, n, f"{prefix}{i}.", stored=stored)]  # fmt: skip
    return [] if old == new else [f"{prefix.rstrip('.')}: {json.dumps(old)} -> {json.dumps(new)}"]


def load_record(path: Path, run: Mapping[str, Any] | None = None) -> CellRecord:
    """Reads and validates one cell file (against ``run``, the run's settings, when given).

    Raises:
        RecordError: The file is not valid JSON or not a valid record (of this run); the message names it.
    """
    try:
        record = CellRecord.from_dict(json.loads(path.read_bytes().decode("utf-8")))
        if run is not None:
            _check_run(record, run)
    except (UnicodeDecodeError, json.JSONDecodeError, RecordError) as exc:
        raise RecordError(f"{path}: {exc}") from None
    if path.name != f"{record.key}.json":
        raise RecordError(f"{path}: holds cell {record.key!r}, not the one its name says")
    return record


def _check_run(record: CellRecord, run: Mapping[str, Any]) -> None:
    """Raises :class:`RecordError` unless the record belongs to a run with settings ``run``."""
    diff = _differences(run["run"], record.settings.get("run"), "run.", stored="new") if "run" in run else []
    if diff:
        raise RecordError(f"settings of another run ({'; '.join(diff[:4])})")
    cfg = run.get("run", {})
    n, start = cfg.get("n"), cfg.get("start")
    if (
        isinstance(n, int)
        and isinstance(start, int)
        and record.image_indices != list(range(start, start + n))
    ):
        raise RecordError(f"image indices are not those of the run (start={start}, n={n})")
    versions = library_versions()
    if record.versions != versions:
        raise RecordError(
            f"computed with other library versions ({'; '.join(_differences(versions, record.versions))})"
        )
    facts = run.get(DEVICE_FACTS)
    found = record.settings.get(DEVICE_FACTS, "<absent>")
    diff = [] if facts is None else _differences(facts, found, stored="new")
    if diff:
        raise RecordError(f"computed under other device facts ({'; '.join(diff[:4])})")


def _without_facts(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != DEVICE_FACTS}


class RunStore:
    """A results directory: ``run.json`` (the settings), ``cells/*.json``, ``results.md``, ``*.png``.

    Opening a store writes nothing: ``run.json`` is written with the first cell, so a run that fails before
    computing anything (bad device, data or weights) leaves the folder as it was. Records read back are
    validated (see the module docstring); a record that fails is moved to ``<root>/rejected/`` (by the
    writer only) with a logged line naming it, and treated as missing.

    Args:
        root: The directory (created with the first cell).
        run_settings: Settings that must match for finished cells to be reused.
        writer: Whether this process writes (rank 0); other ranks only read.

    Raises:
        ValueError: If ``root`` holds a run made with different settings (each difference is named with
            the recorded and the requested value), or an unreadable ``run.json``.
    """

    def __init__(
        self, root: str | os.PathLike[str], run_settings: dict[str, Any], *, writer: bool = True
    ) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.writer = writer
        self.settings: dict[str, Any] = json.loads(json.dumps(run_settings, sort_keys=True))
        self.rejected: list[Path] = []
        self._stale_meta = False
        meta = self.root / "run.json"
        if meta.is_file():
            try:
                previous = json.loads(meta.read_bytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(
                    f"{meta} is not readable JSON ({exc}); move it away or use another --out"
                ) from None
            # device facts, like library versions, are checked per cell (cells made under others are recomputed)
            diff = _differences(_without_facts(previous), _without_facts(self.settings), stored="old")
            self._stale_meta = previous != self.settings
            if diff:
                raise ValueError(
                    f"{self.root} holds a run with different settings (recorded -> requested: {'; '.join(diff)}); "
                    f"use another --out directory or the recorded settings"
                )

    def path(self, key: str) -> Path:
        return self.cells_dir / f"{key}.json"

    def get(self, key: str, *, expected: Mapping[str, Any] | None = None) -> CellRecord | None:
        """The finished, validated record for ``key``, or ``None`` (missing or set aside).

        Args:
            key: The cell's key.
            expected: Fields the record must have (e.g. ``settings``, ``image_indices``), compared as JSON.
        """
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            record = load_record(p, self.settings)
            wanted = json.loads(json.dumps(dict(expected or {}), sort_keys=True))
            found = {k: json.loads(json.dumps(getattr(record, k))) for k in wanted}
            diff = _differences(wanted, found, stored="new")
            if diff:
                raise RecordError(f"{p}: does not fit this run (expected -> found: {'; '.join(diff[:4])})")
        except RecordError as exc:
            self._set_aside(p, exc, "recomputing the cell")
            return None
        return record

    def put(self, record: CellRecord) -> None:
        """Writes ``record`` (and ``run.json`` with the first one, or with this run's device facts)."""
        meta = self.root / "run.json"
        if self._stale_meta or not meta.is_file():
            atomic_write(meta, json.dumps(self.settings, indent=1, sort_keys=True))
            self._stale_meta = False
        atomic_write(self.path(record.key), record.to_json())

    def records(self) -> list[CellRecord]:
        """All valid records of this run, sorted by key (invalid ones are set aside and left out)."""
        out = []
        for p in sorted(self.cells_dir.glob("*.json")) if self.cells_dir.is_dir() else []:
            try:
                out.append(load_record(p, self.settings))
            except RecordError as exc:
                self._set_aside(p, exc, "left out of the results")
        return out

    def _set_aside(self, path: Path, why: Exception, then: str) -> None:
        """Moves an invalid cell file to ``rejected/`` (never overwriting an earlier one) and says so."""
        if not self.writer:
            return
        target = self.root / "rejected" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        k = 1
        while target.exists():
            target, k = target.with_name(f"{path.name}.{k}"), k + 1
        os.replace(path, target)
        self.rejected.append(target)
        _log.warning("invalid cell %s; moved to %s; %s", why, target, then)


def per_image_minimum(
    records: Sequence[CellRecord], *, attack: str, protocol: str, include_clean: bool = False
) -> list[CellRecord]:
    """Per (model, defence, eps): an image counts as robust only if every attack left it correct.

    Args:
        records: Records of one set of images (same ``image_indices`` throughout).
        attack: Attack name of the new records (e.g. ``"worst_case"``).
        protocol: Protocol of the new records.
        include_clean: Also require the image to be correct clean (a clean record has ``eps = 0``).

    Returns:
        One record per (model, defence, eps > 0), its components listed in ``settings["components"]``.
    """
    clean = {(r.model, r.defence): r for r in records if r.attack == "clean"}
    groups: dict[tuple[str, str, float], list[CellRecord]] = {}
    for r in records:
        if r.attack != "clean":
            groups.setdefault((r.model, r.defence, r.eps), []).append(r)
    out = []
    for (model, defence, eps), parts in sorted(groups.items()):
        if include_clean and (model, defence) in clean:
            parts = [clean[model, defence], *parts]
        correct = [int(all(v)) for v in zip(*(r.per_image_correct for r in parts), strict=True)]
        out.append(CellRecord(
            model=model, defence=defence, attack=attack, eps=eps, protocol=protocol,
            accuracy=sum(correct) / len(correct), n=len(correct), per_image_correct=correct,
            image_indices=parts[0].image_indices, time_s=sum(r.time_s for r in parts),
            settings={"components": sorted(f"{r.protocol}:{r.attack}" for r in parts),
                      "run": parts[0].settings.get("run", {}), "victim": parts[0].settings.get("victim", {}),
                      **{k: parts[0].settings[k] for k in (DEVICE_FACTS,) if k in parts[0].settings}},
            flags=sorted({f for r in parts for f in r.flags}),
            extra={"component_accuracy": {f"{r.protocol}:{r.attack}": r.accuracy for r in parts}},
        ))  # fmt: skip
    return out


def read_records(root: str | os.PathLike[str]) -> list[CellRecord]:
    """All records under ``root/cells/`` (a results directory of any job), sorted by file name.

    Each is validated against its own contents and, when ``root/run.json`` exists, against the run.

    Raises:
        FileNotFoundError: No ``cells/`` folder.
        RecordError: A cell file is invalid (the message names it); nothing is moved.
    """
    cells = Path(root) / "cells"
    if not cells.is_dir():
        raise FileNotFoundError(f"no results at {cells}")
    meta = Path(root) / "run.json"
    run = json.loads(meta.read_text()) if meta.is_file() else None
    return [load_record(p, run) for p in sorted(cells.glob("*.json"))]
