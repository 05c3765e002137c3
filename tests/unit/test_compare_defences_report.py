"""The comparison of defences' document (issue 21) on synthetic records: per-victim worst cases, the per-image
paper-vs-adaptive check, the >5-points rule choosing the rows whose masking checks are shown, "not run" lines, the
rebuilt commands and the archive."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from wnll_art.adapters.art_preprocessors import ART_PREPROCESSORS, ArtEntry
from wnll_art.evaluation.comparison import EPS_8, Row, build_rows, load_folder, selected_for_checks
from wnll_art.evaluation.records import CellRecord, RunStore
from wnll_art.evaluation.victims import PURIFIERS

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluations.compare_defences_records import command_of, extract_archive, write_archive  # noqa: E402
from evaluations.compare_defences_report import document  # noqa: E402

EPS = 0.0313725  # 8/255 as the runs write it
TVM = {"eot_samples": 2, "gradient": "bpda", "iterations": 20, "lamb": 0.03, "norm": 2, "objective": "art", "prob": 0.5}
ADAPTIVE = ["pgd_smooth_eot", "pgd_surrogate_eot", "transfer_pgd", "square"]
PAPER = ["fgsm", "ifgsm", "cw_l2"]


def _run(models: Sequence[str], defences: Sequence[str], n: int, protocol: str, plan: Sequence[str]) -> dict[str, Any]:
    run = {"coupling": "transductive", "defences": list(defences), "device": "cpu", "eps": [EPS], "kernel": "gaussian",
           "models": list(models), "n": n, "seed": 0, "start": 0, "template_size": 500, "tvm": TVM, "tvm_draws": 3,
           "wnll_batch_size": 500}  # fmt: skip
    options = {"cw_steps": 10, "eot_samples": 2, "restarts": 1, "square_queries": 100, "steps": 20}
    return {"run": run, "protocol": protocol, "options": options,
            "plan": [{"name": "clean", "source": "self"}, *({"name": a, "source": "self"} for a in plan)]}  # fmt: skip


def _folder(root: Path, protocol: str, cells: Mapping[tuple[str, str, str], Sequence[int]], *,
            plan: Sequence[str], wnll: Sequence[str] = ()) -> Path:  # fmt: skip
    """A run folder of ``cells[(model, defence, attack)] = per-image 0/1`` (clean at eps 0, attacks at 8/255)."""
    models = list(dict.fromkeys(m for m, _, _ in cells))
    defences = list(dict.fromkeys(d for _, d, _ in cells))
    n = len(next(iter(cells.values())))
    settings = _run(models, defences, n, protocol, plan)
    store = RunStore(root, settings)
    for (model, defence, attack), correct in cells.items():
        victim = {"model": model, "defence": defence, "wnll": {"k": 15} if model in wnll else None,
                  "eot_samples": 2 if defence == "tvm" else None, "purifier": None}  # fmt: skip
        store.put(CellRecord(model=model, defence=defence, attack=attack, eps=0.0 if attack == "clean" else EPS,
                             protocol=protocol, accuracy=sum(correct) / n, n=n, per_image_correct=list(correct),
                             image_indices=list(range(n)), settings={"run": settings["run"], "victim": victim}))  # fmt: skip
    return root


def _row(model: str, defence: str, robust: float, eps: float = EPS) -> Row:
    return Row(model, defence, eps, 100, 0.9, robust, {"pgd_smooth_eot": robust}, ())


def test_worst_case_is_per_image_over_clean_and_every_attack(tmp_path: Path) -> None:
    cells = {("softmax", "none", "clean"): [1, 1, 1, 1, 0], ("softmax", "none", "pgd_smooth_eot"): [1, 0, 1, 1, 1],
             ("softmax", "none", "square"): [1, 1, 0, 0, 1],
             ("wnll", "none", "clean"): [1, 1, 1, 1, 1], ("wnll", "none", "pgd_smooth_eot"): [1, 1, 1, 1, 0]}  # fmt: skip
    folder = load_folder(_folder(tmp_path / "a", "adaptive", cells, plan=ADAPTIVE, wnll=["wnll"]))
    assert folder is not None
    rows = {r.victim: r for r in build_rows([folder])}
    soft = rows["softmax + none"]
    # image 0 only: not the mean of the attacks, not the lowest attack (60%), not without clean (images 0 and 4)
    assert soft.robust == 0.2 and soft.clean == 0.8 and soft.strongest == "square"
    # transfer from softmax onto itself and the surrogate view of a softmax model are skipped, not missing
    assert soft.missing == () and soft.attacks == {"pgd_smooth_eot": 0.8, "square": 0.6}
    wnll = rows["wnll + none"]
    assert wnll.robust == 0.8 and wnll.missing == ("pgd_surrogate_eot", "transfer_pgd", "square") and wnll.wnll


def test_paper_vs_adaptive_violations_are_counted_per_image(tmp_path: Path) -> None:
    adaptive = {("softmax", "tvm", "clean"): [1, 1, 1, 1, 1, 0], ("softmax", "tvm", "pgd_smooth_eot"): [1, 1, 0, 1, 1, 1],
                ("softmax", "tvm", "square"): [1, 1, 1, 0, 1, 1]}  # fmt: skip
    paper = {("softmax", "tvm", "clean"): [1, 1, 1, 1, 1, 0], ("softmax", "tvm", "fgsm"): [0, 1, 1, 1, 1, 1],
             ("softmax", "tvm", "ifgsm"): [1, 1, 0, 1, 0, 1], ("softmax", "tvm", "cw_l2"): [1, 1, 1, 1, 1, 1]}  # fmt: skip
    folders = [load_folder(_folder(tmp_path / "a", "adaptive", adaptive, plan=["pgd_smooth_eot", "square"])),
               load_folder(_folder(tmp_path / "p", "paper", paper, plan=PAPER))]  # fmt: skip
    (row,) = build_rows([f for f in folders if f is not None])
    # adaptive worst case [1, 1, 0, 0, 1, 0], paper worst case [0, 1, 0, 1, 0, 0]: images 0 and 4 broken by the
    # paper protocol alone (image 3 the other way round is no violation); the robust number takes both: image 1 only
    assert row.robust == 1 / 6 and row.paper == 2 / 6 and row.violations == (0, 4)
    text = "\n".join(document([f for f in folders if f is not None]))
    assert "| softmax + tvm † | 83.3 | **16.7** | pgd_smooth_eot | 33.3 | 2 |" in text
    assert "| softmax + tvm | 8/255 | 2 | 50.0 | 16.7 | 0, 4 |" in text  # the adaptive plan alone, then with paper


def test_the_five_point_rule_selects_against_its_model_and_the_undefended_softmax_at_8_255_only() -> None:
    rows = [_row("softmax", "none", 0.20), _row("softmax", "jpeg", 0.26), _row("softmax", "spatial_smoothing", 0.24),
            _row("softmax", "none", 0.0, eps=0.02), _row("softmax", "tvm", 0.5, eps=0.02),
            _row("wnll", "none", 0.28), _row("wnll", "tvm", 0.30), _row("wnll", "jpeg", 0.24),
            _row("other", "tvm", 0.9)]  # fmt: skip
    chosen = selected_for_checks(rows)
    # against softmax + none (0.20) as well as its own model's none row: the WNLL head alone (+8) and WNLL + TVM (+10
    # over softmax, +2 over its own model) are defences too; wnll + jpeg is 4 over softmax and below its own model;
    # "other" has no none row of its own but softmax's; eps 0.02 is not 8/255
    assert [(r.victim, round(g, 6)) for r, g in chosen] == [("softmax + jpeg", 0.06), ("wnll + none", 0.08),
                                                            ("wnll + tvm", 0.1), ("other + tvm", 0.7)]  # fmt: skip
    assert abs(EPS - EPS_8) < 5e-5
    # without the softmax row, its own model's none row alone: WNLL + TVM's +2 does not qualify
    assert selected_for_checks([r for r in rows if r.victim != "softmax + none"]) == []


def test_adversarial_training_beating_the_undefended_softmax_gets_its_checks(tmp_path: Path) -> None:
    """The FGSM-RS network alone beats the undefended softmax by 40 points: its masking checks are asked for (its own
    no-defence row is itself, so a rule against the own model alone never selected it)."""
    cells = {("softmax", "none", "clean"): [1] * 10, ("softmax", "none", "pgd_smooth_eot"): [0] * 10,
             ("resnet56-fgsmrs", "none", "clean"): [1] * 8 + [0] * 2,
             ("resnet56-fgsmrs", "none", "pgd_smooth_eot"): [1] * 4 + [0] * 6,
             ("resnet56-fgsmrs", "none", "transfer_pgd"): [1] * 7 + [0] * 3}  # fmt: skip
    folder = load_folder(_folder(tmp_path / "a", "adaptive", cells, plan=["pgd_smooth_eot", "transfer_pgd"]))
    text = "\n".join(document([folder]))  # type: ignore[list-item]
    assert "| resnet56-fgsmrs + none | +40.0 | 40.0 | 70.0 | not recorded | convergence check not run |" in text
    assert "--victims resnet56-fgsmrs+none" in text


def test_paper_numbers_are_over_the_adaptive_rows_images(tmp_path: Path) -> None:
    """A paper run of more images gives its number over the adaptive row's images only; one that lacks some of them
    is not compared at all (accuracies of different image sets side by side)."""
    adaptive = {("softmax", "none", "clean"): [1, 1, 1, 1], ("softmax", "none", "pgd_smooth_eot"): [1, 0, 0, 0]}
    paper = {("softmax", "none", "clean"): [1] * 8, ("softmax", "none", "fgsm"): [1, 1, 0, 1, 1, 1, 1, 1],
             ("softmax", "none", "ifgsm"): [1] * 8, ("softmax", "none", "cw_l2"): [1] * 8}  # fmt: skip
    folders = [load_folder(_folder(tmp_path / "a", "adaptive", adaptive, plan=["pgd_smooth_eot"])),
               load_folder(_folder(tmp_path / "p", "paper", paper, plan=PAPER))]  # fmt: skip
    (row,) = build_rows([f for f in folders if f is not None])
    assert row.paper == 3 / 4 and row.violations == ()  # images 0-3: not 7 / 8
    other = {k: v[:2] for k, v in adaptive.items()}
    store = _folder(tmp_path / "b", "adaptive", other, plan=["pgd_smooth_eot"])
    shifted = load_folder(store)
    assert shifted is not None
    moved = [dataclasses.replace(r, image_indices=[10, 11]) for r in shifted.records]
    shifted = dataclasses.replace(shifted, records=tuple(moved))
    (row,) = build_rows([shifted, folders[1]])  # type: ignore[list-item]
    assert row.paper is None and row.violations is None


def test_the_headline_says_when_a_cited_number_is_an_upper_bound(tmp_path: Path) -> None:
    cells = {("softmax", "none", "clean"): [1, 1], ("softmax", "none", "pgd_smooth_eot"): [0, 0],
             ("softmax", "none", "square"): [0, 0],
             ("softmax", "jpeg", "clean"): [1, 1], ("softmax", "jpeg", "pgd_smooth_eot"): [1, 0]}  # fmt: skip
    folder = load_folder(_folder(tmp_path / "a", "adaptive", cells, plan=["pgd_smooth_eot", "square"]))
    head = document([folder])[2]  # type: ignore[list-item]
    assert "the most robust victim is softmax + jpeg with 50.0% (at most: 1 attack not yet run)" in head
    assert "the undefended softmax ResNet-56 keeps 0.0%;" in head


def test_the_eps_the_issue_asks_for_without_records_are_named(tmp_path: Path) -> None:
    from evaluations.compare_defences_report import headline

    cells = {("softmax", "none", "clean"): [1, 1], ("softmax", "none", "pgd_smooth_eot"): [0, 1]}
    lines = document([load_folder(_folder(tmp_path / "a", "adaptive", cells, plan=["pgd_smooth_eot"]))])  # type: ignore[list-item]
    assert lines[2].endswith("Not yet run at eps 0.02, 0.08 (see *Not run*).")
    assert [line for line in lines if line.startswith("- eps ")] == [
        f"- eps {e}: no adaptive record yet (`evaluations/gpu_compare.sh` with `EPS={e}` and a run folder of its "
        "own; `evaluations/README.md` has its CPU form)" for e in ("0.02", "0.08")]  # fmt: skip
    rows = [_row("softmax", "none", 0.0, eps) for eps in (0.02, 0.03137, 0.08)]  # 0.03137: 8/255 as rounded
    assert "Not yet run" not in headline(rows)
    rows[2] = dataclasses.replace(rows[2], robust=None)  # a row without its number does not count as run
    assert headline(rows).endswith("Not yet run at eps 0.08 (see *Not run*).")


def test_a_defence_run_at_one_eps_only_is_named_at_the_others(tmp_path: Path) -> None:
    cells = {("softmax", "none", "clean"): [1, 1], ("softmax", "none", "pgd_smooth_eot"): [0, 1],
             ("softmax", "jpeg", "clean"): [1, 1], ("softmax", "jpeg", "pgd_smooth_eot"): [1, 1]}  # fmt: skip
    eight = load_folder(_folder(tmp_path / "a", "adaptive", cells, plan=["pgd_smooth_eot"]))
    assert eight is not None
    other = {**eight.settings, "run": {**eight.settings["run"], "eps": [0.02]}}
    moved = [dataclasses.replace(r, eps=0.02 if r.eps else 0.0) for r in eight.records if r.defence == "none"]
    at_002 = dataclasses.replace(eight, path=tmp_path / "b", settings=other, records=tuple(moved))
    lines = document([eight, at_002])  # type: ignore[list-item]
    assert "- eps 0.02: no record of jpeg at this eps" in lines
    assert not any(line.startswith(("- eps 8/255", "- jpeg:")) for line in lines)
    assert "- eps 0.08: no adaptive record yet" in "\n".join(lines)


def test_selected_rows_show_transfer_square_and_convergence(tmp_path: Path) -> None:
    cells = {("softmax", "none", "clean"): [1] * 10, ("softmax", "none", "pgd_smooth_eot"): [1] + [0] * 9,
             ("softmax", "none", "square"): [1] * 2 + [0] * 8,
             ("softmax", "jpeg", "clean"): [1] * 10, ("softmax", "jpeg", "pgd_smooth_eot"): [1] * 3 + [0] * 7,
             ("softmax", "jpeg", "transfer_pgd"): [1] * 6 + [0] * 4, ("softmax", "jpeg", "square"): [1] * 5 + [0] * 5,
             ("softmax", "feature_squeezing", "clean"): [1] * 10,
             ("softmax", "feature_squeezing", "pgd_smooth_eot"): [1] + [0] * 9}  # fmt: skip
    root = _folder(tmp_path / "a", "adaptive", cells, plan=["pgd_smooth_eot", "transfer_pgd", "square"])
    folder = load_folder(root)
    assert folder is not None
    text = "\n".join(document([folder]))
    assert "| softmax + jpeg | +20.0 | 30.0 | 60.0 | 50.0 | convergence check not run |" in text
    assert f"compare_defences.py convergence --records {root} --victims softmax+jpeg " in text
    assert "softmax + feature_squeezing | +" not in text  # 0 points over no defence: no checks row
    # the ladders once run: best so far (image 2 falls at 10 steps, image 1 at 20: 1 of 4 left, not 2)
    conv = {("softmax", "jpeg", "pgd_smooth_eot__steps10"): [1, 1, 0, 1], ("softmax", "jpeg", "pgd_smooth_eot__steps20"): [1, 0, 1, 0]}
    _folder(root / "convergence", "convergence", conv, plan=[])
    text = "\n".join(document([load_folder(root)]))  # type: ignore[list-item]
    assert "pgd_smooth_eot (n=4) steps 10: 75.0, 20: 25.0" in text and "not_converged" in text
    assert "convergence check not run" not in text


def test_defences_without_records_are_listed_as_not_run(tmp_path: Path) -> None:
    cells = {("softmax", "none", "clean"): [1, 1], ("softmax", "tvm", "clean"): [1, 0]}
    folder = load_folder(_folder(tmp_path / "a", "adaptive", cells, plan=["pgd_smooth_eot"]))
    lines = document([folder], absent=["evaluations/results/x/defences_paper"])  # type: ignore[list-item]
    not_run = {line.split(":")[0][2:] for line in lines if line.endswith("not run (no record of it in any folder)")}
    assert not_run == set(ART_PREPROCESSORS) and "none" not in not_run and "tvm" not in not_run
    assert "- folder evaluations/results/x/defences_paper: absent (no run.json)" in lines
    assert any(line.startswith("| FGSM-RS + WNLL head + TVM | fgsmrs-wnll + tvm | 8/255 | not run") for line in lines)
    assert any("2 cells not yet recorded" in line for line in lines)  # pgd_smooth_eot of both victims


def test_one_more_art_preprocessor_is_one_registry_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = ArtEntry("SpatialSmoothing", {"window_size": 5}, "BPDA", citation="A. Author, Venue 2099")
    monkeypatch.setitem(ART_PREPROCESSORS, "median5", entry)  # the entry, and what importing victims.py does with it
    monkeypatch.setitem(PURIFIERS._items, "median5", lambda cfg, **o: None)
    cells = {("softmax", "none", "clean"): [1, 1], ("softmax", "none", "pgd_smooth_eot"): [0, 1]}
    lines = document([load_folder(_folder(tmp_path / "a", "adaptive", cells, plan=["pgd_smooth_eot"]))])  # type: ignore[list-item]
    assert "- median5: not run (no record of it in any folder)" in lines
    assert "| median5 | ART `SpatialSmoothing` | window_size=5 | A. Author, Venue 2099 |" in lines
    cells[("softmax", "median5", "clean")], cells[("softmax", "median5", "pgd_smooth_eot")] = [1, 1], [1, 1]
    lines = document([load_folder(_folder(tmp_path / "b", "adaptive", cells, plan=["pgd_smooth_eot"]))])  # type: ignore[list-item]
    assert "| softmax + median5 | 100.0 | **100.0** | pgd_smooth_eot | - | - | clear |" in lines
    assert not any(line.startswith("- median5: not run") for line in lines)


def test_the_rebuilt_command_makes_the_recorded_settings() -> None:
    from wnll_art.cli import _parser
    from wnll_art.evaluation.parser import config_from_args, plan_from_args

    settings = _run(["softmax", "wnll"], ["none", "jpeg"], 100, "adaptive", ["pgd_smooth_eot", "square"])
    settings["run"]["tvm_draws"], settings["options"]["steps"] = 5, 7
    line = command_of(settings, "evaluations/results/x")
    words = line.split()
    assert words[:2] == ["WNLL_ART_DATA=../shared/data", "wnll-art"]
    args = _parser().parse_args(words[2:])
    assert json.loads(json.dumps(config_from_args(args, models=args.models).to_dict())) == settings["run"]
    assert plan_from_args(args).to_dict() == settings["options"] and args.protocol == "adaptive"
    assert list(args.attacks) == ["pgd_smooth_eot", "square"]  # not the default plan: named
    settings["plan"] = [{"name": "clean", "source": "self"}] + [{"name": a} for a in
                        ["pgd_smooth_eot", "pgd_surrogate_eot", "apgd_ce_smooth_eot", "apgd_ce_surrogate_eot",
                         "apgd_dlr_smooth_eot", "apgd_dlr_surrogate_eot", "transfer_pgd", "square"]]  # fmt: skip
    settings["options"]["steps"] = 20
    assert "--attacks" not in command_of(settings, "x")  # the default plan: the command leaves it to the default


def test_the_archive_is_deterministic_and_reads_back(tmp_path: Path) -> None:
    cells = {("softmax", "none", "clean"): [1, 0], ("softmax", "none", "pgd_smooth_eot"): [0, 0]}
    root = _folder(tmp_path / "evaluations" / "results" / "cmp" / "a", "adaptive", cells, plan=["pgd_smooth_eot"])
    first = write_archive([root], tmp_path / "one.tgz")
    for p in (root / "cells").glob("*.json"):  # a later copy of the same records: other mtimes
        p.write_bytes(p.read_bytes())
    write_archive([root], tmp_path / "two.tgz")
    assert (tmp_path / "one.tgz").read_bytes() == (tmp_path / "two.tgz").read_bytes()
    assert first == sorted(first) and first[0] == "evaluations/results/cmp/a/cells/adaptive__softmax__none__clean__eps0.0000.json"
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "one.tgz").read_bytes())) as tar:
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())
    (found,) = extract_archive(tmp_path / "one.tgz", tmp_path / "out")
    folder = load_folder(found)
    assert folder is not None and json.loads((found / "run.json").read_text())["protocol"] == "adaptive"
    assert [r.victim for r in build_rows([folder])] == ["softmax + none"] and build_rows([folder])[0].robust == 0.0


def test_the_script_runs_the_adaptive_default_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wnll_art.evaluation.jobs.main as job
    from evaluations.compare_defences import main
    from wnll_art.evaluation.protocols import PlanOptions, plan

    seen: dict[str, Any] = {}

    def evaluate(cfg: Any, *, out_dir: str, protocol: str, attacks: Any, **kwargs: Any) -> None:
        seen.update(protocol=protocol, attacks=attacks)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "results.md").write_text("table")

    monkeypatch.setattr(job, "evaluate", evaluate)
    assert main(["--out", str(tmp_path / "run")]) == 0
    assert seen == {"protocol": "adaptive", "attacks": None}  # None: the protocol's default plan, below
    names = [s.name for s in plan("adaptive", PlanOptions(), None)[1:]]
    assert {"pgd_smooth_eot", "apgd_dlr_surrogate_eot", "transfer_pgd", "square"} <= set(names)
    assert not {"fgsm_exact_eot", "ifgsm_exact_eot", "transfer_ifgsm"} & set(names)
    assert main(["run", "--attacks", "square", "--out", str(tmp_path / "two")]) == 0 and seen["attacks"] == ("square",)


def test_a_defence_that_costs_its_clean_accuracy_is_named_with_both_numbers() -> None:
    """The clean-cost note: a defence more than 20 points below its model's undefended clean accuracy is listed with
    both accuracies; one 20 points or less below is not."""
    from evaluations.compare_defences_report import _clean_cost

    def row(defence: str, clean: float, robust: float, eps: float = EPS) -> Row:
        return Row(model="softmax", defence=defence, eps=eps, n=100, clean=clean, robust=robust, attacks={}, missing=())

    lines = _clean_cost([row("none", 0.96, 0.0), row("art_tvm", 0.23, 0.15), row("jpeg", 0.80, 0.0)])
    costly = [line for line in lines if "undefended" in line]
    assert len(costly) == 1 and "softmax + art_tvm" in costly[0] and "23.0%" in costly[0] and "96.0%" in costly[0]
    assert any("art_tvm clean 23.0%" in line for line in lines)  # the TotalVarMin note with its measured clean
    assert _clean_cost([row("none", 0.96, 0.0), row("jpeg", 0.80, 0.0)]) == []
    # recorded at two eps, a victim's clean accuracy is named once in the TotalVarMin note
    two = _clean_cost([row("art_tvm", 0.23, 0.15), row("art_tvm", 0.23, 0.05, eps=0.08)])
    assert len(two) == 4 and two[2].count("softmax + art_tvm clean 23.0%") == 1


def test_a_ladder_falling_past_the_plans_steps_calls_for_a_full_budget_rerun() -> None:
    from wnll_art.evaluation.ladders import Convergence, budget_due

    def ladder(steps: dict[int, float], unbounded: tuple[float, float] | None = (0.3, 0.0)) -> Convergence:
        return Convergence("pgd_smooth_eot", EPS, 20, steps, {}, unbounded, ())

    assert budget_due(ladder({10: 0.25, 20: 0.2, 50: 0.2, 100: 0.0}), 20) == 100  # falls only after 50
    assert budget_due(ladder({10: 0.25, 20: 0.2, 50: 0.15, 100: 0.15}), 20) == 100  # levels off, below 20's
    assert budget_due(ladder({10: 0.25, 20: 0.2, 50: 0.2, 100: 0.2}), 20) is None  # flat past the plan's 20
    assert budget_due(ladder({10: 0.25, 20: 0.2, 50: 0.19, 100: 0.19}), 20) is None  # one point: tolerated
    assert budget_due(ladder({10: 0.25, 20: 0.2, 50: 0.1}), 50) is None  # the plan is at the ladder's top
    assert budget_due(ladder({10: 0.25, 20: 0.2, 50: 0.1}), 30) == 50  # read from the rung at or below 30
    assert budget_due(ladder({50: 0.3, 100: 0.1}), 20) is None and budget_due(None, 20) is None  # nothing to read
    # stopped after its 50-step rung (the unbounded check, run last, not recorded): unfinished, nothing due yet
    assert budget_due(ladder({10: 0.3, 20: 0.25, 50: 0.1}, unbounded=None), 20) is None


def test_the_full_budget_rerun_is_asked_for_then_joins_the_worst_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """softmax + jpeg beats no defence by 20 points; its ladder (best so far) falls from 75 % at the plan's 20 steps
    to 25 % at 100:
    the document and ``checks --budget`` ask for the re-run; once recorded (a budget cell over all 10 images), it
    breaks images 1 and 2, which the plan's attacks left, and the row's robust number, strongest attack and
    archive take it in."""
    from evaluations.compare_defences import main

    cells = {("softmax", "none", "clean"): [1] * 10, ("softmax", "none", "pgd_smooth_eot"): [1] + [0] * 9,
             ("softmax", "jpeg", "clean"): [1] * 10, ("softmax", "jpeg", "pgd_smooth_eot"): [1] * 3 + [0] * 7}  # fmt: skip
    root = _folder(tmp_path / "evaluations" / "results" / "cmp" / "a", "adaptive", cells, plan=["pgd_smooth_eot"])
    conv = {("softmax", "jpeg", f"pgd_smooth_eot__steps{k}"): c
            for k, c in ((10, [1, 1, 1, 1]), (20, [1, 0, 1, 1]), (50, [1, 1, 1, 0]), (100, [0, 1, 1, 1]))}  # fmt: skip
    _folder(root / "convergence", "convergence", conv, plan=[])
    assert "calls for a re-run" not in "\n".join(document([load_folder(root)]))  # type: ignore[list-item]
    conv[("softmax", "jpeg", "pgd_smooth_eot__unbounded")] = [0, 0, 0, 0]  # the ladder finished
    _folder(root / "convergence", "convergence", conv, plan=[])
    text = "\n".join(document([load_folder(root)]))  # type: ignore[list-item]
    assert "the ladder calls for a re-run at 100 steps on all 10 images: not run yet" in text
    assert "compare_defences.py budget --records evaluations/results/cmp/a --victims softmax+jpeg " in text
    assert main(["checks", "--budget", "--records", str(root)]) == 0
    assert capsys.readouterr().out.split() == ["--records", str(root), "--victims", "softmax+jpeg"]

    _folder(root / "budget", "budget", {("softmax", "jpeg", "pgd_smooth_eot__steps100"): [1] + [0] * 9}, plan=[])
    folder = load_folder(root)
    assert folder is not None and folder.budget[0].protocol == "budget"
    row = next(r for r in build_rows([folder]) if r.defence == "jpeg")
    assert row.robust == 0.1 and row.strongest == "pgd_smooth_eot__steps100" and row.budget_steps is None
    assert row.missing == ()  # not a plan attack: nothing reported missing
    text = "\n".join(document([folder]))
    # shown still, though the re-run leaves it 0 points above no defence: the rule selected it by the plan's 30 %
    assert "| softmax + jpeg | +0.0 | 10.0 | not recorded | not recorded | pgd_smooth_eot (n=4)" in text
    assert "on all 10 images, pgd_smooth_eot alone: 20 steps 30.0, 100 steps 10.0 (the re-runs are in the worst case)" in text
    assert "To run the full-budget re-runs" not in text  # no longer asked for
    assert ("compare_defences.py budget --records evaluations/results/cmp/a --victims softmax+jpeg --weights "
            "../shared/weights/resnet56-4bfd9763.th --steps 100") in text  # how it was made
    assert main(["checks", "--budget", "--records", str(root)]) == 0 and capsys.readouterr().out == ""
    members = write_archive([root], tmp_path / "r.tgz")
    assert any("/a/budget/cells/budget__softmax__jpeg__pgd_smooth_eot__steps100__" in m for m in members)
    (back,) = extract_archive(tmp_path / "r.tgz", tmp_path / "out")  # the budget run is left to its parent
    assert back.name == "a"


def test_victims_run_at_one_eps_and_not_yet_at_another_are_named(tmp_path: Path) -> None:
    """A run started at 0.08 for the FGSM-RS model only: the victims recorded at 8/255 and not at 0.08 are named in the
    headline (their count) and in *Not run* (by name), though their defence has a row at 0.08."""
    from evaluations.compare_defences_report import headline

    rows = [_row("softmax", "none", 0.0), _row("softmax", "tvm", 0.01), _row("resnet56-fgsmrs", "none", 0.3),
            _row("resnet56-fgsmrs", "none", 0.05, eps=0.08)]  # fmt: skip
    from evaluations.compare_defences_report import _not_run

    assert "At eps 0.08, 2 victims are not yet run" in headline(rows)
    assert "- eps 0.08: no number yet for softmax + none, softmax + tvm (recorded at another eps)" in _not_run(rows, [], [])
    cells = {("softmax", "none", "clean"): [1, 1], ("softmax", "none", "pgd_smooth_eot"): [0, 1]}
    lines = document([load_folder(_folder(tmp_path / "a", "adaptive", cells, plan=["pgd_smooth_eot"]))])  # type: ignore[list-item]
    assert not any("no number yet" in line for line in lines)  # one eps only: nothing recorded elsewhere
    text = "\n".join(lines)
    assert "Not yet run at eps 0.02, 0.08" in text
