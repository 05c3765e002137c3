"""What a person reads: markdown tables, the flags attached to records, and the figures.

This is the one markdown table writer of :mod:`wnll_art.evaluation` (:func:`markdown_table`; every job's
``*.md`` is built with it), the one place flags are merged into records (:func:`attach_flags`) and the only importer of :mod:`wnll_art.plots`. It reads records and writes files;
it computes no robustness number.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from wnll_art._files import atomic_write
from wnll_art.evaluation.checks import eps_monotonicity_flags, undecided_flags
from wnll_art.evaluation.protocols import registry_flags
from wnll_art.evaluation.records import CellRecord, RunStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["attach_flags", "flag_section", "headline", "markdown_table", "pct", "save_png", "write_markdown",
           "write_plots", "write_text"]  # fmt: skip


def pct(value: float) -> str:
    """An accuracy in [0, 1] as a percentage with one decimal."""
    return f"{100 * value:.1f}"


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a markdown table: ``head``, the separator, then one line per row (cells as ``str``)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def flag_section(flags: Iterable[str], *, empty: str | None = "- none") -> list[str]:
    """The ``## Flags`` section: a heading and one bullet per flag line (``empty`` when there are none;
    ``None``: no section at all)."""
    lines = [f if f.startswith("- ") else f"- {f}" for f in flags]
    if not lines:
        if empty is None:
            return []
        lines = [empty]
    return ["", "## Flags (gradient masking and sanity checks)", "", *lines]


# the flags a reader of a robustness number must see (first word of a flag line)
HEADLINE_FLAGS = ("not_converged", "unbounded_not_zero", "gradient_free_stronger", "black_box_stronger",
                  "surrogate_stronger", "zero_gradients", "non_monotone_eps", "undecided_images",
                  "paper_attack_stronger", "momentum_stronger")  # fmt: skip


def headline(worst: Sequence[CellRecord], *, what: str) -> list[str]:
    """The answer first: one short paragraph and one table of per-image worst cases.

    Args:
        worst: Worst-case records (:func:`~wnll_art.evaluation.records.per_image_minimum` with clean included),
            one per (model, defence, eps) and training-data row (``settings["training_data"]``; a column of
            its own when there are several); their ``extra["component_accuracy"]`` names the components.
        what: The attacks taken, in words (for the paragraph).

    Returns:
        Lines: paragraph, then ``[training data |] victim | clean | eps=... (strongest attack) | flags``.
    """
    if not worst:
        return []
    eps_values = sorted({r.eps for r in worst})
    by_victim: dict[tuple[str, str, str], dict[float, CellRecord]] = {}
    for r in worst:  # a table over several training-data rows keeps each row's victims apart
        by_victim.setdefault((str(r.settings.get("training_data", "")), r.model, r.defence), {})[r.eps] = r
    order = list(dict.fromkeys(data for data, _, _ in by_victim))  # training-data rows in the records' order
    several = len(order) > 1
    rows = []
    for (data, model, defence), cells in sorted(
        by_victim.items(), key=lambda kv: (order.index(kv[0][0]), kv[0])
    ):
        first = next(iter(cells.values()))
        clean = [a for k, a in first.extra.get("component_accuracy", {}).items() if k.endswith(":clean")]
        row = [*([data] if several else []), f"{model} + {defence}", pct(clean[0]) if clean else "-"]
        for e in eps_values:
            cell = cells.get(e)
            parts = {k: a for k, a in (cell.extra.get("component_accuracy", {}) if cell else {}).items()
                     if not k.endswith(":clean")}  # fmt: skip
            strongest = min(parts, key=parts.__getitem__).split(":", 1)[-1] if parts else "-"
            row.append(f"**{pct(cell.accuracy)}** ({strongest})" if cell else "-")
        names = sorted({f.split(":", 1)[0] for r in cells.values() for f in r.flags} & set(HEADLINE_FLAGS))
        row.append(", ".join(names) or "clear")
        rows.append(row)
    n = "/".join(str(v) for v in sorted({r.n for r in worst}))
    k = "/".join(str(v) for v in sorted({r.settings.get("run", {}).get("tvm_draws", 1) for r in worst}))
    text = (
        f"**Robust accuracy (%)**, per image the worst case over clean and {what}, on {n} test images; a TVM "
        f"victim's image counts only if {k} independent TVM draws all classify it correctly. In brackets: the "
        "strongest single attack. Flags: gradient-masking and convergence checks (details below)."
    )
    head = [
        *(["training data"] if several else []),
        "victim",
        "clean",
        *(f"eps={e:g}" for e in eps_values),
        "flags",
    ]
    return [text, "", *markdown_table(head, rows), ""]


def write_text(path: str | os.PathLike[str], lines: Sequence[str]) -> str:
    """Writes ``lines`` (joined by newlines) to ``path`` atomically (:func:`~wnll_art._files.atomic_write`);
    returns the text."""
    text = "\n".join(lines)
    atomic_write(path, text)
    return text


def save_png(figure: Figure, path: Path) -> Path:
    """Saves a matplotlib figure as a PNG at ``path``, atomically; returns ``path``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write(path, buffer.getvalue())
    return path


