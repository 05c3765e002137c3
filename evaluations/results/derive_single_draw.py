"""Single-draw TVM numbers and the draws behind the adaptive minimum, read from committed per-cell records.

The tables count a TVM victim's image as correct only if K = 3 independent TVM draws all classify it correctly
(``--tvm-draws 3``, :func:`wnll_art.evaluation.engine.predict_correct`); the paper scored one draw. Every cell
record keeps, beside the K-draw ``per_image_correct``, the fraction of the K draws that were correct per image
(``extra.per_image_draw_mean``). Its mean is the mean of the K single-draw accuracies, the expected accuracy of
one draw: that is the single-draw number printed here. Which draw was correct is not recorded, so the accuracy
of one particular draw (the first, say) cannot be derived, nor a single-draw version of the adaptive per-image
minimum (it would need the same draw's result in every component cell).

Usage (from the repository root)::

    python evaluations/results/derive_single_draw.py [evaluations/results/gpu_2026-11-30/records.tgz]

reads ``results/gpu_tables/table2/<row>/cells/*.json`` inside the archive (the run behind
``evaluations/results/defense_table_trained_n500.md``) without unpacking it, checks every record against itself,
and prints the tables the README and that document quote (committed as ``single_draw_derived.txt``)::

    python evaluations/results/derive_single_draw.py > evaluations/results/single_draw_derived.txt
"""

from __future__ import annotations

import json
import sys
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ARCHIVE = Path(__file__).resolve().parent / "gpu_2026-11-30" / "records.tgz"
PREFIX = "results/gpu_tables/table2/"
ROWS = ("original", "tvm", "original+tvm")
FAMILIES = ("fgsm", "ifgsm", "cw_l2")

Key = tuple[str, str, str, str, str, float]  # row, protocol, model, defence, attack, eps


def single_draw_accuracy(record: Mapping[str, Any]) -> float:
    """Mean single-draw accuracy of a cell: the mean over images of the fraction of TVM draws correct.

    For a deterministic victim (``tvm_draws`` 1) it is the cell's accuracy. Checks that the record agrees with
    itself: each per-image fraction is a multiple of 1/K in [0, 1], an image is K-draw correct exactly when all
    K draws were (fraction 1), and the stored ``accuracy`` / ``accuracy_draw_mean`` match the per-image lists.

    Args:
        record: One cell record (``wnll-art/cell/v2`` JSON as a dict).

    Returns:
        The single-draw accuracy as a fraction in [0, 1].

    Raises:
        ValueError: The record is inconsistent or lacks the per-draw fields.
    """
    extra = record.get("extra") or {}
    correct = record["per_image_correct"]
    if "per_image_draw_mean" not in extra:
        raise ValueError(
            f"{_name(record)}: no extra.per_image_draw_mean (a record from before the K-draw rule)"
        )
    k, means = int(extra["tvm_draws"]), extra["per_image_draw_mean"]
    if len(means) != len(correct) or not correct:
        raise ValueError(f"{_name(record)}: {len(means)} draw means for {len(correct)} images")
    for i, (c, m) in enumerate(zip(correct, means, strict=True)):
        hits = round(m * k)
        if abs(m * k - hits) > 1e-4 or not 0 <= hits <= k or c != int(hits == k):
            raise ValueError(f"{_name(record)}: image {i}: correct {c} with draw mean {m} (K = {k})")
    if abs(record["accuracy"] - sum(correct) / len(correct)) > 1e-9:
        raise ValueError(f"{_name(record)}: accuracy {record['accuracy']} != mean of per_image_correct")
    mean = sum(means) / len(means)
    if abs(extra["accuracy_draw_mean"] - mean) > 1e-5:
        raise ValueError(f"{_name(record)}: accuracy_draw_mean {extra['accuracy_draw_mean']} != {mean}")
    return mean


