"""Result records: one JSON file per (model, defence, attack, eps) cell, a markdown table and PNG plots.

Records follow RobustBench's habit of plain JSON a person can read and a program can parse. Each cell is
written atomically (temporary file + rename) as soon as it finishes, so a killed run loses at most the
cell in flight, and a re-run with the same output directory and settings reads finished cells back.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "CellRecord",
    "RunStore",
    "library_versions",
    "read_records",
    "write_markdown",
    "write_plots",
]

SCHEMA = "wnll-art/cell/v1"


def library_versions() -> dict[str, str]:
    """Versions of everything that can change a number."""
    import numpy
    import torch

    import wnll_art

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    versions["wnll_art"] = wnll_art.__version__
    for module in ("art", "foolbox", "eagerpy", "scipy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:  # pragma: no cover - all are dependencies
            versions[module] = "missing"
    return versions


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
        return f"{self.protocol}__{self.model}__{self.defence}__{self.attack}__eps{self.eps:.4f}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellRecord:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} record (schema={data.get('schema')!r})")
        return cls(**data)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunStore:
    """A results directory: ``run.json`` (the settings), ``cells/*.json``, ``results.md``, ``*.png``.

    Args:
        root: The directory (created if missing).
        run_settings: Settings that must match for finished cells to be reused.

    Raises:
        ValueError: If ``root`` holds a run made with different settings.
    """

    def __init__(self, root: str | os.PathLike[str], run_settings: dict[str, Any]) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        meta = self.root / "run.json"
        canonical = json.loads(json.dumps(run_settings, sort_keys=True))
        if meta.is_file():
            previous = json.loads(meta.read_text())
            if previous != canonical:
                changed = sorted(
                    k for k in set(previous) | set(canonical) if previous.get(k) != canonical.get(k)
                )
                raise ValueError(
                    f"{self.root} holds a run with different settings (differing: {changed}); "
                    f"use another --out directory or delete it"
                )
        else:
            _atomic_write(meta, json.dumps(canonical, indent=1, sort_keys=True))
        self.settings = canonical

    def path(self, key: str) -> Path:
        return self.cells_dir / f"{key}.json"

    def get(self, key: str) -> CellRecord | None:
        """The finished record for ``key``, or ``None``."""
        p = self.path(key)
        if not p.is_file():
            return None
        return CellRecord.from_dict(json.loads(p.read_text()))

    def put(self, record: CellRecord) -> None:
        _atomic_write(self.path(record.key), record.to_json())

    def records(self) -> list[CellRecord]:
        """All finished records, sorted by key."""
        return read_records(self.root) if self.cells_dir.is_dir() else []


def _flag_lines(records: Sequence[CellRecord]) -> list[str]:
    """Flags, those shared by every row of a (protocol, model, defence) listed once for it."""
    groups: dict[tuple[str, str, str], list[CellRecord]] = {}
    for r in records:
        groups.setdefault((r.protocol, r.model, r.defence), []).append(r)
    lines = []
    for (p, m, d), recs in sorted(groups.items()):
        shared = set.intersection(*(set(r.flags) for r in recs))
        lines += [f"- {p}/{m}/{d} (all rows): {f}" for f in sorted(shared)]
        lines += sorted({f"- {p}/{m}/{d}/{r.attack}: {f}" for r in recs for f in set(r.flags) - shared})
    return ["", "## Flags (gradient masking and sanity checks)", "", *lines] if lines else []


def write_markdown(records: Sequence[CellRecord], path: Path, *, title: str = "Robust accuracy (%)") -> str:
    """Writes a table (rows: protocol/model/defence/attack, columns: eps) and its flags; returns it."""
    eps_values = sorted({r.eps for r in records})
    rows: dict[tuple[str, str, str, str], dict[float, CellRecord]] = {}
    for r in records:
        rows.setdefault((r.protocol, r.model, r.defence, r.attack), {})[r.eps] = r
    head = "| protocol | model | defence | attack | " + " | ".join(f"eps={e:g}" for e in eps_values) + " |"
    lines = [f"# {title}", "", head, "|" + "---|" * (4 + len(eps_values))]
    for (protocol, model, defence, attack), cells in sorted(rows.items()):
        values = [f"{100 * cells[e].accuracy:.1f}" if e in cells else "" for e in eps_values]
        lines.append(f"| {protocol} | {model} | {defence} | {attack} | " + " | ".join(values) + " |")
    lines += _flag_lines(records)
    n_values = sorted({r.n for r in records})
    lines += ["", f"Images per cell: {n_values}. Settings: see cells/*.json and run.json.", ""]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def write_plots(records: Iterable[CellRecord], out_dir: Path) -> list[Path]:
    """Accuracy vs eps, one PNG per (protocol, attack) with a line per (model, defence) (paper Fig. 5)."""
    from wnll_art.plots import accuracy_vs_eps

    records = list(records)
    paths = []
    for protocol, attack in sorted({(r.protocol, r.attack) for r in records if r.attack != "clean"}):
        path = out_dir / f"accuracy_vs_eps__{protocol}__{attack}.png"
        accuracy_vs_eps(records, attack=attack, protocol=protocol).savefig(path)
        paths.append(path)
    return paths


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
                      "run": parts[0].settings.get("run", {}), "victim": parts[0].settings.get("victim", {})},
            flags=sorted({f for r in parts for f in r.flags}),
            extra={"component_accuracy": {f"{r.protocol}:{r.attack}": r.accuracy for r in parts}},
        ))  # fmt: skip
    return out


def read_records(root: str | os.PathLike[str]) -> list[CellRecord]:
    """All records under ``root/cells/`` (a results directory of any harness), sorted by file name."""
    cells = Path(root) / "cells"
    if not cells.is_dir():
        raise FileNotFoundError(f"no results at {cells}")
    return [CellRecord.from_dict(json.loads(p.read_text())) for p in sorted(cells.glob("*.json"))]
