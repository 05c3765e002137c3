"""Figures of the paper from tensors and result records (matplotlib only; torchvision not needed).

Wang et al. (2018): Fig. 2 (original / adversarial / TVM images), Fig. 4 (feature planes), Fig. 5 (accuracy
vs eps). Each function
returns a ``matplotlib.figure.Figure`` with titled, labelled axes; saving is the caller's choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class AccuracyRecord(Protocol):
    """What the figures read of a result record (``wnll_art.evaluation.records.CellRecord`` has it)."""

    protocol: str
    model: str
    defence: str
    attack: str
    eps: float
    accuracy: float
    n: int

__all__ = ["accuracy_bars", "accuracy_vs_eps", "clean_robust_bars", "feature_planes", "image_grid",
           "protocol_comparison"]


def _figure(*, figsize: tuple[float, float], dpi: int) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi)  # no pyplot state: safe in scripts, tests and notebooks


def image_grid(
    rows: Mapping[str, torch.Tensor],
    *,
    labels: Sequence[str] | None = None,
    title: str = "",
    max_images: int = 8,
) -> Figure:
    """One row per named batch of images (e.g. original / adversarial / TVM), as the paper's Fig. 2.

    Args:
        rows: Row title -> ``(N, 3, H, W)`` float images in [0, 1] (any device).
        labels: Optional column titles (e.g. predicted classes), one per image.
        title: Figure title.
        max_images: Columns shown.
    """
    if not rows:
        raise ValueError("rows is empty")
    n = min(max_images, *(len(v) for v in rows.values()))
    fig = _figure(figsize=(1.4 * n + 1.2, 1.5 * len(rows) + 0.6), dpi=110)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(images[c].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0 and labels is not None:
                ax.set_title(labels[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_vs_eps(records: Sequence[AccuracyRecord], *, attack: str, protocol: str = "main") -> Figure:
    """Accuracy (%) vs eps, one line per (model, defence), for one attack (the paper's Fig. 5)."""
    lines: dict[tuple[str, str], list[AccuracyRecord]] = {}
    for r in records:
        if r.attack == attack and r.protocol == protocol:
            lines.setdefault((r.model, r.defence), []).append(r)
    if not lines:
        raise ValueError(f"no records for attack={attack!r}, protocol={protocol!r}")
    fig = _figure(figsize=(5, 3.6), dpi=120)
    ax = fig.subplots()
    for (model, defence), recs in sorted(lines.items()):
        recs = sorted(recs, key=lambda r: r.eps)
        label = model if defence == "none" else f"{model} + {defence}"
        ax.plot([r.eps for r in recs], [100 * r.accuracy for r in recs], marker="o", label=label)
    n = max(r.n for recs in lines.values() for r in recs)
    ax.set(xlabel="L-inf radius eps (pixel scale [0, 1])", ylabel="accuracy (%)", ylim=(-3, 103),
           title=f"{attack} ({protocol} protocol, n={n})")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def protocol_comparison(records: Sequence[AccuracyRecord], *, eps: float, attacks: Sequence[str]) -> Figure:
    """Grouped bars: paper-protocol vs adaptive-protocol accuracy per (model, defence, attack) at ``eps``."""
    index = {(r.protocol, r.model, r.defence, r.attack): r for r in records if abs(r.eps - eps) < 1e-9}
    groups = sorted({(m, d, a) for (p, m, d, a) in index if p == "paper" and a in attacks})
    if not groups:
        raise ValueError(f"no paper-protocol records at eps={eps} for attacks {list(attacks)}")
    fig = _figure(figsize=(max(5.0, 0.9 * len(groups) + 1.5), 3.8), dpi=120)
    ax = fig.subplots()
    xs = range(len(groups))
    for offset, protocol in ((-0.2, "paper"), (0.2, "adaptive")):
        keys = [(protocol, model, defence, attack) for model, defence, attack in groups]
        values = [100 * index[k].accuracy if k in index else 0.0 for k in keys]
        bars = ax.bar([x + offset for x in xs], values, width=0.4, label=f"{protocol} protocol")
        ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
    ax.set_xticks(list(xs), [f"{m}\n{d}\n{a}" for m, d, a in groups], fontsize=7)
    ax.set(ylabel="accuracy (%)", ylim=(0, 108), title=f"Paper vs adaptive protocol at eps={eps:g}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def accuracy_bars(table: Mapping[str, Mapping[str, float]], *, title: str) -> Figure:
    """Grouped bars: ``table[model][attack]`` accuracy in [0, 1], one group per attack, one bar per model."""
    if not table:
        raise ValueError("table is empty")
    models = list(table)
    attacks = list(dict.fromkeys(a for row in table.values() for a in row))
    fig = _figure(figsize=(max(5.0, 1.1 * len(attacks) + 2), 3.6), dpi=120)
    ax = fig.subplots()
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(attacks))]
        bars = ax.bar(xs, [100 * table[model].get(a, 0.0) for a in attacks], width=width, label=model)
        ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
    ax.set_xticks(range(len(attacks)), attacks)
    ax.set(ylabel="accuracy (%)", ylim=(0, 108), title=title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def clean_robust_bars(
    panels: Mapping[str, Mapping[str, Mapping[str, tuple[float, float]]]], *, title: str
) -> Figure:
    """Clean vs robust accuracy per victim: one panel per key of ``panels`` (e.g. per eps), in it one group of bars
    per defence and one bar per model, ``panels[panel][defence][model] = (clean, robust)`` in [0, 1]: a light bar
    (clean) behind a solid one (robust) of the model's colour (leave out a victim without a number)."""
    if not panels or not any(panels.values()):
        raise ValueError("panels is empty")
    models = list(dict.fromkeys(m for groups in panels.values() for row in groups.values() for m in row))
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    widest = max(sum(len(row) for row in groups.values()) + len(groups) for groups in panels.values())
    fig = _figure(figsize=(max(6.0, 0.32 * widest + 2), 3.4 * len(panels) + 0.4), dpi=120)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (name, groups) in zip(axes, panels.items(), strict=True):
        x, ticks = 0.0, []
        for defence, row in groups.items():
            start = x
            for model, (clean, robust) in row.items():
                ax.bar(x, 100 * clean, width=0.8, color=colours[model], alpha=0.3)
                bar = ax.bar(x, 100 * robust, width=0.8, color=colours[model])
                ax.bar_label(bar, fmt="%.0f", fontsize=6, padding=1)
                x += 1
            ticks.append(((start + x - 1) / 2, defence))
            x += 1  # a gap between defences
        ax.set_xticks([t for t, _ in ticks], [d for _, d in ticks], fontsize=7, rotation=20)
        ax.set(ylabel="accuracy (%)", ylim=(0, 108), title=f"{title} ({name})")
        ax.grid(axis="y", alpha=0.3)
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[m], label=m) for m in models] + [
        Patch(color="grey", alpha=0.3, label="clean (light)"), Patch(color="grey", label="robust (solid)")]
    axes[0].legend(handles=handles, fontsize=7, ncol=min(3, len(handles)), loc="upper right")
    fig.tight_layout()
    return fig