def _grouped_flag_lines(records: Sequence[CellRecord]) -> list[str]:
    """Flags, those shared by every row of a (protocol, model, defence) listed once for it."""
    groups: dict[tuple[str, str, str], list[CellRecord]] = {}
    for r in records:
        groups.setdefault((r.protocol, r.model, r.defence), []).append(r)
    lines = []
    for (p, m, d), recs in sorted(groups.items()):
        shared = set.intersection(*(set(r.flags) for r in recs))
        lines += [f"- {p}/{m}/{d} (all rows): {f}" for f in sorted(shared)]
        lines += sorted({f"- {p}/{m}/{d}/{r.attack}: {f}" for r in recs for f in set(r.flags) - shared})
    return lines


def write_markdown(
    records: Sequence[CellRecord],
    path: str | os.PathLike[str],
    *,
    title: str = "Robust accuracy (%)",
    worst_case: str | None = None,
) -> str:
    """Writes a table (rows: protocol/model/defence/attack, columns: eps) and its flags; returns it.

    With ``worst_case`` (the attack name of the per-image worst-case records), the document opens with
    :func:`headline` over them and the full table follows as the detail."""
    eps_values = sorted({r.eps for r in records})
    cells: dict[tuple[str, str, str, str], dict[float, CellRecord]] = {}
    for r in records:
        cells.setdefault((r.protocol, r.model, r.defence, r.attack), {})[r.eps] = r
    rows = [[*name, *(pct(by_eps[e].accuracy) if e in by_eps else "" for e in eps_values)]
            for name, by_eps in sorted(cells.items())]  # fmt: skip
    head = ["protocol", "model", "defence", "attack", *(f"eps={e:g}" for e in eps_values)]
    lines = [f"# {title}", ""]
    if worst_case is not None:
        worst = [r for r in records if r.attack == worst_case]
        lines += [*headline(worst, what="every attack below"), "## Detail", ""]
    lines += markdown_table(head, rows)
    lines += flag_section(_grouped_flag_lines(records), empty=None)
    n_values = sorted({r.n for r in records})
    lines += ["", f"Images per cell: {n_values}. Settings: see cells/*.json and run.json.", ""]
    return write_text(path, lines)


def attach_flags(
    store: RunStore | None, records: Sequence[CellRecord], victim_flags: Mapping[tuple[str, str], Sequence[str]]
) -> list[CellRecord]:
    """Sets each record's flags to its victim's (:func:`~wnll_art.evaluation.checks.model_flags`, by ``(model,
    defence)``) plus its cell's: accuracy rising with eps (:func:`~wnll_art.evaluation.checks.eps_monotonicity_flags`)
    images left undecided (:func:`~wnll_art.evaluation.checks.undecided_flags`) and the registered masking checks among ``records`` (:func:`~wnll_art.evaluation.protocols.registry_flags`).

    Old flags are replaced (a resumed run keeps no stale flag); records whose flags change are rewritten in
    ``store`` (``None``: write nothing, as on ranks > 0). Returns the records in the order given.
    """
    cells: dict[str, set[str]] = {}
    for found in (eps_monotonicity_flags(records), registry_flags(records), undecided_flags(records)):
        for key, flags in found.items():
            cells.setdefault(key, set()).update(flags)
    out = []
    for r in records:
        flags = sorted(set(victim_flags.get((r.model, r.defence), ())) | cells.get(r.key, set()))
        if flags != r.flags:
            r = replace(r, flags=flags)
            if store is not None:
                store.put(r)
        out.append(r)
    return out


def write_plots(records: Iterable[CellRecord], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Accuracy vs eps, one PNG per (protocol, attack) with a line per (model, defence) (paper Fig. 5), each
    written atomically."""
    from wnll_art.plots import accuracy_vs_eps

    records = list(records)
    paths = []
    for protocol, attack in sorted({(r.protocol, r.attack) for r in records if r.attack != "clean"}):
        path = Path(out_dir) / f"accuracy_vs_eps__{protocol}__{attack}.png"
        paths.append(save_png(accuracy_vs_eps(records, attack=attack, protocol=protocol), path))
    return paths
