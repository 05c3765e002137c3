"""The document of the comparison of defences (issue 21): ``results/compare_defences_n{N}.md`` and its bar chart,
from the records of ``wnll-art evaluate`` runs (adaptive protocol; paper protocol for the per-image check).

Every number is computed here from the records (:mod:`wnll_art.evaluation.comparison`); the settings of each
defence come from its records and its registry entry (an ART preprocessor's citation is its
:class:`~wnll_art.adapters.art_preprocessors.ArtEntry`'s), so a new entry of ``ART_PREPROCESSORS`` is picked up
without an edit here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluations.compare_defences_records import command_of, convergence_command, relative
from wnll_art.adapters.art_preprocessors import ART_PREPROCESSORS
from wnll_art.evaluation.comparison import (
    EPS_8,
    RULE,
    UNDEFENDED,
    Row,
    RunFolder,
    build_rows,
    is_adversarial,
    is_eps_8,
    load_folder,
    missing_defences,
    references,
    same_eps,
    selected_for_checks,
)
from wnll_art.evaluation.report import HEADLINE_FLAGS, markdown_table, pct, save_png, write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ADVERSARIAL_ROWS", "ARCHIVE", "ARCHIVE_N500", "chart", "document", "write_report"]

RESULTS = Path(__file__).resolve().parent / "results"
ARCHIVE = RESULTS / "compare_defences_records.tgz"  # the 100-image run (compare_defences_n100.md), every eps
ARCHIVE_N500 = RESULTS / "compare_defences_n500_records.tgz"  # the 500 images (compare_defences_n500.md)
# the adversarial-training rows of the issue (FGSM-RS: E. Wong, L. Rice, J. Z. Kolter, ICLR 2020)
ASKED_EPS = (0.02, EPS_8, 0.08)  # the three eps: the document says which of them have no record yet
ADVERSARIAL_ROWS = (("resnet56-fgsmrs", "none", "FGSM-RS alone"), ("fgsmrs-wnll", "none", "FGSM-RS + WNLL head"),
                    ("fgsmrs-wnll", "tvm", "FGSM-RS + WNLL head + TVM"))  # fmt: skip
OURS = {"none": ("-", "-", "no defence"),
        "tvm": ("`wnll_art.tvm.TVMPurifier` (ART `TotalVarMin`'s objective, solved by ADMM on the device)", None,
                "C. Guo, M. Rana, M. Cisse, L. van der Maaten, ICLR 2018 (our TVM, Wang et al. 2018's purifier)")}  # fmt: skip


def _eps(eps: float) -> str:
    return "8/255" if is_eps_8(eps) else f"{eps:g}"


def _eps_not_run(rows: Sequence[Row]) -> list[float]:
    """The eps of :data:`ASKED_EPS` at which no adaptive row holds a number."""
    return [e for e in ASKED_EPS if not any(same_eps(r.eps, e) and r.robust is not None for r in rows)]


def _victims_not_run(rows: Sequence[Row]) -> dict[float, list[str]]:
    """``{eps: victims}`` for each eps of :data:`ASKED_EPS` that some row holds: the victims with a number at another
    eps and none at this one (a run started at that eps for some victims only)."""
    have = {(r.victim, e) for r in rows if r.robust is not None for e in ASKED_EPS if same_eps(r.eps, e)}
    victims = list(dict.fromkeys(r.victim for r in rows if r.robust is not None))  # in the rows' order
    started = [e for e in ASKED_EPS if any(same_eps(e, x) for _, x in have)]
    out = {e: [v for v in victims if (v, e) not in have] for e in started}
    return {e: v for e, v in out.items() if v}


def _order(rows: Sequence[Row]) -> list[Row]:
    """Rows grouped by defence (the registry's order), then model (first seen first)."""
    from wnll_art.evaluation.victims import PURIFIERS

    defences = [*PURIFIERS.names(), *sorted({r.defence for r in rows} - set(PURIFIERS.names()))]
    models = list(dict.fromkeys(r.model for r in rows))
    return sorted(rows, key=lambda r: (r.eps, defences.index(r.defence), models.index(r.model)))


def _best(rows: Sequence[Row]) -> Row | None:
    found = [r for r in rows if r.robust is not None]
    return max(found, key=lambda r: r.robust or 0.0) if found else None


def _kept(row: Row) -> str:
    """``row``'s adaptive number as the headline cites it: an incomplete row's is an upper bound, and says so."""
    k = len(row.missing)
    return f"{pct(row.robust or 0)}%" + (f" (at most: {k} attack{'s' if k > 1 else ''} not yet run)" if k else "")


def _clean(row: Row) -> str:
    return "-" if row.clean is None else f"{pct(row.clean)}%"


def _clean_cost(rows: Sequence[Row]) -> list[str]:
    """Computed notes on defences whose clean accuracy is far below their undefended model's (> 20 points): their
    robust number is mostly the images a near-constant classifier gets right, not robustness. ART's ``TotalVarMin``
    starts its L-BFGS-B solve at the input itself (``z_min = x.copy()``), so at a small TV weight and 10 iterations it
    stays near the identity, and at a large one it smooths the image away: its two settings sit at those ends (a note
    with the clean accuracies measured, beside our ADMM TVM's)."""
    base = {(r.model, r.eps): r for r in rows if r.defence == "none" and r.clean is not None}
    out = []
    for r in rows:
        ref = base.get((r.model, r.eps))
        if r.defence != "none" and ref and r.clean is not None and ref.clean - r.clean > 0.2:  # type: ignore[operator]
            out.append(f"- {r.victim} at eps {_eps(r.eps)}: clean {_clean(r)} against {_clean(ref)} undefended; its "
                       f"robust {_kept(r)} is of a classifier that has lost most of its accuracy.")  # fmt: skip
    art = [r for r in rows if r.defence in ("art_tvm", "art_tvm_guo", "tvm") and r.clean is not None]
    if any(r.defence != "tvm" for r in art):
        out.append("- ART's `TotalVarMin` solves by L-BFGS-B from the input itself (`z_min = x.copy()`), `max_iter` 10 "
                   "iterations: at Guo et al.'s TV weight (`art_tvm_guo`, 0.03) it barely leaves the input, at ART's "
                   "default (`art_tvm`, 0.5, keeping 30 %) it smooths the image away. Our `tvm` (same objective at "
                   "Guo's settings, ADMM, also from the input) lies between: " + ", ".join(dict.fromkeys(
                       f"{r.victim} clean {_clean(r)}" for r in art)) + ".")  # fmt: skip  # once per victim, not per eps
    return ["## Clean accuracy: what a robust number costs", "", *out, ""] if out else []


def headline(rows: Sequence[Row]) -> str:
    """The answer first, in one computed sentence (at 8/255 when recorded, else at the smallest eps)."""
    eps_values = sorted({r.eps for r in rows if r.robust is not None})
    if not eps_values:
        return "No adaptive record yet: nothing to compare (see *Not run* below)."
    eps = next((e for e in eps_values if is_eps_8(e)), eps_values[0])
    at = [r for r in rows if r.eps == eps and r.robust is not None]
    best = _best(at)
    assert best is not None
    base = {r.model: r for r in at if r.defence == "none"}
    text = [f"At eps = {_eps(eps)} under the adaptive protocol ({'/'.join(sorted({str(r.n) for r in at}))} test "
            f"images), the most robust victim is {best.victim} with {_kept(best)} (clean "
            f"{pct(best.clean) if best.clean is not None else '-'}%)"]  # fmt: skip
    soft = next((r for r in at if (r.model, r.defence) == ("softmax", "none")), None)
    if soft and soft is not best:
        text.append(f"the undefended softmax ResNet-56 keeps {_kept(soft)}")
    ours = _best([r for r in at if r.wnll and r.defence == "tvm" and not is_adversarial(r.model)])
    if ours:
        ref = base.get(ours.model)
        gain = f", {100 * ((ours.robust or 0) - ref.robust):+.1f} points over {ref.victim}" if ref and ref.robust is not None else ""
        text.append(f"our WNLL + TVM ({ours.victim}) keeps {_kept(ours)} (clean {_clean(ours)}){gain}")
    art = _best([r for r in at if r.defence in ART_PREPROCESSORS])
    if art:
        text.append(f"the best ART defence, {art.victim}, keeps {_kept(art)} (clean {_clean(art)})")
    adv = {(m, d): r for r in at for m, d, _ in ADVERSARIAL_ROWS if (r.model, r.defence) == (m, d)}
    if adv:
        text.append("adversarial training (FGSM-RS) keeps " + ", ".join(
            f"{_kept(r)} ({label})" for m, d, label in ADVERSARIAL_ROWS if (r := adv.get((m, d)))))  # fmt: skip
    incomplete = sum(bool(r.missing) for r in rows)
    tail = f" {incomplete} of {len(rows)} rows are incomplete (runs in progress; see *Not run*)." if incomplete else ""
    if todo := _eps_not_run(rows):
        tail += f" Not yet run at eps {', '.join(map(_eps, todo))} (see *Not run*)."
    for e, victims in _victims_not_run(rows).items():
        tail += f" At eps {_eps(e)}, {len(victims)} victims are not yet run (see *Not run*)."
    return "; ".join(text) + "." + tail


def _flag_names(row: Row) -> str:
    names = sorted({f.split(":", 1)[0] for f in row.flags} & set(HEADLINE_FLAGS))
    names += [f"incomplete ({len(row.missing)} attack{'s' if len(row.missing) > 1 else ''} missing)"] if row.missing else []
    names += [f"paper < adaptive on {len(row.violations)} image{'s' if len(row.violations) > 1 else ''}"] if row.violations else []
    return ", ".join(names) or "clear"


def _table(rows: Sequence[Row], eps: float) -> list[str]:
    """The table of one eps (rows already ordered)."""
    several = len({r.n for r in rows}) > 1
    body = []
    for r in (r for r in rows if r.eps == eps):
        paper = "-" if r.paper is None else pct(r.paper) + (" (incomplete)" if r.paper_missing else "")
        broke = "-" if r.violations is None else str(len(r.violations))
        body.append([f"{r.victim}{' †' if r.randomised else ''}", *([str(r.n)] if several else []),
                     "-" if r.clean is None else pct(r.clean),
                     ("not run yet" if r.clean is None else "-") if r.robust is None else f"**{pct(r.robust)}**",
                     r.strongest or "-", paper, broke, _flag_names(r)])  # fmt: skip
    head = ["victim (model + defence)", *(["n"] if several else []), "clean", "adaptive robust", "strongest attack",
            "paper protocol", "paper broke, adaptive plan alone did not", "flags"]  # fmt: skip
    return [f"## eps = {_eps(eps)} ({eps:g})", "", *markdown_table(head, body), ""]


def _adversarial(rows: Sequence[Row]) -> list[str]:
    """The adversarial-training rows (``not run`` where no record holds them)."""
    index = {(r.model, r.defence, r.eps): r for r in rows}
    eps_values = sorted({r.eps for r in rows}) or [8 / 255]
    body = []
    for model, defence, label in ADVERSARIAL_ROWS:
        for eps in eps_values:
            r = index.get((model, defence, eps))
            if r is None or (r.clean is None and r.robust is None):
                cells = ["not run", "not run", "not run"]
            else:
                cells = [pct(r.clean) if r.clean is not None else "-", pct(r.robust) if r.robust is not None else "-",
                         "-" if r.paper is None else pct(r.paper)]  # fmt: skip
            body.append([label, f"{model} + {defence}", _eps(eps), *cells])
    return ["## Adversarial training (FGSM-RS) with and without the WNLL head and TVM", "",
            "FGSM-RS: FGSM adversarial training with a random start (E. Wong, L. Rice, J. Z. Kolter, ICLR 2020), our "
            "zoo's `resnet56-fgsmrs`; `fgsmrs-wnll` reads the same network through a WNLL head. The paper's Section 7 "
            "claims WNLL + TVM adds to adversarial training: the third row against the first, under the same adaptive "
            "attacks.", "", *markdown_table(["row", "victim", "eps", "clean", "adaptive robust", "paper protocol"], body), ""]  # fmt: skip


def _curve(points: dict[int, float]) -> str:
    return ", ".join(f"{k}: {pct(a)}" for k, a in sorted(points.items())) or "-"


def _checks(rows: Sequence[Row]) -> list[str]:
    """The transfer, gradient-free and convergence numbers of every defence beating no defence by > 5 points."""
    lines = [f"## Defences beating no defence by more than {100 * RULE:g} points at 8/255 (masking checks)", "",
             "No defence: the victim's own model undefended, and the undefended softmax ResNet-56 (so the WNLL head "
             "and adversarial training count as defences); the gain is over the weaker of the two. Where a convergence ladder "
             "still fell past the plan's step count, its attack was re-run at the ladder's top on every image and joins "
             "the worst case; a row that re-run has brought under the rule stays here, with its gain as it is now.", ""]
    at8 = [r for r in rows if is_eps_8(r.eps)]
    if not at8:
        return [*lines, "No records at 8/255: the rule cannot be applied yet.", ""]
    chosen = selected_for_checks(rows)
    undecided = sorted({r.victim for r in at8 if (r.model, r.defence) != (UNDEFENDED, "none") and r.robust is not None
                        and not references(rows, r)})  # fmt: skip
    body: list[list[str]] = []
    todo: dict[Path, list[str]] = {}
    budget_todo: dict[Path, list[str]] = {}
    for r, gain in chosen:
        c = r.convergence
        conv = "convergence check not run" if c is None else (
            f"{c.attack} (n={c.n}) steps {_curve(c.steps)}; EOT {_curve(c.eot)}; unbounded "
            f"{'-' if c.unbounded is None else pct(c.unbounded[1])}; {'; '.join(c.flags) or 'converged'}"
            f"{_budget(r, c.attack)}")  # fmt: skip
        if c is None and r.folder is not None:
            todo.setdefault(r.folder, []).append(f"{r.model}+{r.defence}")
        if r.budget_steps is not None and r.folder is not None:
            budget_todo.setdefault(r.folder, []).append(f"{r.model}+{r.defence}")
        body.append([r.victim, f"{100 * gain:+.1f}", pct(r.robust or 0), *(pct(r.attacks[a]) if a in r.attacks
                     else "not recorded" for a in ("transfer_pgd", "square")), conv])  # fmt: skip
    if body:
        lines += markdown_table(["victim", "gain (points)", "adaptive robust", "transfer_pgd", "square",
                                 "convergence (best-so-far accuracy %)"], body)  # fmt: skip
    else:
        lines.append("None of the defences recorded (the WNLL head and adversarial training included) beats its "
                     f"model's no-defence row or the undefended softmax by more than {100 * RULE:g} points at 8/255.")  # fmt: skip
    lines += [""] + [f"- rule undecided for {v}: no no-defence row (its model's or softmax's) yet" for v in undecided]
    lines += [""] if undecided else []
    lines += ["To run the convergence checks not run (Carlini et al. 2019 ladders on the strongest gradient "
              "attack, 20 images):", ""] + [f"    {convergence_command(f, v)}" for f, v in todo.items()] + [""] if todo else []
    lines += ["To run the full-budget re-runs the ladders call for (the attack at the ladder's top step count on "
              "every image):", ""] + [f"    {convergence_command(f, v, kind='budget')}"
                                      for f, v in budget_todo.items()] + [""] if budget_todo else []  # fmt: skip
    return lines


def _budget(row: Row, attack: str) -> str:
    """The convergence column's last words: the laddered attack alone on all the row's images at the plan's steps and
    at each full-budget re-run's (the re-runs are in the row's worst case), or that a re-run is due."""
    done = sorted((int(a.rsplit("__steps", 1)[1]), acc) for a, acc in row.reruns.items() if a.startswith(f"{attack}__steps"))
    if done:
        plan = [(row.plan_steps, row.attacks[attack])] if attack in row.attacks else []
        curve = ", ".join(f"{k} steps {pct(acc)}" for k, acc in plan + done)
        return f"; on all {row.n} images, {attack} alone: {curve} (the re-runs are in the worst case)"
    if row.budget_steps is not None:
        return f"; the ladder calls for a re-run at {row.budget_steps} steps on all {row.n} images: not run yet"
    return ""


def _violations(rows: Sequence[Row]) -> list[str]:
    """The per-image acceptance: adaptive at most paper, image by image."""
    lines = ["## Per image: adaptive at most paper protocol", ""]
    compared = [r for r in rows if r.violations is not None]
    if not compared:
        return [*lines, "No paper-protocol records for any victim yet: the per-image check is not made.", ""]
    bad = [r for r in compared if r.violations]
    lines.append(f"{len(compared)} rows compared image by image; {len(bad)} with images the paper protocol broke and "
                 "the adaptive plan alone did not. The robust numbers above are the worst case over both, so each is "
                 "at most its paper number image by image (as the defence table's); an image only the paper attacks "
                 "broke means the adaptive plan's budget or gradients fell short there.")  # fmt: skip
    body = [[r.victim, _eps(r.eps), str(len(r.violations or ())), pct((r.robust or 0) + len(r.violations or ()) / r.n),
             pct(r.robust or 0), ", ".join(str(i) for i in (r.violations or ())[:12])
             + (" ..." if len(r.violations or ()) > 12 else "")] for r in bad]  # fmt: skip
    if body:
        lines += ["", *markdown_table(["victim", "eps", "images", "adaptive plan alone", "with the paper attacks",
                                       "test indices"], body)]  # fmt: skip
    return [*lines, ""]


def _settings(rows: Sequence[Row], folders: Sequence[RunFolder]) -> list[str]:
    """Every defence's class, settings (as recorded) and citation."""
    from wnll_art.evaluation.victims import PURIFIERS

    recorded: dict[str, dict[str, Any]] = {}
    for f in folders:
        for r in f.records:
            recorded.setdefault(r.defence, r.settings.get("victim", {}))
    body = []
    for name in PURIFIERS.names():
        victim, entry = recorded.get(name, {}), ART_PREPROCESSORS.get(name)
        if entry is not None:
            params = (victim.get("purifier") or {}).get("params") or {}  # ART's own attributes, internals too
            shown = {k: params.get(k, v) for k, v in entry.options.items()}  # the entry's options, as recorded
            body.append([name, f"ART `{entry.art_class}`", ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in shown.items()), entry.citation or "see ART's documentation"])  # fmt: skip
        elif name in OURS:
            cls, _, cite = OURS[name]
            tvm = victim.get("tvm") or (folders[0].settings["run"]["tvm"] if folders else {})
            body.append([name, cls, ", ".join(f"{k}={v}" for k, v in tvm.items()) if name == "tvm" else "-", cite])
    return ["## Defences: settings and citations", "",
            *markdown_table(["defence", "class", "settings (as recorded)", "paper"], body), "",
            "Every ART preprocessor is attacked through its own `estimate_gradient` (BPDA) and, when it draws, with EOT "
            "over its draws; a randomised victim (†) counts an image only if all K independent draws classify it "
            "correctly (K = `--tvm-draws`, in each run's `run.json`). Models: `softmax` is the public ResNet-56; "
            "WNLL models read it (or our zoo's networks) through the WNLL output activation (B. Wang et al., "
            "arXiv:1809.08516, 2018).", ""]  # fmt: skip


