r"""The paper's numbers, explained (issue 19): Table 2 cells under four protocols side by side (the paper's figure,
``authors``, ``paper``, ``adaptive``) and an ablation from our ``paper`` attack to the authors' script, step by step.

``run`` evaluates, with resume, the softmax model of each training-data row under the ``authors`` protocol (its three
scripts and the five ablation steps) and the ``paper`` protocol at the paper's five eps (stages 0 and 1 of
:func:`jobs`; the later stages run the WNLL scripts, the TVM victims and, stages 7 and 8, the WNLL ablation of
:data:`WNLL_LADDERS` on each row's WNLL model behind TVM at eps 0.02 / 0.08); ``report`` writes
``evaluations/results/paper_numbers_explained.md`` from those records, the paper's figures
(``evaluations/results/paper_tables.json``) and the GPU run's ``paper`` / ``adaptive`` records at eps 0.02 and 0.08
(``evaluations/results/gpu_2026-11-30/records.tgz``).

    WNLL_ART_DATA=../shared/data python evaluations/paper_numbers.py run --weights ../shared/weights/resnet56-4bfd9763.th
    # (resumable; --rows and --stages choose what to run first, e.g. --rows original+tvm --stages 7,8: the WNLL ablation)
    EPS=0.04,0.06,0.1 OUT=/tmp/gpu DEVICE=cuda WNLL_ART_DATA=../shared/data \
        WEIGHTS=../shared/weights/resnet56-4bfd9763.th RES=results/gpu_tables_neweps bash evaluations/gpu_tables.sh  # adaptive, GPU
    python evaluations/paper_numbers.py report && python evaluations/paper_numbers.py archive
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wnll_art.evaluation.records import CellRecord

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "evaluations" / "results"
OUT = RESULTS / "paper_numbers"
EPS = (0.02, 0.04, 0.06, 0.08, 0.1)
ROWS = {"original": "softmax", "tvm": "resnet56-softmax-tvm", "original+tvm": "resnet56-softmax-tvmaug"}
# the ablation: our paper attack, then the script's steps switched on one at a time (names of authors-protocol specs)
LADDERS = {
    "fgsm": [("paper", "fgsm", "our paper protocol (ART FGSM: ascent, eps in pixels, pixel clamp)"),
             ("authors", "fgsm_pixel_ascent", "the script's FGSM with the paper's ascent, eps in pixels, pixel clamp"),
             ("authors", "fgsm_normalised_eps", "+ eps in the script's normalised units (eps * std per channel)"),
             ("authors", "fgsm_normalised_clamp", "+ the clamp of normalised values to [0, 1] (pixels into [mean, mean + std])"),
             ("authors", "fgsm", "+ the script's sign: x - eps * grad, a descent (= the authors' script)")],
    "ifgsm": [("paper", "ifgsm", "our paper protocol (ART BIM: 10 steps of eps, pixel ball of eps)"),
              ("authors", "ifgsm_pixel", "the script's IFGSM (10 unit steps onto the ball's faces) in pixels"),
              ("authors", "ifgsm_normalised_eps", "+ the ball in normalised units (eps * std per channel)"),
              ("authors", "ifgsm", "+ the clamp of normalised values to [0, 1] (= the authors' script)")],
    "cw_l2": [("paper", "cw_l2", "our paper protocol (Foolbox C&W, c = 10, 10 steps, projected onto the eps ball)"),
              ("authors", "cw_l2", "the script's C&W: no distance term (w and its reference are one tensor), no ball")],
}  # fmt: skip
# the same on the WNLL side: the row's WNLL model behind TVM (unseen by both attacks), from our paper attack to
# Fool_WNLLDNN.py (evaluations/authors_scripts.md section 8; the by-name specs: protocols.WNLL_STEPS)
WNLL_LADDERS = {
    "fgsm": [("paper", "fgsm", "our paper protocol (ART FGSM on the straight-through view: CE of log(u + 1e-6), the head's log-softmax gradient; the victim's template)"),
             ("authors", "wnll_fgsm_victim_graph", "the script's FGSM step on the test images alone, the victim's template and graph, our loss (the same attack: a check)"),
             ("authors", "wnll_fgsm_script_loss", "+ the script's loss: CE of the raw WNLL values, the linear head's gradient"),
             ("authors", "wnll_fgsm_script_graph", "+ the script's graph: the victim's template as rows of the attacked batch, quartic weights, 15 / 8 neighbours, gamma (M + N) // M"),
             ("authors", "fgsm", "+ a fresh random augmented 500-image template per batch (= the authors' script)")],
    "ifgsm": [("paper", "ifgsm", "our paper protocol (ART BIM: 10 steps of eps in the eps ball, the straight-through view)"),
              ("authors", "wnll_ifgsm_victim_graph", "the script's IFGSM (10 steps of eps, clip, clamp) in the eps ball, the victim's template and graph, our loss (a check)"),
              ("authors", "wnll_ifgsm_script_loss", "+ the script's loss: CE of the raw WNLL values"),
              ("authors", "wnll_ifgsm_script_ball", "+ the script's fixed 0.1 ball (line 546) instead of eps"),
              ("authors", "wnll_ifgsm_script_graph", "+ the script's graph: the victim's template in the attacked batch, moved by every step"),
              ("authors", "ifgsm", "+ a fresh random augmented template per batch (= the authors' script)")],
    "cw_l2": [("paper", "cw_l2", "our paper protocol (Foolbox C&W, c = 10, 10 steps, with its distance term, projected onto the eps ball)"),
              ("authors", "wnll_cw_projected", "the script's C&W (no distance term, whole-batch-row targets, its template and graph), projected onto the eps ball"),
              ("authors", "wnll_cw_raw", "- the eps ball: x_cw itself"),
              ("authors", "cw_l2", "+ the script's scaling x + eps (x_cw - x) (= the authors' script)")],
}  # fmt: skip


NEW_EPS = (0.04, 0.06, 0.1)  # the GPU run of 2026-11-30 has the paper protocol at 0.02 and 0.08
WNLL_MODELS = {"original": "resnet56-wnll", "tvm": "resnet56-wnll-tvm", "original+tvm": "resnet56-wnll-tvmaug"}


def jobs(row: str) -> list[tuple[str, str, tuple[str, ...], str, tuple[float, ...]]]:
    """The runs of one training-data row, most informative first: ``(folder, model, defences, protocol, eps)``
    (``protocol`` ``"authors+"``: the authors' scripts and the softmax ablation steps; ``"authors-wnll"``: the WNLL
    ablation steps alone, whose other ends are the ``authors_wnll`` and ``paper_wnll_ablation`` cells)."""
    soft, wnll = ROWS[row], WNLL_MODELS[row]
    return [("authors", soft, ("none",), "authors+", EPS), ("paper", soft, ("none",), "paper", EPS),
            ("authors_wnll", wnll, ("none", "tvm"), "authors", (0.02, 0.08)),
            ("authors_wnll_more", wnll, ("none", "tvm"), "authors", NEW_EPS),
            ("authors_softmax_tvm", soft, ("tvm",), "authors", EPS),
            ("paper_wnll", wnll, ("none", "tvm"), "paper", NEW_EPS),
            ("paper_softmax_tvm", soft, ("tvm",), "paper", NEW_EPS),
            ("authors_wnll_ablation", wnll, ("tvm",), "authors-wnll", (0.02, 0.08)),
            ("paper_wnll_ablation", wnll, ("tvm",), "paper", (0.02, 0.08))]  # fmt: skip


def run(args: argparse.Namespace) -> None:
    """Every job of :func:`jobs` for each row, in order, resumable (finished cells are read back)."""
    from wnll_art.evaluation.config import EvalConfig
    from wnll_art.evaluation.jobs.main import evaluate
    from wnll_art.evaluation.protocols import SPECS, WNLL_STEPS

    # "authors+": the plan its folders were made with (the WNLL steps, registered later, skip softmax victims anyway)
    names = [k.split(":", 1)[1] for k in SPECS if SPECS[k].protocol == "authors"]
    everything = [name for name in names if name not in WNLL_STEPS]
    plans = {"authors+": everything, "authors-wnll": list(WNLL_STEPS)}
    order = [(row, job) for stage in args.stages for row in args.rows for i, job in enumerate(jobs(row)) if i == stage]
    for row, (folder, model, defences, protocol, eps) in order:
        cfg = EvalConfig(n=args.n, eps=eps, models=(model,), defences=defences, wnll_batch_size=args.n)
        evaluate(cfg, out_dir=OUT / row / folder, protocol=protocol.split("-")[0].rstrip("+"), attacks=plans.get(protocol),
                 weights=args.weights, on_cell=functools.partial(_print_cell, row))  # fmt: skip


def _print_cell(row: str, r: CellRecord) -> None:
    print(f"{row} {r.protocol} {r.model} {r.defence} {r.attack} {r.eps:g}: {100 * r.accuracy:.1f}%", flush=True)


def row_records(row: str, root: Path = OUT) -> dict[str, list[CellRecord]]:
    """The reader of one training-data row's records: ``{folder: records}`` for each folder of ``root/<row>`` that
    has cells (a job not started yet has none), in name order; a folder's records in file-name order."""
    from wnll_art.evaluation.records import read_records

    if not (root / row).is_dir():
        return {}
    return {f.name: read_records(f) for f in sorted((root / row).iterdir()) if (f / "cells").is_dir()}


