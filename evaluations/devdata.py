"""Brings CIFAR-10 to a machine that only receives files in calls of limited size (the device tool).

The five training batches and the test batch (184 MB) do not fit into one call of 64 MiB together with the
repository. ``pack`` compresses each official file losslessly (xz, delta filter on the bytes: about 70 % of
the original size) and spreads the files over parts that each stay under ``--limit`` bytes; each part gets a
manifest with the md5 of every original file. On the receiving machine, ``stage`` copies a part out of the
repository copy (which the next call replaces) into a folder that lasts as long as the machine, and
``unpack`` decompresses every staged file into ``DEST/cifar-10-batches-py/`` and checks every md5 against
the manifests and against the official values that :func:`wnll_art.load_cifar10` checks.

Usage::

    python evaluations/devdata.py pack ../shared/data/cifar-10-batches-py .devdata --parts 3
    # on the device, one call per part, each carrying .devdata/partK:
    python3 evaluations/devdata.py stage .devdata/part1 /tmp/wnll_stage
    ...
    python3 evaluations/devdata.py unpack /tmp/wnll_stage /tmp/wnll_data   # then WNLL_ART_DATA=/tmp/wnll_data
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "devdata"
FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
MANIFEST = "manifest.json"
META_MD5 = "5ff9c542aee3614f3951f8cda6e48888"  # batches.meta (the md5 torchvision's CIFAR10 checks)


def official_md5() -> dict[str, str]:
    """The md5 of every CIFAR-10 python file, as :mod:`wnll_art.data` (and torchvision) check them."""
    from wnll_art.data import TEST_FILES, TRAIN_FILES

    return {**TRAIN_FILES, **TEST_FILES, "batches.meta": META_MD5}


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def compress(data: bytes) -> bytes:
    """Lossless xz (delta + LZMA2) of one file's bytes."""
    return lzma.compress(data, format=lzma.FORMAT_XZ, filters=FILTERS)


def plan_parts(sizes: dict[str, int], parts: int, limit: int) -> list[list[str]]:
    """Files (largest first) into ``parts`` groups, each to the lightest group; raises if one exceeds ``limit``."""
    groups: list[list[str]] = [[] for _ in range(parts)]
    totals = [0] * parts
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        i = totals.index(min(totals))
        groups[i].append(name)
        totals[i] += sizes[name]
    worst = max(totals)
    if worst > limit:
        raise ValueError(f"a part would hold {worst} bytes, over the limit of {limit}; use more parts")
    return [sorted(g) for g in groups]


def pack(src: Path, out: Path, *, parts: int, limit: int) -> list[Path]:
    """Writes ``out/part1..partN`` (compressed files + manifest) from the official files in ``src``."""
    expected = official_md5()
    blobs: dict[str, bytes] = {}
    md5s: dict[str, str] = {}
    for name in sorted(expected):
        data = (src / name).read_bytes()
        md5s[name] = md5_bytes(data)
        if md5s[name] != expected[name]:
            raise ValueError(f"{src / name} has md5 {md5s[name]}, expected {expected[name]}")
        blobs[name] = compress(data)
        print(f"{name}: {len(data)} -> {len(blobs[name])} bytes", flush=True)
    groups = plan_parts({n: len(b) for n, b in blobs.items()}, parts, limit)
    written = []
    for k, names in enumerate(groups, start=1):
        folder = out / f"part{k}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name in names:
            (folder / f"{name}.xz").write_bytes(blobs[name])
        manifest = {name: {"md5": md5s[name], "xz_bytes": len(blobs[name])} for name in names}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        written.append(folder)
        print(f"{folder}: {sorted(names)}, {sum(len(blobs[n]) for n in names)} bytes", flush=True)
    return written


def stage(part: Path, stage_dir: Path) -> None:
    """Copies one part's files and its manifest (as ``<part>.manifest.json``) into ``stage_dir``."""
    manifest = json.loads((part / MANIFEST).read_text())
    stage_dir.mkdir(parents=True, exist_ok=True)
    for name in manifest:
        shutil.copyfile(part / f"{name}.xz", stage_dir / f"{name}.xz")
    (stage_dir / f"{part.name}.{MANIFEST}").write_text(json.dumps(manifest))
    print(f"staged {part.name}: {sorted(manifest)} in {stage_dir}", flush=True)


def unpack(stage_dir: Path, dest: Path) -> Path:
    """Decompresses every staged file into ``dest/cifar-10-batches-py`` and checks each md5 (twice: against
    the manifest and the official value). Raises ``ValueError`` naming a missing or corrupt file."""
    manifest: dict[str, dict[str, object]] = {}
    for path in sorted(stage_dir.glob(f"*.{MANIFEST}")):
        manifest.update(json.loads(path.read_text()))
    expected = official_md5()
    missing = sorted(set(expected) - set(manifest))
    if missing:
        raise ValueError(f"not staged yet: {missing} (stage every part first)")
    folder = dest / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(expected):
        data = lzma.decompress((stage_dir / f"{name}.xz").read_bytes(), format=lzma.FORMAT_XZ)
        got = md5_bytes(data)
        if got != manifest[name]["md5"] or got != expected[name]:
            raise ValueError(f"{name}: md5 {got} after unpacking, expected {expected[name]}")
        (folder / name).write_bytes(data)
    print(f"unpacked and md5-checked {len(expected)} files into {folder}", flush=True)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    a = sub.add_parser("pack", help="compress and split the official files")
    a.add_argument("src", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--parts", type=int, default=3)
    a.add_argument("--limit", type=int, default=50_000_000, help="bytes per part [50,000,000]")
    b = sub.add_parser("stage", help="copy one part into the staging folder")
    b.add_argument("part", type=Path)
    b.add_argument("stage_dir", type=Path)
    c = sub.add_parser("unpack", help="decompress every staged file and check every md5")
    c.add_argument("stage_dir", type=Path)
    c.add_argument("dest", type=Path)
    args = p.parse_args(argv)
    try:
        if args.verb == "pack":
            if args.parts < 1:
                p.error("--parts must be >= 1")
            pack(args.src, args.out, parts=args.parts, limit=args.limit)
        elif args.verb == "stage":
            stage(args.part, args.stage_dir)
        else:
            unpack(args.stage_dir, args.dest)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