_CONDITION_TITLES = {"clean": "clean", "ifgsm": "IFGSM", "tvm_clean": "TVM(clean)", "tvm_ifgsm": "TVM(IFGSM)",
                     "train": "training images", "fgsm": "FGSM"}  # fmt: skip


def feature_planes(
    projections: Mapping[str, Mapping[str, torch.Tensor]],
    summary: Mapping[str, Any],
    labels: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    gradient: str,
    title: str | None = None,
    fitted_on: str = "clean",
) -> Figure:
    """Fig. 4: one row per model, one panel per condition, features on their first two principal components.

    Args:
        projections: ``{model: {condition: (N, 2) projected features}}``.
        summary: ``conditions`` (panel order), ``eps``, ``n`` and per model ``explained_variance_ratio`` and
            per condition ``accuracy`` (``None``: not shown), as written by ``evaluations/feature_geometry.py``.
        labels: ``(N,)`` class labels in ``0..9`` (CPU), colouring the points: one tensor for every condition,
            or ``{condition: (N_c,) labels}`` when the conditions hold different images.
        gradient: The attack's WNLL gradient, for the default title.
        title: The figure title (``None``: the IFGSM feature-geometry title).
        fitted_on: What the principal axes were fitted on, in words (the axis labels).
    """
    from wnll_art.data import CIFAR10_CLASSES

    conditions, models = summary["conditions"], list(projections)
    fig = _figure(figsize=(3.6 * len(conditions) + 1.8, 3.4 * len(models) + 0.8), dpi=110)
    axes = fig.subplots(len(models), len(conditions), squeeze=False)
    for r, model in enumerate(models):
        ms = summary["models"][model]
        ratio = ms["explained_variance_ratio"]
        every = torch.cat(list(projections[model].values()))
        lo, hi = every.min(0).values, every.max(0).values
        pad = 0.05 * (hi - lo).clamp_min(1e-9)
        for col, c in enumerate(conditions):
            ax, p = axes[r][col], projections[model][c]
            y = labels[c] if isinstance(labels, Mapping) else labels
            for k in range(10):
                sel = y == k
                if bool(sel.any()):
                    ax.scatter(p[sel, 0], p[sel, 1], s=9, alpha=0.75, color=f"C{k}", label=CIFAR10_CLASSES[k])
            ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
            ax.set_ylim(float(lo[1] - pad[1]), float(hi[1] + pad[1]))
            ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of {fitted_on} variance)", fontsize=8)
            ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}%)", fontsize=8)
            ax.tick_params(labelsize=7)
            acc = ms["conditions"][c]["accuracy"]
            shown = "" if acc is None else f" (acc {100 * acc:.1f}%)"
            ax.set_title(f"{model}: {_CONDITION_TITLES.get(c, c)}{shown}", fontsize=9)
            ax.grid(alpha=0.25)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8, title="class", markerscale=1.6)
    text = title or (f"64-D features on their first two principal components (fitted on clean features per model); "
                     f"IFGSM eps={summary['eps']:g} ({gradient} gradient), n={summary['n']}")  # fmt: skip
    fig.suptitle(text, fontsize=10)
    top = 0.95 - 0.2 * text.count("\n") / fig.get_figheight()  # room for each further title line
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), top))
    return fig
