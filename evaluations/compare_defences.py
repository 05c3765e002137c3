"""WNLL + TVM against ART's defences (TotalVarMin at ART's and at Guo's settings, JpegCompression,
SpatialSmoothing, FeatureSqueezing, Gaussian noise), our TVM, adversarial training and no defence, on the same
models, images and adaptive attacks: ``wnll-art evaluate --protocol adaptive`` with every registered defence.

    python evaluations/compare_defences.py [run] ...        # the runs (default: the adaptive protocol's default plan)
    python evaluations/compare_defences.py report --records FOLDER ...   # results/compare_defences_n{N}.md, PNG, archive
    python evaluations/compare_defences.py convergence --records FOLDER --victims MODEL+DEFENCE,...
    python evaluations/compare_defences.py checks [--budget] --records FOLDER ...   # the convergence (budget) runs the report still lacks
    python evaluations/compare_defences.py budget --records FOLDER --victims MODEL+DEFENCE,...   # where a ladder calls for it
    python evaluations/compare_defences.py defences [--slow]   # the registered defences (gpu_compare.sh's lists)

Run ``python evaluations/compare_defences.py {run,report,convergence,budget,checks,defences} --help``; see ``evaluations/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "compare_defences"
SUBCOMMANDS = ("run", "report", "convergence", "budget", "checks", "defences")
RECORDS = Path(__file__).resolve().parent / "results" / "compare_defences" / "n100_eps8"
DEFAULT_RECORDS = tuple(str(RECORDS / name) for name in ("adversarial", "defences", "adversarial_paper", "defences_paper"))


def run(argv: Sequence[str]) -> int:
    """The comparison runs: :func:`wnll_art.evaluation.jobs.main.evaluate` with the ``adaptive`` protocol
    (``--attacks`` unset: its default plan) or another (``--protocol paper`` for the per-image check)."""
    from wnll_art import _argparse as ap
    from wnll_art.evaluation.parser import config_from_args, plan_from_args, run_script, script_parser
    from wnll_art.evaluation.protocols import PROTOCOLS
    from wnll_art.evaluation.victims import PURIFIERS

    p = script_parser(PROG, __doc__ or "", n=50, eps=(0.02, 0.04, 0.08), defences=tuple(PURIFIERS), steps=20,
                      defences_help=f"defences among {','.join(PURIFIERS)}", out="results/compare_defences")  # fmt: skip
    p.add_argument("--protocol", choices=PROTOCOLS.names(), default="adaptive", help="the attack plan's protocol")
    p.add_argument("--attacks", type=ap.name_list, default=None,
                   help="the protocol's attacks (unset: its default plan: PGD, APGD-CE/DLR on the smooth and "
                        "straight-through views, transfer PGD, Square for adaptive)")  # fmt: skip
    p.add_argument(
        "--models", type=ap.name_list, default=("softmax", "wnll"), help="model labels or trained models"
    )
    p.add_argument("--defence-options", type=json.loads, default=None,
                   help='JSON overrides, e.g. \'{"jpeg": {"quality": 50}, "art_tvm": {"max_iter": 5}}\'')  # fmt: skip
    args = p.parse_args(argv)

    def body() -> None:
        from wnll_art.evaluation.jobs.main import evaluate

        evaluate(config_from_args(args, models=args.models), out_dir=args.out, protocol=args.protocol,
                 attacks=args.attacks, options=plan_from_args(args), defence_options=args.defence_options,
                 data_root=args.data_root, weights=args.weights)  # fmt: skip
        if os.environ.get("RANK", "0") == "0":
            print((Path(args.out) / "results.md").read_text())

    return run_script(body, PROG, args, lock=False)  # evaluate holds --out's lock itself


def report(argv: Sequence[str]) -> int:
    """Writes the document, its chart and (unless ``--no-archive``) the records archive; prints the document."""
    from evaluations.compare_defences_records import relative, write_archive
    from evaluations.compare_defences_report import ARCHIVE, RESULTS, write_report

    p = argparse.ArgumentParser(prog=f"{PROG} report", description="the comparison's document from run folders")
    p.add_argument("--records", nargs="+", default=list(DEFAULT_RECORDS), help="run folders (absent ones are listed)")
    p.add_argument("--out-dir", default=str(RESULTS), help="where the .md and .png go")
    p.add_argument("--archive", default=str(ARCHIVE), help="the records archive written")
    p.add_argument("--no-archive", action="store_true", help="leave the archive as it is")
    args = p.parse_args(argv)
    path = write_report(args.records, out_dir=args.out_dir, archive=relative(args.archive))
    if not args.no_archive:
        present = [f for f in args.records if (Path(f) / "run.json").is_file()]
        members = write_archive(present, args.archive) if present else []
        print(f"archive: {args.archive} ({len(members)} files)", file=sys.stderr)
    print(path.read_text())
    print(f"wrote {path}", file=sys.stderr)
    return 0


def checks(argv: Sequence[str]) -> int:
    """Prints ``--records FOLDER --victims M+D,...`` for every run whose rows the >5-points rule selects and whose
    convergence ladders are not recorded (one line per folder; nothing when none is needed); with ``--budget``, for
    the selected rows whose ladders call for a full-budget re-run (:func:`~wnll_art.evaluation.ladders.budget_due`)
    not yet recorded."""
    from wnll_art.evaluation.comparison import build_rows, load_folder, selected_for_checks

    p = argparse.ArgumentParser(prog=f"{PROG} checks", description=checks.__doc__)
    p.add_argument("--records", nargs="+", default=list(DEFAULT_RECORDS))
    p.add_argument("--budget", action="store_true", help="the budget re-runs due instead of the ladders")
    args = p.parse_args(argv)
    folders = [f for f in (load_folder(r) for r in args.records) if f is not None]
    todo: dict[Path, list[str]] = {}
    for row, _ in selected_for_checks(build_rows(folders)):
        due = row.budget_steps is not None if args.budget else row.convergence is None
        if due and row.folder is not None:
            todo.setdefault(row.folder, []).append(f"{row.model}+{row.defence}")
    for folder, victims in todo.items():
        print(f"--records {folder} --victims {','.join(victims)}")
    return 0


def defences(argv: Sequence[str]) -> int:
    """Prints defences on one line, space-separated: the registered ones that run at every ``N`` (registry order)
    or, with ``--slow``, those whose ART entry is ``slow``; with ``--recorded-in FOLDER``, those FOLDER's
    ``run.json`` lists (nothing without one). ``gpu_compare.sh`` reads its lists here, so a new registry entry
    joins the comparison without an edit of the script.

    Raises:
        SystemExit: A registered name that the script could not split (blank or with a comma), or an unreadable
            ``run.json``.
    """
    from wnll_art.adapters.art_preprocessors import ART_PREPROCESSORS
    from wnll_art.evaluation.victims import PURIFIERS

    p = argparse.ArgumentParser(prog=f"{PROG} defences", description=defences.__doc__)
    p.add_argument("--slow", action="store_true", help="the slow ones (ART's TotalVarMin: hours at n = 500 on a CPU)")
    p.add_argument("--recorded-in", metavar="FOLDER", help="the defences of this run folder's run.json instead")
    args = p.parse_args(argv)
    if args.recorded_in:
        meta = Path(args.recorded_in) / "run.json"
        try:
            names = json.loads(meta.read_text())["run"]["defences"] if meta.is_file() else []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"{meta}: no run.defences list ({exc!r})")
    else:
        names = [n for n in PURIFIERS.names() if (n in ART_PREPROCESSORS and ART_PREPROCESSORS[n].slow) == args.slow]
    if bad := [n for n in names if not isinstance(n, str) or not n.strip() or "," in n or n.split()[0] != n]:
        p.error(f"defence names a script cannot split: {bad!r}")
    print(" ".join(names))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``run`` (also without a subcommand: the options alone), ``report``, ``convergence``, ``budget``, ``checks``
    or ``defences``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # run as a script: the report modules are imported as evaluations.*
        sys.path.insert(0, root)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "run"
    if command in ("convergence", "budget"):
        from evaluations.compare_defences_convergence import budget_main
        from evaluations.compare_defences_convergence import main as convergence

        return (convergence if command == "convergence" else budget_main)(argv)
    return {"run": run, "report": report, "checks": checks, "defences": defences}[command](argv)


if __name__ == "__main__":
    sys.exit(main())