def _row_cells(row: str) -> dict[tuple[str, str, str, str, float], Any]:
    """Every record of one training-data row (:func:`row_records`), from all its folders: ``{(kind, protocol,
    defence, attack, eps): record}`` with kind ``"softmax"`` (the row's softmax model) or ``"wnll"`` (its WNLL
    model); a key found in several folders keeps the record of the last."""
    kinds = {ROWS[row]: "softmax", WNLL_MODELS[row]: "wnll"}
    return {(kinds[r.model], r.protocol, r.defence, r.attack, r.eps): r
            for records in row_records(row).values() for r in records if r.model in kinds}  # fmt: skip


def _gpu_records() -> dict[tuple[str, str, str, str, str, float], float]:
    """``{(row, protocol, model, defence, attack, eps): accuracy %}`` of the GPU run (``table2/<row>/cells``)."""
    out = {}
    with tarfile.open(RESULTS / "gpu_2026-11-30" / "records.tgz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if "table2" in parts and parts[-2] == "cells" and member.isfile():
                rec = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                row = parts[parts.index("table2") + 1]
                out[row, rec["protocol"], rec["model"], rec["defence"], rec["attack"], rec["eps"]] = 100 * rec["accuracy"]
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def report(_: argparse.Namespace) -> None:
    """Writes ``paper_numbers_explained.md`` from the records and the paper's figures."""
    from wnll_art._files import atomic_write

    paper_fig = json.loads((RESULTS / "paper_tables.json").read_text())
    figure = {(c["training_data"], c["model"], c["defence"], c["attack"], c["eps"]): c["accuracy"]
              for c in paper_fig["table2"]}  # fmt: skip
    gpu = _gpu_records()
    rows, ablation, wnll_ablation = [], [], []
    by_row = {row: _row_cells(row) for row in ROWS}  # every record, read once
    for row, label in ROWS.items():
        cells = by_row[row]
        ours = {k[1:]: r for k, r in cells.items() if k[0] == "softmax"}
        for model, defence, attack, eps in ((m, d, a, e) for m in ("softmax", "wnll") for d in ("none", "tvm")
                                            for a in ("fgsm", "ifgsm", "cw_l2") for e in EPS):  # fmt: skip
            cpu = {p: None if (r := cells.get((model, p, defence, attack, eps))) is None else 100 * r.accuracy
                   for p in ("authors", "paper")}  # fmt: skip
            paper_p = cpu["paper"] if cpu["paper"] is not None else gpu.get((row, "paper", model, defence, attack, eps))
            ada = gpu.get((row, "adaptive", model, defence, attack, eps))
            fig = figure.get((row, model, defence, attack, eps))
            rows.append(f"| {row} | {model} | {defence} | {attack} | {eps:g} | {_pct(fig) if fig is not None else 'n/a'} | "
                        f"{_pct(cpu['authors']) if cpu['authors'] is not None else 'not run'} | "
                        f"{_pct(paper_p) if paper_p is not None else 'not run'} | {_pct(ada) if ada is not None else 'not run'} |")  # fmt: skip
        ablation += _ablation(f"{row} ({label})", LADDERS, ours, "none")
        wnll_cells = {k[1:]: r for k, r in cells.items() if k[0] == "wnll"}
        wnll_ablation += _ablation(f"{row} ({WNLL_MODELS[row]})", WNLL_LADDERS, wnll_cells, "tvm")
    steps_text, wnll_steps_text = (_steps_text(LADDERS), _steps_text(WNLL_LADDERS))
    lines = ["# The paper's numbers, explained", "", *_summary(by_row, figure), "",
             "## Table 2, four protocols per cell (accuracy %, 500 test images)", "",
             "Columns: the paper's figure (n/a: not sourced, see below); `authors` (the scripts replicated, this "
             "document's CPU run); `paper` (the paper as written, our reading: this CPU run at the five eps where "
             "it exists, else the GPU run of 2026-11-30 at 0.02 / 0.08); `adaptive` (the GPU run, 0.02 / 0.08). A TVM "
             "victim counts an image only if 3 TVM draws all classify it correctly (the paper scored one).", "",
             "| training data | model | defence | attack | eps | paper's figure | authors | paper | adaptive |",
             "|---|---|---|---|---|---|---|---|---|", *rows, "",
             "## Ablation: from our paper attack to the authors' script, one step at a time", "", *steps_text, "",
             "| training data | attack | eps | accuracy at each step | points each step adds |", "|---|---|---|---|---|",
             *ablation, "", *_wnll_section(wnll_steps_text, wnll_ablation), *FIGURES, *_notes(rows), "", "## Commands", "", "```", *(line.strip() for line in (__doc__ or "").split("\n\n")[-1].strip().splitlines()), "```",
             "", "Wall time on 2 shared CPU cores (another job running beside it): the softmax run of the original row "
             "(both protocols, five eps, 500 images) about 20 minutes; the WNLL authors run about 12 minutes; the softmax + TVM "
             "victims of the three rows (`authors` at five eps, `paper` at the three new ones) and the `original+tvm` "
             "WNLL model's `paper` cells at the new eps, about 27 minutes in two processes.", ""]  # fmt: skip
    atomic_write(RESULTS / "paper_numbers_explained.md", "\n".join(lines) + "\n")
    print((RESULTS / "paper_numbers_explained.md").read_text())


def _ablation(label: str, ladders: dict[str, list[tuple[str, str, str]]], cells: dict[tuple[str, str, str, float], Any],
              defence: str) -> list[str]:  # fmt: skip
    """Table lines of one row's ladders at eps 0.02 and 0.08: each step's accuracy and the points it adds (a ladder
    with a cell missing, or whose cells are not of the same images, is left out)."""
    out = []
    for family, steps in ladders.items():
        for eps in (0.02, 0.08):
            accs = [cells.get((proto, defence, name, eps)) for proto, name, _ in steps]
            if not all(accs) or len({tuple(r.image_indices) for r in accs}) != 1:  # type: ignore[union-attr]
                continue
            line = [f"{100 * r.accuracy:.1f}" for r in accs]  # type: ignore[union-attr]
            deltas = [f"{100 * (b.accuracy - a.accuracy):+.1f}" for a, b in zip(accs, accs[1:], strict=False)]  # type: ignore[union-attr]
            out.append(f"| {label} | {family} | {eps:g} | {' -> '.join(line)} | {', '.join(deltas)} |")
    return out


def _steps_text(ladders: dict[str, list[tuple[str, str, str]]]) -> list[str]:
    return [f"- **{family}**: " + "; ".join(f"({i}) {text}" for i, (_, _, text) in enumerate(steps))
            for family, steps in ladders.items()]  # fmt: skip


def _wnll_section(steps_text: list[str], lines: list[str]) -> list[str]:
    """The WNLL ablation's section (nothing while no ladder is complete)."""
    if not lines:
        return []
    return ["## Ablation on the WNLL side: from our paper attack to `Fool_WNLLDNN.py`, one step at a time", "",
            "Each row's WNLL model behind TVM (scored with 3 TVM draws; neither attack sees TVM), 500 test images. "
            "Step (1) is the same attack as step (0) (bit-identical adversarials), so its points are the noise of the "
            "TVM scoring draws, which are seeded per attack: every step carries that much. What each step isolates, "
            "and what it cannot, is in `evaluations/authors_scripts.md` section 8.", "",
            *steps_text, "", "| training data (model) | attack | eps | accuracy at each step | points each step adds |",
            "|---|---|---|---|---|", *lines, ""]  # fmt: skip


def _ladder_line(label: str, steps: list[tuple[str, str, str]], cells: dict[tuple[str, str, str, float], Any],
                 defence: str, eps: float, fig: float | None) -> str | None:  # fmt: skip
    """One summary bullet: a ladder's two ends and each step's points (``None`` while a cell is missing)."""
    accs = [cells.get((proto, defence, name, eps)) for proto, name, _ in steps]
    if not all(accs):
        return None
    acc = [100 * r.accuracy for r in accs]  # type: ignore[union-attr]
    parts = ", ".join(f"{name} {b - a:+.1f}" for (_, name, _), a, b in zip(steps[1:], acc, acc[1:], strict=False))
    return (f"- {label} at eps {eps:g}: our paper protocol {acc[0]:.1f}%, the authors' script {acc[-1]:.1f}%"
            + (f", the paper {fig:.1f}%" if fig is not None else "") + f" ({parts}).")  # fmt: skip


def _summary(by_row: dict[str, dict[tuple[str, str, str, str, float], Any]],
             figure: dict[tuple[Any, ...], Any]) -> list[str]:  # fmt: skip
    """The short answer, computed from the ladders at eps 0.02 and 0.08: the softmax ones of every row, the WNLL ones
    of the full defence (``resnet56-wnll-tvmaug`` behind TVM)."""
    out = ["**In short.** For softmax FGSM (the softmax cells whose paper figures we could source), the authors' script "
           "replicated step by step gives numbers close to the paper's where our reading of the paper gives numbers "
           "far below them, and three steps of the script that the paper does not state make the difference: eps in "
           "normalised units, the clamp of normalised values (it squeezes every pixel into [mean, mean + std] of its "
           "channel) and a *descent* step. No defence, 500 test images; each step's points are the change it makes, "
           "switched on in the order of the ablation below:", ""]  # fmt: skip
    for row, label in ROWS.items():
        cells = {k[1:]: r for k, r in by_row[row].items() if k[0] == "softmax"}
        for family, steps in LADDERS.items():
            for eps in (0.02, 0.08):
                line = _ladder_line(f"{family.upper()}, {row} data (`{label}`)", steps, cells, "none", eps,
                                    figure.get((row, "softmax", "none", family, eps)))  # fmt: skip
                out += [line] if line and (row == "original" or family == "fgsm") else []
    wnll = {k[1:]: r for k, r in by_row["original+tvm"].items() if k[0] == "wnll"}
    out += ["", "On the WNLL side the script's steps explain the C&W figures, not the IFGSM ones. On our full defence "
            "(WNLL + TVM trained on original + TVM data, `resnet56-wnll-tvmaug`, 3 TVM draws per image; step (1) repeats "
            "step (0), so its points are the noise of the TVM draws):", ""]  # fmt: skip
    for family, steps in WNLL_LADDERS.items():
        for eps in (0.02, 0.08):
            line = _ladder_line(family.upper(), steps, wnll, "tvm", eps,
                                figure.get(("original+tvm", "wnll", "tvm", family, eps)))  # fmt: skip
            out += [line] if line else []
    if ("authors", "tvm", "cw_l2", 0.08) in wnll:
        radius = wnll["authors", "tvm", "cw_l2", 0.08].extra["threat_model"]["linf_max"]
        out += ["", "The IFGSM script's ball is 0.1 at every eps, larger than eps, so as published it is a stronger "
                "attack than the paper's, not a weaker one: the paper's IFGSM figures for WNLL + TVM are not reproduced "
                "by the script on this network (the authors attacked a ResNet-20 trained their way). Its C&W result is "
                "scaled by eps (`x + eps * (x_cw - x)`): the noise it adds moves no pixel by more than "
                f"{radius:.4f} at eps 0.08, which is why C&W numbers this high can be printed for a defence that the "
                "adaptive attacks take to 0-0.8%."]  # fmt: skip
    return out


FIGURES = [
    "## The paper's figures, redrawn on our models",
    "",
    "Fig. 2 (clean and adversarial images, each also after TVM; `python evaluations/paper_figures.py fig2 --weights "
    "../shared/weights/resnet56-4bfd9763.th`):", "", "![Fig. 2](paper_fig2.png)", "",
    "Fig. 4 (airplane / automobile features, 1,000 training and 100 test images, FGSM eps 0.02, on the first two "
    "principal components of each model's training features; `python evaluations/feature_geometry.py --paper-fig4 "
    "--weights ../shared/weights/resnet56-4bfd9763.th --out evaluations/results`):", "", "![Fig. 4](paper_fig4.png)", "",
    "Fig. 5 (accuracy against eps of each row's WNLL + TVM victim, `authors` against `paper`, from the records above; "
    "missing points are named in its caption; `python evaluations/paper_figures.py fig5`):", "",
    "![Fig. 5](paper_fig5.png)", "",
]
def _notes(rows: list[str]) -> list[str]:
    """What the table does not cover, counted from its lines (``| ... | authors | paper | adaptive |``)."""
    cols = [[c.strip() for c in line.strip("|").split("|")[-4:]] for line in rows]  # figure, authors, paper, adaptive
    missing = {name: sum(c[i] == "not run" for c in cols) for i, name in enumerate(("authors", "paper", "adaptive"), 1)}
    sourced = sum(c[0] != "n/a" for c in cols)
    cpu = ("`paper_numbers.py run` finishes the first two on a CPU (resumable, stage by stage; about 10-30 minutes a "
           "stage and row on 2 cores). ") if missing["authors"] + missing["paper"] else ""
    return ["## What the table does not cover yet", "",
            f"- Of its {len(rows)} cells, not run yet: {missing['authors']} under `authors`, {missing['paper']} under "
            f"`paper`, {missing['adaptive']} under `adaptive`. {cpu}The `adaptive` column at eps 0.04, 0.06 and 0.1 "
            "needs a GPU (`gpu_tables.sh` with `EPS=0.04,0.06,0.1`, in the commands below); at 0.02 and 0.08 it is the "
            "GPU run of 2026-11-30 (`gpu_2026-11-30/records.tgz`).",
            "- The WNLL script (`Fool_WNLLDNN.py`) scores the attacked test images against its per-batch random "
            "template; here the template is drawn and attacked as in the script, but the victim scores with its own.",
            "- TVM: every run here uses the same settings (Guo et al.'s keep probability 0.5 and TV weight 0.03, 20 ADMM "
            "iterations, 3 draws per image), the GPU run's included.",
            f"- The paper's own figures: {sourced} of the {len(rows)} cells could be sourced (`paper_tables.json`: the "
            "cells issue 19 quotes; a reader with the paper fills its nulls, naming the paper's version, and reruns "
            "`paper_numbers.py report`). The stored copies of the paper (arXiv 1809.08516, its OpenReview submission, the Inverse Problems & Imaging "
            "version) could not be read past their abstracts here. The abstracts differ: v1 claims gains of up to 20.6, "
            "50.7 and 68.7 points under FGSM, IFGSM and C&W, v3 a gain of 38.9 points for ResNet-56 under IFGSM, so "
            "the tables changed between versions and a figure must name its version.",
            "- Records: `paper_numbers/<training data>/<job folder>/cells/*.json` (archive `paper_numbers_records.tgz`, made by `paper_numbers.py archive`; `tar xzf` it at the repository root; "
            "the job folders are `jobs(row)` in `evaluations/paper_numbers.py`).", ""]  # fmt: skip




def archive(_: argparse.Namespace) -> None:
    """Writes ``paper_numbers_records.tgz``: every job folder's ``run.json`` and ``cells/*.json`` (deterministic;
    ``tar xzf`` it at the repository root to read or resume them)."""
    sys.path.insert(0, str(ROOT))
    from evaluations.compare_defences_records import write_archive

    folders = sorted(f for f in OUT.glob("*/*") if (f / "run.json").is_file())
    names = write_archive(folders, RESULTS / "paper_numbers_records.tgz")
    print(f"{RESULTS / 'paper_numbers_records.tgz'}: {len(names)} files of {len(folders)} folders")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--rows", type=lambda t: [x for x in t.split(",") if x], default=list(ROWS))
    r.add_argument("--n", type=int, default=500)
    r.add_argument("--weights", default=None)
    r.add_argument("--stages", type=lambda t: [int(x) for x in t.split(",") if x], default=list(range(len(jobs("original")))),  # fmt: skip
                   help="indices into jobs(row), run stage by stage across the rows")
    sub.add_parser("report")
    sub.add_parser("archive")
    args = p.parse_args(argv)
    {"run": run, "report": report, "archive": archive}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
