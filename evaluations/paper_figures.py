"""The paper's Fig. 2 and Fig. 5, one command each (issue 19; Fig. 4 is ``feature_geometry.py --paper-fig4``).

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data Dependent
Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).

* ``fig2``, the paper's Fig. 2: a few CIFAR-10 test images, clean and under the ``paper`` protocol's FGSM, IFGSM and
  C&W at eps 0.02 and 0.08 (crafted on the public softmax ResNet-56 exactly as the evaluation engine crafts them),
  each also after TVM purification (Guo et al.'s settings, masks drawn from explicit seeds). Rows: images; columns:
  conditions; each panel names attack, eps and the softmax model's prediction (green: correct, red: wrong).
  Writes ``OUT/paper_fig2.png`` and ``OUT/paper_fig2.json`` (predictions and L-inf distances per panel).
* ``fig5``, the paper's Fig. 5: accuracy against eps (0, the clean accuracy, to 0.1) of the WNLL + TVM victim of each
  training-data row (original, TVM, original + TVM; ``paper_numbers.WNLL_MODELS``), one panel per attack (FGSM,
  IFGSM, C&W), the ``authors`` protocol solid, the ``paper`` protocol dashed. Points: the records of
  ``paper_numbers.py run`` (``RECORDS/<row>/<folder>/cells``, the folders of ``paper_numbers.jobs``) and, for the
  ``paper`` protocol where those lack a cell, the GPU run of 2026-11-30 (``gpu_2026-11-30/records.tgz``: eps 0.02 /
  0.08; hollow markers). A missing point is left out (the line breaks there) and named in the caption and on stdout.
  Works on partial records. Writes ``OUT/paper_fig5.png`` and ``OUT/paper_fig5.json``.

    WNLL_ART_DATA=../shared/data python evaluations/paper_figures.py fig2 --weights ../shared/weights/resnet56-4bfd9763.th
    python evaluations/paper_figures.py fig5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: the repository root on the path, for `evaluations.*`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluations.paper_numbers import EPS, OUT, RESULTS, ROWS, WNLL_MODELS, _gpu_records, jobs, row_records  # noqa: E402
from wnll_art._files import atomic_write  # noqa: E402
from wnll_art._random import derive_seed  # noqa: E402
from wnll_art.data import CIFAR10_CLASSES  # noqa: E402
from wnll_art.evaluation.protocols import FAMILIES, AttackSpec  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from wnll_art.plots import AccuracyRecord
    from wnll_art.tvm.module import TVMPurifier

__all__ = ["FIG2_EPS", "FIG5_EPS", "Point", "fig2_conditions", "fig2_figure", "fig2_images", "fig5_figure",
           "fig5_points", "fig5_records", "main", "paper_fig2", "paper_fig5"]  # fmt: skip

FIG2_EPS = (0.02, 0.08)
FIG5_EPS = (0.0, *EPS)  # eps 0: the clean accuracy of the victim
FIG5_STYLES: dict[str, Literal["-", "--"]] = {"authors": "-", "paper": "--"}  # protocol: line style
TITLES = {"clean": "clean", "fgsm": "FGSM", "ifgsm": "IFGSM", "cw_l2": "C&W"}
Condition = tuple[str, float, bool]  # (attack, eps, after TVM)
Key = tuple[str, str, str, float]  # (row, protocol, attack, eps)


# ------------------------------------------------------------------------------------------------ Fig. 2
def fig2_conditions(attacks: Sequence[str], eps: Sequence[float]) -> list[Condition]:
    """The columns of Fig. 2: clean, then each attack at each eps (eps-major), each followed by its TVM column."""
    base = [("clean", 0.0), *((a, e) for e in eps for a in attacks)]
    return [(a, e, tvm) for a, e in base for tvm in (False, True)]


def fig2_images(
    classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *, specs: Mapping[str, AttackSpec],
    eps: Sequence[float], purifier: TVMPurifier, seed: int,
) -> dict[Condition, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Every panel of Fig. 2: the images of each condition and the classifier's predictions on them.

    Args:
        classifier: The attacked and predicting model (images in [0, 1] -> ``(N, C)`` scores), in eval mode.
        x: ``(N, 3, H, W)`` clean images in [0, 1]; y: ``(N,)`` their labels.
        specs: ``{attack name: spec}`` (e.g. ``SPECS["paper:fgsm"].build(PlanOptions())``), crafted on the
            undefended ``classifier`` by :func:`wnll_art.evaluation.engine.adversarial` with the engine's seed of
            batch 0 (C&W once, projected onto each eps).
        eps: The L-inf radii.
        purifier: TVM; its masks for each condition are drawn from a seed derived from ``seed`` and the condition.
        seed: The run's seed.

    Returns:
        ``{(attack, eps, tvm): (images (N, 3, H, W), predicted labels (N,))}`` in :func:`fig2_conditions` order.
    """
    from wnll_art.defence import Defence
    from wnll_art.evaluation.engine import adversarial
    from wnll_art.evaluation.victims import Victim, predict_labels

    # in eval mode: the attack puts back the mode it found, and a module born in train mode would leave the
    # classifier's batch norm predicting from batch statistics
    victim = Victim("softmax", "none", Defence(classifier).eval())
    raw_cache: dict[Any, torch.Tensor] = {}
    images = {("clean", 0.0): x}
    for e in eps:
        for name, spec in specs.items():
            # the engine's seed of batch 0
            attack_seed = derive_seed(seed, victim.model, victim.defence, spec.name, 0)
            images[name, e] = adversarial(spec, victim, x, y, eps=e, seed=attack_seed, raw_cache=raw_cache)
    out = {}
    for (name, e), imgs in images.items():
        with torch.no_grad(), purifier.drawing(derive_seed(seed, "fig2_tvm", name, e)):
            purified = purifier(imgs)
        out[name, e, False] = (imgs, predict_labels(classifier, imgs))
        out[name, e, True] = (purified, predict_labels(classifier, purified))
    return {c: out[c] for c in fig2_conditions(list(specs), eps)}