def _not_run(rows: Sequence[Row], folders: Sequence[RunFolder], absent: Sequence[str]) -> list[str]:
    from wnll_art.evaluation.victims import PURIFIERS

    lines = ["## Not run", ""]
    nowhere = missing_defences(rows, PURIFIERS.names())
    for d in nowhere:
        asked = [relative(f.path) for f in folders if d in f.settings.get("run", {}).get("defences", [])]
        lines.append(f"- {d}: not run " + (f"yet (asked for by {', '.join(asked)}: running or stopped)" if asked
                                             else "(no record of it in any folder)"))  # fmt: skip
    todo = _eps_not_run(rows)
    for e in ASKED_EPS:
        if e in todo:
            lines.append(f"- eps {_eps(e)}: no adaptive record yet (`evaluations/gpu_compare.sh` with `EPS={e:g}` "
                         "and a run folder of its own; `evaluations/README.md` has its CPU form)")  # fmt: skip
        elif here := [d for d in missing_defences(rows, PURIFIERS.names(), eps=e) if d not in nowhere]:
            lines.append(f"- eps {_eps(e)}: no record of {', '.join(here)} at this eps")
        if victims := _victims_not_run(rows).get(e):
            lines.append(f"- eps {_eps(e)}: no number yet for {', '.join(victims)} (recorded at another eps)")
    lines += [f"- folder {a}: absent (no run.json)" for a in absent]
    for f in folders:
        missing = f.missing()
        if missing:
            lines.append(f"- {relative(f.path)} ({f.protocol}): {len(missing)} cells not yet recorded, e.g. "
                         + ", ".join(missing[:4]))  # fmt: skip
        lines += [f"- {relative(f.path)}: invalid cell left out: {p}" for p in f.problems]
    return [*lines, *([] if len(lines) > 2 else ["- nothing: every registered defence and every planned cell is recorded"]), ""]