def components(minimum: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """The ``(protocol, attack, eps)`` cells a per-image minimum (attack ``all`` or a family) was taken over,
    from its ``extra.component_accuracy`` keys (``"paper:clean"`` is the clean cell, eps 0), which must be the
    ``settings.components`` it lists where it lists them."""
    keys = list(minimum["extra"]["component_accuracy"])
    listed = (minimum.get("settings") or {}).get("components")
    if listed is not None and sorted(listed) != sorted(keys):
        raise ValueError(f"{_name(minimum)}: settings.components {listed} != component_accuracy keys {keys}")
    out = []
    for key in keys:
        protocol, attack = key.split(":", 1)
        out.append((protocol, attack, 0.0 if attack == "clean" else float(minimum["eps"])))
    return out


def draws_behind(
    minimum: Mapping[str, Any], cells: Mapping[Key, Mapping[str, Any]], row: str
) -> tuple[int, int]:
    """``(component cells, TVM prediction draws)`` behind one per-image minimum: the sum of the components'
    ``tvm_draws`` (each component's prediction draws; attack-side EOT samples are not counted).

    Raises:
        ValueError: A component's record is missing, or the minimum does not equal the per-image minimum of
            its components' ``per_image_correct``.
    """
    parts = []
    for protocol, attack, eps in components(minimum):
        key = (row, protocol, minimum["model"], minimum["defence"], attack, eps)
        if key not in cells:
            raise ValueError(f"{_name(minimum)}: component {key} has no record")
        parts.append(cells[key])
    per_image = [
        min(p["per_image_correct"][i] for p in parts) for i in range(len(minimum["per_image_correct"]))
    ]
    if per_image != list(minimum["per_image_correct"]):
        raise ValueError(f"{_name(minimum)}: not the per-image minimum of its {len(parts)} components")
    return len(parts), sum(int(p["extra"].get("tvm_draws", 1)) for p in parts)


def strongest(minimum: Mapping[str, Any]) -> tuple[str, str]:
    """``(protocol, attack)`` of the lowest component accuracy but clean (first on ties), as the report's
    brackets name it (:mod:`wnll_art.evaluation.report`)."""
    parts = {k: a for k, a in minimum["extra"]["component_accuracy"].items() if not k.endswith(":clean")}
    protocol, attack = min(parts, key=parts.__getitem__).split(":", 1)
    return protocol, attack


def load_cells(archive: str | Path, rows: Iterable[str] = ROWS) -> dict[Key, dict[str, Any]]:
    """Every ``cells/*.json`` of the Table 2 run in ``archive``, keyed by row, protocol, model, defence, attack,
    eps (convergence sub-runs are left out)."""
    cells: dict[Key, dict[str, Any]] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            for row in rows:
                if (
                    member.isfile()
                    and member.name.startswith(f"{PREFIX}{row}/cells/")
                    and member.name.endswith(".json")
                ):
                    fh = tar.extractfile(member)
                    if fh is None:
                        raise ValueError(f"{archive}: cannot read {member.name}")
                    r = json.load(fh)
                    cells[row, r["protocol"], r["model"], r["defence"], r["attack"], float(r["eps"])] = r
    return cells


def _name(record: Mapping[str, Any]) -> str:
    return "/".join(str(record.get(k)) for k in ("protocol", "model", "defence", "attack", "eps"))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _span(values: Sequence[float]) -> str:
    return f"{_pct(min(values))}-{_pct(max(values))}"


def paper_lines(cells: Mapping[Key, Mapping[str, Any]], eps_values: Sequence[float]) -> list[str]:
    """The paper protocol on the TVM victims: K-draw and single-draw accuracy per cell, and their ranges."""
    lines = ["## Paper protocol, TVM victims: K = 3 rule / mean single draw (%)", "",
             "| training data | victim | attack | " + " | ".join(f"eps={e:g}" for e in eps_values) + " |",
             "|---|---|---|" + "---|" * len(eps_values)]  # fmt: skip
    drops: dict[float, list[float]] = {e: [] for e in eps_values}
    spans: dict[tuple[str, float], tuple[list[float], list[float]]] = {}
    for row in ROWS:
        for model in ("softmax", "wnll"):
            for attack in ("clean", *FAMILIES):
                texts = []
                for e in [0.0] if attack == "clean" else eps_values:
                    r = cells[row, "paper", model, "tvm", attack, e]
                    one = single_draw_accuracy(r)
                    texts.append(f"{_pct(r['accuracy'])} / {_pct(one)}")
                    if attack != "clean":
                        drops[e].append(one - r["accuracy"])
                        for who in ("tvm", f"{model}+tvm"):
                            ks, ones = spans.setdefault((who, e), ([], []))
                            ks.append(r["accuracy"])
                            ones.append(one)
                if attack == "clean":
                    texts += [""] * (len(eps_values) - 1)
                lines.append(f"| {row} | {model} + tvm | {attack} | " + " | ".join(texts) + " |")
    lines += [
        "",
        "Ranges over the three rows and the three attacks (K = 3 / single draw; single minus K = 3):",
        "",
    ]
    clean = [cells[row, "paper", m, "tvm", "clean", 0.0] for row in ROWS for m in ("softmax", "wnll")]
    lines.append(f"- clean, every TVM victim: {_span([r['accuracy'] for r in clean])} / "
                 f"{_span([single_draw_accuracy(r) for r in clean])}")  # fmt: skip
    for e in eps_values:
        for who in ("tvm", "softmax+tvm", "wnll+tvm"):
            ks, ones = spans[who, e]
            lines.append(
                f"- eps {e:g}, {'every TVM victim' if who == 'tvm' else who}: {_span(ks)} / {_span(ones)}"
            )
        lines.append(f"- eps {e:g}: the single draw is {_span(drops[e])} points above the K = 3 rule")
    wnll = ["", "WNLL + TVM per attack at each eps, over the three rows (K = 3 / single draw):", ""]
    for e in eps_values:
        for attack in FAMILIES:
            rs = [cells[row, "paper", "wnll", "tvm", attack, e] for row in ROWS]
            ks, ones = [r["accuracy"] for r in rs], [single_draw_accuracy(r) for r in rs]
            wnll.append(f"- eps {e:g}, {attack}: {_span(ks)} / {_span(ones)}")
    return lines + wnll


def adaptive_lines(cells: Mapping[Key, Mapping[str, Any]], eps_values: Sequence[float]) -> list[str]:
    """The adaptive headline (attack ``all``) of each victim: its components, TVM draws and strongest attack."""
    lines = ["", "## Adaptive headline: per-image minimum over cells, and the strongest single attack (%)", "",
             "| training data | victim | eps | headline (K = 3) | cells | prediction draws | strongest attack | "
             "its K = 3 | its single draw |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in ROWS:
        for model in ("softmax", "wnll"):
            for defence in ("none", "tvm"):
                for e in eps_values:
                    m = cells[row, "adaptive", model, defence, "all", e]
                    n_cells, n_draws = draws_behind(m, cells, row)
                    protocol, attack = strongest(m)
                    s = cells[row, protocol, model, defence, attack, e]
                    lines.append(f"| {row} | {model} + {defence} | {e:g} | {_pct(m['accuracy'])} | {n_cells} | "
                                 f"{n_draws} | {attack} | {_pct(s['accuracy'])} | {_pct(single_draw_accuracy(s))} |")  # fmt: skip
    lines += ["", "Over the three rows (headline K = 3; strongest attack K = 3 / single draw):", ""]
    for model in ("softmax", "wnll"):
        for e in eps_values:
            ms = [cells[row, "adaptive", model, "tvm", "all", e] for row in ROWS]
            picks = [strongest(m) for m in ms]  # (protocol, attack) per row
            ss = [cells[row, p, model, "tvm", a, e] for row, (p, a) in zip(ROWS, picks, strict=True)]
            names = ", ".join(sorted({s["attack"] for s in ss}))
            lines.append(f"- {model} + tvm, eps {e:g}: headline {_span([m['accuracy'] for m in ms])}; {names} "
                         f"{_span([s['accuracy'] for s in ss])} / {_span([single_draw_accuracy(s) for s in ss])}")  # fmt: skip
    family: dict[str, set[tuple[int, int]]] = {}
    for key, m in cells.items():
        if key[1] == "adaptive" and key[4] in FAMILIES:
            family.setdefault(f"{key[2]} + {key[3]}", set()).add(draws_behind(m, cells, key[0]))
    lines += ["", "Family minima (the Detail table's adaptive column; cells, prediction draws): "
              + "; ".join(f"{v}: {', '.join(f'{c} cells, {d} draws' for c, d in sorted(s))}"
                          for v, s in sorted(family.items()))]  # fmt: skip
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    archive = Path(args[0]) if args else ARCHIVE
    cells = load_cells(archive)
    if not cells:
        print(f"{archive}: no {PREFIX}<row>/cells/*.json in it", file=sys.stderr)
        return 1
    eps_values = sorted({k[5] for k in cells if k[5] > 0})
    print(f"# Derived from {len(cells)} cell records in {archive.parent.name}/{archive.name} by: "
          "python evaluations/results/derive_single_draw.py", "", sep="\n")  # fmt: skip
    print("\n".join(paper_lines(cells, eps_values) + adaptive_lines(cells, eps_values)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