def _panel_title(condition: Condition, predicted: int) -> str:
    attack, eps, tvm = condition
    what = TITLES.get(attack, attack) + ("" if attack == "clean" else f" {eps:g}") + (" +TVM" if tvm else "")
    return f"{what}\n-> {CIFAR10_CLASSES[predicted] if predicted >= 0 else 'undecided'}"


def fig2_figure(
    panels: Mapping[Condition, tuple[torch.Tensor, torch.Tensor]], y: torch.Tensor, indices: Sequence[int]
) -> Figure:
    """Fig. 2 as a grid: one row per image, one column per condition (titles: condition and prediction).

    Args:
        panels: :func:`fig2_images`'s result.
        y: ``(N,)`` true labels; indices: the images' CIFAR-10 test indices (row labels).
    """
    from matplotlib.figure import Figure

    conditions, n = list(panels), len(y)
    fig = Figure(figsize=(1.15 * len(conditions) + 0.8, 1.45 * n + 0.9), dpi=110)
    axes = fig.subplots(n, len(conditions), squeeze=False)
    for col, c in enumerate(conditions):
        images, predicted = panels[c]
        for r in range(n):
            ax, p = axes[r][col], int(predicted[r])
            ax.imshow(images[r].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(_panel_title(c, p), fontsize=6.5, color="tab:green" if p == int(y[r]) else "tab:red")
            if col == 0:
                ax.set_ylabel(f"test #{indices[r]}\n({CIFAR10_CLASSES[int(y[r])]})", fontsize=7)
    fig.suptitle("Fig. 2 (Wang et al. 2018): clean and adversarial CIFAR-10 test images (paper protocol, crafted "
                 "on the softmax ResNet-56), each also after TVM; titles: the softmax model's prediction "
                 "(green: correct, red: wrong)", fontsize=8.5)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def paper_fig2(
    *, out_dir: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None, n_images: int = 4, start: int = 0,
    eps: Sequence[float] = FIG2_EPS, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Fig. 2 on the test images ``start .. start + n_images - 1``; writes ``paper_fig2.png`` and ``.json``.

    Returns:
        The summary: per condition the predicted class names, the number correct and the largest L-inf distance
        of a panel from its clean image.
    """
    from wnll_art.data import load_cifar10
    from wnll_art.defence import load_classifier
    from wnll_art.evaluation.protocols import SPECS, PlanOptions
    from wnll_art.evaluation.report import save_png
    from wnll_art.tvm.module import TVMPurifier
    from wnll_art.tvm.settings import TVMSettings

    images, labels = load_cifar10(data_root, "test")
    x, y = images[start : start + n_images].float() / 255, labels[start : start + n_images]
    indices = list(range(start, start + len(y)))
    clf = load_classifier("resnet56", head="softmax", weights=weights).eval()
    specs = {a: SPECS[f"paper:{a}"].build(PlanOptions()) for a in FAMILIES}
    tvm = TVMPurifier(TVMSettings(), seed=seed)  # as the evaluation's victims build it
    panels = fig2_images(clf, x, y, specs=specs, eps=eps, purifier=tvm, seed=seed)
    summary = {"test_indices": indices, "labels": [CIFAR10_CLASSES[int(c)] for c in y], "seed": seed,
               "attacks": {a: s.settings() for a, s in specs.items()}, "tvm": TVMSettings().to_dict(),
               "panels": [{"attack": a, "eps": e, "tvm": t, "correct": int((p == y).sum()),
                           "linf_from_clean": float((im - x).abs().amax()),
                           "predicted": [CIFAR10_CLASSES[int(k)] if k >= 0 else "undecided" for k in p]}
                          for (a, e, t), (im, p) in panels.items()]}  # fmt: skip
    save_png(fig2_figure(panels, y, indices), Path(out_dir) / "paper_fig2.png")
    atomic_write(Path(out_dir) / "paper_fig2.json", json.dumps(summary, indent=1))
    return summary


# ------------------------------------------------------------------------------------------------ Fig. 5
@dataclass(frozen=True)
class Point:
    """One point of Fig. 5: accuracy (%), where it comes from (``"cpu"``: ``paper_numbers.py run``'s records;
    ``"gpu"``: the 2026-11-30 archive) and its image count (``None``: not in the archive's summary)."""

    accuracy: float
    source: str
    n: int | None


def fig5_records(root: Path, row: str) -> list[AccuracyRecord]:
    """The records of ``row``'s folders under ``root`` (read by ``paper_numbers.row_records``) that run its WNLL
    model behind TVM (``jobs(row)``, in order); folders without cells (not started yet) are skipped."""
    folders = row_records(row, root)
    return [r for folder, model, defences, _, _ in jobs(row) if model == WNLL_MODELS[row] and "tvm" in defences
            for r in folders.get(folder, [])]  # fmt: skip


def fig5_points(
    records: Mapping[str, Sequence[AccuracyRecord]], gpu: Mapping[tuple[Any, ...], float],
    *, grid: Sequence[float] = FIG5_EPS,
) -> tuple[dict[Key, Point], list[Key]]:  # fmt: skip
    """The points of Fig. 5 and the missing ones.

    A point ``(row, protocol, attack, eps)`` is the record of the row's WNLL model (``WNLL_MODELS[row]``) behind
    TVM with that protocol, attack (``"clean"`` at eps 0) and eps; the first such record counts. Without one:
    the GPU archive's ``(row, protocol, "wnll", "tvm", attack, eps)`` (its ``"wnll"`` is the same model).

    Args:
        records: ``{row: records}`` (:func:`fig5_records`), rows in the figure's order.
        gpu: ``paper_numbers._gpu_records()`` (accuracy in %).
        grid: The eps values of each curve.

    Returns:
        ``{key: Point}`` and the keys with no point, in row, protocol, attack, eps order.
    """
    archive = {(*k[:5], round(k[5], 6)): v for k, v in gpu.items()}
    found: dict[Key, Point] = {}
    missing: list[Key] = []
    for row, recs in records.items():
        index: dict[tuple[str, str, float], AccuracyRecord] = {}
        for r in recs:
            if r.model == WNLL_MODELS[row] and r.defence == "tvm":
                index.setdefault((r.protocol, r.attack, round(r.eps, 6)), r)
        for key in ((row, p, a, e) for p in FIG5_STYLES for a in FAMILIES for e in grid):
            name, eps = "clean" if key[3] == 0 else key[2], round(key[3], 6)
            hit = index.get((key[1], name, eps))
            if hit is not None:
                found[key] = Point(100 * hit.accuracy, "cpu", hit.n)
            elif (row, key[1], "wnll", "tvm", name, eps) in archive:
                found[key] = Point(archive[row, key[1], "wnll", "tvm", name, eps], "gpu", None)
            else:
                missing.append(key)
    return found, missing


def _missing_text(missing: Sequence[Key]) -> str:
    """The missing points in words, grouped: ``protocol protocol, rows ...: attacks at eps ...``."""
    per_curve: dict[tuple[str, str, str], list[float]] = {}
    for row, protocol, attack, eps in missing:
        per_curve.setdefault((row, protocol, attack), []).append(eps)
    groups: dict[tuple[str, tuple[float, ...]], dict[str, list[str]]] = {}  # (protocol, eps): {attack: rows}
    for (row, protocol, attack), values in per_curve.items():
        groups.setdefault((protocol, tuple(values)), {}).setdefault(attack, []).append(row)
    parts = []
    for (protocol, eps_values), attacks in groups.items():
        by_rows: dict[tuple[str, ...], list[str]] = {}
        for attack, rows in attacks.items():
            by_rows.setdefault(tuple(rows), []).append(TITLES[attack])
        parts += [f"{protocol} protocol, rows {', '.join(rows)}: {', '.join(names)} at eps "
                  f"{', '.join(f'{e:g}' for e in eps_values)}" for rows, names in by_rows.items()]  # fmt: skip
    return "; ".join(parts) if parts else "none"


def _fig5_panel(ax: Any, attack: str, points: Mapping[Key, Point], grid: Sequence[float]) -> None:
    """One attack's panel: a line per (row, protocol), broken where a point is missing; hollow: GPU points."""
    for i, row in enumerate(ROWS):
        for protocol, style in FIG5_STYLES.items():
            pts = [points.get((row, protocol, attack, e)) for e in grid]
            ax.plot(
                grid, [float("nan") if p is None else p.accuracy for p in pts], linestyle=style, color=f"C{i}"
            )
            for source, face in (("cpu", f"C{i}"), ("gpu", "white")):
                xs = [e for e, p in zip(grid, pts, strict=True) if p is not None and p.source == source]
                ys = [p.accuracy for p in pts if p is not None and p.source == source]
                ax.plot(xs, ys, linestyle="none", marker="o", color=f"C{i}", markerfacecolor=face)
    pad = 0.03 * (max(grid) - min(grid))
    ax.set(title=f"{TITLES[attack]} (WNLL + TVM victims)", xlabel="eps (L-inf, pixel scale [0, 1])",
           ylim=(-3, 103), xlim=(min(grid) - pad, max(grid) + pad))  # fmt: skip
    ax.grid(alpha=0.3)


def fig5_figure(
    points: Mapping[Key, Point], missing: Sequence[Key], *, grid: Sequence[float] = FIG5_EPS
) -> Figure:
    """Fig. 5: one panel per attack, accuracy (%) vs eps, one colour per training-data row, one line style per
    protocol; a missing point breaks its line; hollow markers: GPU-archive points; the caption names the missing."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(13, 5.2), dpi=110)
    axes = fig.subplots(1, len(FAMILIES), sharey=True, squeeze=False)[0]
    for ax, attack in zip(axes, FAMILIES, strict=True):
        _fig5_panel(ax, attack, points, grid)
    axes[0].set_ylabel("accuracy (%)")
    handles = [
        Line2D([], [], color=f"C{i}", label=f"{row} ({WNLL_MODELS[row]})") for i, row in enumerate(ROWS)
    ]
    handles += [
        Line2D([], [], color="gray", linestyle=s, label=f"{p} protocol") for p, s in FIG5_STYLES.items()
    ]
    handles.append(Line2D([], [], color="gray", linestyle="none", marker="o", markerfacecolor="white",
                          label="GPU run 2026-11-30 (paper, 0.02 / 0.08)"))  # fmt: skip
    # accuracy falls with eps: the upper right corner of the first panel is free
    axes[0].legend(handles=handles, fontsize=7, loc="upper right")
    ns = sorted({p.n for p in points.values() if p.n is not None})
    caption = (f"Fig. 5 (Wang et al. 2018): accuracy vs eps, eps 0 = clean; test images per point: "
               f"{', '.join(map(str, ns)) or '-'} (hollow markers: the GPU run's archive). Missing, not drawn: "
               f"{_missing_text(missing)}.")  # fmt: skip
    lines = textwrap.wrap(caption, 190)
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.02 + 0.03 * len(lines), 1, 1))
    return fig


def paper_fig5(
    *, out_dir: str | os.PathLike[str], records_root: str | os.PathLike[str] = OUT
) -> dict[str, Any]:
    """Fig. 5 from the records present now; writes ``paper_fig5.png`` and ``paper_fig5.json`` (points, missing)."""
    from wnll_art.evaluation.report import save_png

    records = {row: fig5_records(Path(records_root), row) for row in ROWS}
    points, missing = fig5_points(records, _gpu_records())
    save_png(fig5_figure(points, missing), Path(out_dir) / "paper_fig5.png")
    summary = {"records_root": str(records_root), "missing": [list(k) for k in missing],
               "missing_text": _missing_text(missing),
               "points": [{"row": k[0], "protocol": k[1], "attack": k[2], "eps": k[3], **asdict(p)}
                          for k, p in points.items()]}  # fmt: skip
    atomic_write(Path(out_dir) / "paper_fig5.json", json.dumps(summary, indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``fig2`` or ``fig5`` (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    f2 = sub.add_parser("fig2", help="sample images: clean / FGSM / IFGSM / C&W, each also after TVM")
    f2.add_argument("--n", type=int, default=4, help="test images (rows)")
    f2.add_argument("--start", type=int, default=0, help="index of the first test image")
    f2.add_argument("--seed", type=int, default=0, help="attack and TVM seeds")
    f2.add_argument("--data-root", default=None, help="CIFAR-10 root (default: $WNLL_ART_DATA)")
    f2.add_argument(
        "--weights", default=None, help="the public ResNet-56 file (default: the torch hub cache)"
    )
    f5 = sub.add_parser("fig5", help="accuracy vs eps of the WNLL + TVM victims, authors and paper protocols")
    f5.add_argument("--records", default=str(OUT), help="the records of paper_numbers.py run")
    for s in (f2, f5):
        s.add_argument("--out", default=str(RESULTS), help="folder of the PNG and its JSON")
    args = p.parse_args(argv)
    if args.command == "fig2":
        summary = paper_fig2(out_dir=args.out, data_root=args.data_root, weights=args.weights, n_images=args.n,
                             start=args.start, seed=args.seed)  # fmt: skip
        for panel in summary["panels"]:
            print(f"{panel['attack']} {panel['eps']:g}{' +TVM' if panel['tvm'] else ''}: {panel['correct']}/"
                  f"{args.n} correct, L-inf {panel['linf_from_clean']:.3f}: {', '.join(panel['predicted'])}")  # fmt: skip
    else:
        summary = paper_fig5(out_dir=args.out, records_root=args.records)
        for pt in summary["points"]:
            print(
                f"{pt['row']} {pt['protocol']} {pt['attack']} {pt['eps']:g}: {pt['accuracy']:.1f}% ({pt['source']})"
            )
        print(f"missing: {summary['missing_text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