def _check_commands(folders: Sequence[RunFolder]) -> list[str]:
    """The commands that made the recorded convergence ladders and full-budget re-runs (one per folder and budget)."""
    lines = []
    for f in folders:
        ladders = sorted({f"{r.model}+{r.defence}" for r in f.convergence})
        lines += [f"    {convergence_command(f.path, ladders)}"] if ladders else []
        steps = sorted({int(r.attack.rsplit("__steps", 1)[1]) for r in f.budget if "__steps" in r.attack})
        for k in steps:
            victims = sorted({f"{r.model}+{r.defence}" for r in f.budget if r.attack.endswith(f"__steps{k}")})
            lines.append(f"    {convergence_command(f.path, victims, kind='budget')} --steps {k}")
    return ["", "The convergence ladders and full-budget re-runs recorded (each resumes):", "", *lines] if lines else []


def document(folders: Sequence[RunFolder], *, absent: Sequence[str] = (), png: str | None = None,
             archive: str = relative(ARCHIVE)) -> list[str]:  # fmt: skip
    """The lines of the document over the runs ``folders`` (``absent``: folders asked for but not there)."""
    rows = _order(build_rows(folders))
    n = sorted({r.n for r in rows})
    flags = sorted({(r.victim, f) for r in rows for f in r.flags})
    lines = [f"# Defences compared under the adaptive protocol (CIFAR-10, n = {'/'.join(map(str, n)) or '-'})", "",
             headline(rows), "", "Robust accuracy (%) per image: the worst case over clean and every adaptive attack "
             "(PGD, APGD-CE, APGD-DLR on the smooth and straight-through views with BPDA + EOT, PGD transferred from "
             "the softmax model, Square) and, where a convergence ladder showed the plan's step count fell short, that attack "
             "re-run at the ladder's top step count on every image; the paper protocol's number is the same worst case "
             "over its attacks (FGSM, IFGSM, C&W, TVM unseen). † randomised defence (K-draw rule).", ""]  # fmt: skip
    for eps in sorted({r.eps for r in rows}):
        lines += _table(rows, eps)
    lines += [f"![clean vs adaptive robust accuracy]({png})", ""] if png else []
    lines += _clean_cost(rows) + _adversarial(rows) + _checks(rows) + _violations(rows) + _settings(rows, folders)
    lines += _not_run(rows, folders, absent)
    lines += ["## Flags", "", *(f"- {v}: {f}" for v, f in flags)] if flags else []
    lines += ["", "## Commands", "", "Each folder's command, rebuilt from its `run.json` (re-running it resumes):", ""]
    lines += [f"    {command_of(f.settings, f.path)}" for f in folders]
    lines += _check_commands(folders)
    lines += ["", "Report: `python evaluations/compare_defences.py report --records FOLDER ...` (this file, the chart "
              "and the archive).", "", "## Records", "",
              f"The records are in `{archive}` (each folder's `run.json` and `cells/*.json`, convergence and budget "
              "cells included; `tar xzf` it at the repository root).", "", "## Adding a defence", "",
              "One more ART preprocessor in this comparison is one entry of `ART_PREPROCESSORS` "
              "(`wnll_art/adapters/art_preprocessors.py`): class, options, the attacker's gradient, layout, randomised, slow, "
              "citation. It is then a defence of `--defences` everywhere, `evaluations/gpu_compare.sh` runs it (`slow`: on "
              "its first `SLOW_N` images only), and this report lists its row, settings and citation (or `not run`) "
              "without an edit.", ""]  # fmt: skip
    return lines


def chart(rows: Sequence[Row]) -> Figure:
    """Clean vs adaptive robust accuracy per victim, one panel per eps, grouped by defence, one bar per model."""
    from wnll_art.plots import clean_robust_bars

    panels: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
    for r in _order(rows):
        if r.clean is not None and r.robust is not None:
            label = f"{r.model} ({'WNLL' if r.wnll else 'softmax'})"
            panels.setdefault(f"eps {_eps(r.eps)}", {}).setdefault(r.defence, {})[label] = (r.clean, r.robust)
    return clean_robust_bars(panels, title="Clean (light) vs adaptive robust (solid)")


def write_report(records: Sequence[str | os.PathLike[str]], *, out_dir: str | os.PathLike[str] = RESULTS,
                 archive: str = relative(ARCHIVE)) -> Path:  # fmt: skip
    """Writes ``out_dir/compare_defences_n{N}.md`` and its PNG (N: the records' largest image count) from the run
    folders ``records`` (absent ones listed as such); returns the document's path."""
    loaded = {str(p): load_folder(p) for p in records}
    folders = [f for f in loaded.values() if f is not None]
    absent = [relative(p) for p, f in loaded.items() if f is None]
    rows = build_rows(folders)
    n = max((r.n for r in rows), default=max((f.settings["run"]["n"] for f in folders), default=0))
    out = Path(out_dir)
    png = out / f"compare_defences_n{n}.png"
    drawn = [r for r in rows if r.clean is not None and r.robust is not None]
    if drawn:
        save_png(chart(drawn), png)
    path = out / f"compare_defences_n{n}.md"
    write_text(path, document(folders, absent=absent, png=png.name if drawn else None, archive=archive))
    return path
