"""The comparison of defences (WNLL + TVM beside ART's defences and adversarial training) read back from the records
of ``wnll-art evaluate`` runs: one row per victim (model + defence) and eps, each a per-image worst case.

A row's **adaptive** number is the per-image minimum over its clean record and every adaptive attack of its run's
plan (:func:`~wnll_art.evaluation.records.per_image_minimum`); a randomised victim's records already hold the K-draw
rule (an image counts only if K independent draws classify it correctly). Its **paper** number is the same minimum
over the ``paper`` protocol's records of the same victim, and its **violations** are the images the paper protocol
broke but the adaptive plan did not (the adaptive number must be at most the paper one, image by image). A defence
that beats its model's no-defence row by more than :data:`RULE` at 8/255 has its transfer, gradient-free and
convergence numbers shown (the convergence ladders are read from ``<run>/convergence/cells``, written by
``evaluations/compare_defences.py convergence``; absent, the row says so). Where a ladder shows the plan's step
count fell short (:func:`~wnll_art.evaluation.ladders.budget_due`), the attack re-run at the ladder's top budget on
every image (``<run>/budget/cells``, ``compare_defences.py budget``) joins the row's worst case.

Folders may be incomplete (a run in progress) or absent: every row lists the attacks it still lacks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from wnll_art.evaluation.ladders import Convergence, budget_due, convergence_of
from wnll_art.evaluation.protocols import SPECS, registry_flags
from wnll_art.evaluation.records import CellRecord, RecordError, load_record, per_image_minimum

__all__ = ["EPS_8", "RULE", "UNDEFENDED", "Convergence", "Row", "RunFolder", "build_rows", "convergence_of", "is_adversarial",
           "load_folder", "missing_defences", "references", "same_eps", "selected_for_checks"]  # fmt: skip

EPS_8 = 8 / 255  # the eps of the issue's >5-points rule (records write it as 0.0313725)
UNDEFENDED = "softmax"  # the model whose no-defence row is the comparison's "no defence"
RULE = 0.05  # a defence beating no defence by more than this (5 points) at 8/255 gets its masking checks shown
_EPS_TOLERANCE = 5e-5


def same_eps(a: float, b: float) -> bool:
    """Whether two eps are the same as the records write them (8/255 is ``0.0313725`` there)."""
    return abs(a - b) < _EPS_TOLERANCE


def is_eps_8(eps: float) -> bool:
    """Whether ``eps`` is 8/255 as the records write it (``0.0313725``)."""
    return same_eps(eps, EPS_8)


@dataclass(frozen=True)
class RunFolder:
    """One results folder of ``wnll-art evaluate``: its ``run.json``, its cells, its convergence and budget cells.

    Attributes:
        path: The folder.
        settings: ``run.json``.
        records: The valid records of ``cells/``.
        convergence: The valid records of ``convergence/cells/`` (protocol ``"convergence"``).
        problems: Cell files left out (invalid), one line each.
        budget: The valid records of ``budget/cells/`` (protocol ``"budget"``: attacks re-run at a larger step
            count on every image of the run).
    """

    path: Path
    settings: dict[str, Any]
    records: tuple[CellRecord, ...]
    convergence: tuple[CellRecord, ...] = ()
    problems: tuple[str, ...] = ()
    budget: tuple[CellRecord, ...] = ()

    def attack_steps(self, model: str, defence: str, attack: str | None) -> int:
        """The steps ``attack`` had on the victim in this run (its record's spec; else, or for ``None``, the plan's
        ``options.steps``, 20 if unrecorded): what a convergence ladder of it is read against."""
        for r in self.records if attack is not None else ():
            if (r.model, r.defence, r.attack) == (model, defence, attack):
                steps = (r.settings.get("spec", {}).get("attack") or {}).get("steps")
                if isinstance(steps, int):
                    return steps
        return int(self.settings.get("options", {}).get("steps", 20))

    @property
    def protocol(self) -> str:
        return str(self.settings.get("protocol", ""))

    @property
    def plan(self) -> list[str]:
        """The plan's attack names, clean left out."""
        return [s["name"] for s in self.settings.get("plan", []) if s["name"] != "clean"]

    @property
    def victims(self) -> list[tuple[str, str]]:
        """``(model, defence)`` of the run, in its order."""
        run = self.settings.get("run", {})
        return [(m, d) for m in run.get("models", []) for d in run.get("defences", [])]

    def expected(self, model: str, defence: str) -> list[str]:
        """The plan's attacks this victim gets (the registry's ``skip`` rules applied; see :func:`_skipped`)."""
        return [a for a in self.plan if not _skipped(self.protocol, a, model, defence, self._wnll(model))]

    def missing(self) -> list[str]:
        """``model+defence/attack@eps`` of every cell the run asks for and has not written yet."""
        have = {(r.model, r.defence, r.attack, r.eps) for r in self.records}
        eps_values = self.settings.get("run", {}).get("eps", [])
        out = []
        for model, defence in self.victims:
            wanted = [("clean", 0.0)] + [(a, e) for a in self.expected(model, defence) for e in eps_values]
            out += [f"{model}+{defence}/{a}@{e:g}" for a, e in wanted if (model, defence, a, e) not in have]
        return out

    def _wnll(self, model: str) -> bool:
        """Whether ``model``'s classifier is a WNLL one: as its records say, else as its registry entry says."""
        found = [r.settings.get("victim", {}) for r in self.records if r.model == model]
        return found[0].get("wnll") is not None if found else _wnll_by_name(model)


def _wnll_by_name(model: str) -> bool:
    """Whether the model label names a WNLL classifier (:data:`~wnll_art.evaluation.victims.MODELS` or the zoo)."""
    from wnll_art.evaluation.victims import resolve_model
    from wnll_art.zoo_trained import trained_models

    try:
        ref = resolve_model(model)
    except ValueError:
        return False
    entry = trained_models().get(ref.name)
    return ref.head == "wnll" if ref.head is not None else entry is not None and entry.output == "wnll"


def _skipped(protocol: str, attack: str, model: str, defence: str, wnll: bool) -> bool:
    """Whether the registry's ``skip`` rule leaves ``attack`` out on the victim (asked of a stand-in victim that
    holds the model and defence names and whether the classifier is a WNLL one)."""
    key = f"{protocol}:{attack}"
    entry = SPECS[key] if key in SPECS else None  # noqa: SIM401 - a Registry has no get()
    if entry is None or entry.skip is None:
        return False
    stand_in = SimpleNamespace(model=model, defence=defence, module=SimpleNamespace(wnll=object() if wnll else None))
    try:
        return bool(entry.skip(stand_in))  # type: ignore[arg-type]
    except AttributeError:  # a rule reading more of the victim than a record tells: the cell is expected
        return False


def _valid_records(cells: Path, run: Mapping[str, Any] | None) -> tuple[list[CellRecord], list[str]]:
    """The valid records under ``cells`` and one line per invalid file (nothing is moved)."""
    records, problems = [], []
    for p in sorted(cells.glob("*.json")) if cells.is_dir() else []:
        try:
            records.append(load_record(p, run))
        except RecordError as exc:
            problems.append(str(exc))
    return records, problems


def load_folder(path: str | os.PathLike[str]) -> RunFolder | None:
    """The run in ``path`` (``None`` when it has no ``run.json``: absent or not started)."""
    root = Path(path)
    meta = root / "run.json"
    if not meta.is_file():
        return None
    settings = json.loads(meta.read_text())
    records, problems = _valid_records(root / "cells", settings)
    extra: dict[str, list[CellRecord]] = {}
    for sub in ("convergence", "budget"):
        sub_meta = root / sub / "run.json"
        sub_run = json.loads(sub_meta.read_text()) if sub_meta.is_file() else None
        extra[sub], sub_problems = _valid_records(root / sub / "cells", sub_run)
        problems += sub_problems
    return RunFolder(root, settings, tuple(records), tuple(extra["convergence"]), tuple(problems),
                     tuple(extra["budget"]))  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One victim at one eps: its adaptive worst case, its paper worst case and their per-image comparison.

    Attributes:
        model: Model label.
        defence: Defence name.
        eps: L-inf radius.
        n: Images.
        clean: Clean accuracy (``None``: no clean record yet).
        robust: Adaptive worst case over clean, every adaptive attack recorded and every full-budget re-run of the
            run's ``budget/`` folder, and over the paper attacks where a paper run covers the row's images (so it is
            at most the paper number, image by image, as :func:`~wnll_art.evaluation.protocols.adaptive_minimum`
            makes the defence table's; ``None``: no attack yet).
        attacks: ``{adaptive attack: accuracy}`` of the attacks recorded, then the re-runs (``<attack>__steps<k>``).
        missing: The plan's adaptive attacks not yet recorded for this victim and eps.
        paper: Paper-protocol worst case over clean and the paper attacks (``None``: no paper records).
        paper_missing: The paper plan's attacks not yet recorded.
        violations: Test-image indices the paper protocol broke and the adaptive plan did not (``None``: no
            paper records to compare with).
        flags: Flag lines of the components and of the registry's masking checks among them.
        wnll: The classifier is a WNLL one.
        randomised: The defence draws (its records keep the K-draw rule, ``tvm_draws`` draws).
        tvm_draws: K of the K-draw rule (1 for a deterministic victim).
        convergence: The convergence ladders, if run.
        folder: The adaptive run's folder.
        plan_steps: Steps the laddered attack had in the run's plan (what its ladder is read against).
    """

    model: str
    defence: str
    eps: float
    n: int
    clean: float | None
    robust: float | None
    attacks: dict[str, float]
    missing: tuple[str, ...]
    paper: float | None = None
    paper_missing: tuple[str, ...] = ()
    violations: tuple[int, ...] | None = None
    flags: tuple[str, ...] = ()
    wnll: bool = False
    randomised: bool = False
    tvm_draws: int = 1
    convergence: Convergence | None = None
    folder: Path | None = field(default=None, compare=False)
    plan_steps: int = 20

    @property
    def victim(self) -> str:
        return f"{self.model} + {self.defence}"

    @property
    def reruns(self) -> dict[str, float]:
        """``{<attack>__steps<k>: accuracy}`` of the full-budget re-runs in the row's worst case."""
        return {a: acc for a, acc in self.attacks.items() if "__steps" in a}

    @property
    def budget_steps(self) -> int | None:
        """Steps of the full-budget re-run the ladders call for (:func:`~wnll_art.evaluation.ladders.budget_due`)
        and this row does not hold yet (``None``: none is due, or it is recorded)."""
        c = self.convergence
        k = budget_due(c, self.plan_steps) if c is not None and c.eps == self.eps else None
        return None if k is None or c is None or f"{c.attack}__steps{k}" in self.attacks else k

    @property
    def strongest(self) -> str | None:
        """The single attack with the lowest accuracy (first in plan order on a tie)."""
        return min(self.attacks, key=self.attacks.__getitem__) if self.attacks else None


def _worst(folder: RunFolder, model: str, defence: str, eps: float) -> tuple[CellRecord | None, dict[str, float], list[str]]:
    """The per-image worst case of one victim at ``eps`` in ``folder``: (record or ``None``, the components'
    accuracies in plan order then the budget re-runs', the plan's attacks still missing)."""
    mine = {(r.attack, r.eps): r for r in folder.records if (r.model, r.defence) == (model, defence)}
    expected = folder.expected(model, defence)
    attacks = [mine[a, eps] for a in expected if (a, eps) in mine]
    missing = [a for a in expected if (a, eps) not in mine]
    if not attacks:
        return None, {}, missing
    attacks += [r for r in folder.budget if (r.model, r.defence, r.eps) == (model, defence, eps)
                and r.image_indices == attacks[0].image_indices]  # fmt: skip
    parts = ([mine["clean", 0.0]] if ("clean", 0.0) in mine else []) + attacks
    (worst,) = per_image_minimum(parts, attack="worst_case", protocol=folder.protocol, include_clean=True)
    return worst, {r.attack: r.accuracy for r in attacks}, missing


def _violations(adaptive: CellRecord, paper: CellRecord) -> tuple[int, ...]:
    """Image indices correct under the adaptive worst case but not under the paper one."""
    ada = dict(zip(adaptive.image_indices, adaptive.per_image_correct, strict=True))
    return tuple(i for i, c in zip(paper.image_indices, paper.per_image_correct, strict=True)
                 if c == 0 and ada.get(i) == 1)  # fmt: skip


def _flags(folder: RunFolder, model: str, defence: str, eps: float) -> tuple[str, ...]:
    """The stored flags of the victim's cells at ``eps`` (and clean) and the registry's masking checks among the
    folder's records (a run still in progress has not attached them yet)."""
    mine = [r for r in folder.records if (r.model, r.defence) == (model, defence) and r.eps in (0.0, eps)]
    checks = registry_flags(folder.records)
    return tuple(sorted({f for r in mine for f in (*r.flags, *checks.get(r.key, []))}))


def _paper_columns(
    paper: Sequence[RunFolder], model: str, defence: str, eps: float, worst: CellRecord | None,
    images: Sequence[int] | None,
) -> tuple[float | None, tuple[str, ...], tuple[int, ...] | None]:
    """(paper worst case, paper attacks missing, violations) from the first paper run holding the victim at ``eps``
    on every one of the adaptive row's ``images``; its number is over those images alone (a paper run of other or
    more images would compare accuracies of different image sets)."""
    for p in paper:
        if (model, defence) in p.victims and eps in p.settings.get("run", {}).get("eps", []):
            found, _, missing = _worst(p, model, defence, eps)
            if found is None:
                return None, tuple(missing), None
            correct = dict(zip(found.image_indices, found.per_image_correct, strict=True))
            if images is not None and not set(images) <= set(correct):
                continue  # not the adaptive row's images
            shared = list(images) if images is not None else list(correct)
            accuracy = sum(correct[i] for i in shared) / len(shared) if shared else None
            return accuracy, tuple(missing), (_violations(worst, found) if worst else None)
    return None, (), None


def _row(folder: RunFolder, model: str, defence: str, eps: float, paper: Sequence[RunFolder]) -> Row:
    """One :class:`Row` of ``folder`` (an adaptive run), compared with the first paper run holding the victim."""
    worst, attacks, missing = _worst(folder, model, defence, eps)
    clean = next((r for r in folder.records if (r.model, r.defence, r.attack) == (model, defence, "clean")), None)
    first = clean or worst
    victim: dict[str, Any] = first.settings.get("victim", {}) if first is not None else {}
    # a Defence records EOT samples only when it draws; a victim with no record yet: its registry entry says
    randomised = victim.get("eot_samples") is not None if victim else _draws(defence)
    wnll = victim.get("wnll") is not None if victim else folder._wnll(model)
    paper_acc, paper_missing, violations = _paper_columns(paper, model, defence, eps, worst,
                                                          first.image_indices if first else None)  # fmt: skip
    robust = worst.accuracy if worst else None
    conv = convergence_of(folder.convergence, model, defence)
    if worst is not None and violations:  # as the defence table: adaptive <= paper per image
        robust = (sum(worst.per_image_correct) - len(violations)) / len(worst.image_indices)
    return Row(model, defence, eps, folder.settings["run"]["n"], clean.accuracy if clean else None,
               robust, attacks, tuple(missing), paper_acc, paper_missing, violations,
               flags=_flags(folder, model, defence, eps), wnll=wnll, randomised=randomised,
               tvm_draws=int(folder.settings["run"].get("tvm_draws", 1)) if randomised else 1,
               convergence=conv, folder=folder.path, plan_steps=folder.attack_steps(model, defence, conv.attack if conv else None))  # fmt: skip


def _draws(defence: str) -> bool:
    """Whether a defence draws, by its registry entry (our TVM does; an ART entry says)."""
    from wnll_art.adapters.art_preprocessors import ART_PREPROCESSORS

    return defence == "tvm" or (defence in ART_PREPROCESSORS and ART_PREPROCESSORS[defence].randomised)


def build_rows(folders: Sequence[RunFolder]) -> list[Row]:
    """One :class:`Row` per victim and eps of every adaptive run (the first run holding a victim wins), in the
    runs' order; paper runs give the paper columns."""
    paper = [f for f in folders if f.protocol == "paper"]
    rows, seen = [], set()
    for folder in (f for f in folders if f.protocol == "adaptive"):
        for model, defence in folder.victims:
            for eps in folder.settings["run"]["eps"]:
                if (model, defence, eps) not in seen:
                    seen.add((model, defence, eps))
                    rows.append(_row(folder, model, defence, eps, paper))
    return rows


def references(rows: Sequence[Row], row: Row) -> list[Row]:
    """The no-defence rows ``row`` is measured against at its eps: its own model's (``model + none``) and the
    undefended softmax ResNet-56's (:data:`UNDEFENDED`, the comparison's "no defence"), those recorded, itself left
    out. The second makes the WNLL head and adversarial training defences too: a ``resnet56-fgsmrs + none`` or a
    WNLL model's row that beats the plain softmax by more than the rule needs its masking checks as much as an ART
    preprocessor does."""
    wanted = {(row.model, "none"), (UNDEFENDED, "none")} - {(row.model, row.defence)}
    return [r for r in rows if (r.model, r.defence) in wanted and r.eps == row.eps and r.robust is not None]


def selected_for_checks(rows: Sequence[Row], *, rule: float = RULE) -> list[tuple[Row, float]]:
    """The rows at 8/255 whose adaptive number beats a no-defence row (:func:`references`) by more than ``rule``,
    with the largest such gain (a fraction); also those with a full-budget re-run recorded, whatever their gain now
    (``budget`` is asked for selected rows only, so such a row was selected before its re-run; one re-run by hand
    on another row is listed too, its checks beside it)."""
    out = []
    for r in rows:
        if not is_eps_8(r.eps) or r.robust is None or (r.model, r.defence) == (UNDEFENDED, "none"):
            continue
        gains = [r.robust - ref.robust for ref in references(rows, r) if ref.robust is not None]
        if gains and (max(gains) > rule or r.reruns):
            out.append((r, max(gains)))
    return out


def missing_defences(rows: Sequence[Row], registered: Iterable[str], *, eps: float | None = None) -> list[str]:
    """The registered defences no row holds (``"not run"`` in the document); with ``eps``, no row at that eps."""
    have = {r.defence for r in rows if (r.robust is not None or r.clean is not None)
            and (eps is None or same_eps(r.eps, eps))}  # fmt: skip
    return [d for d in registered if d not in have]


def is_adversarial(model: str) -> bool:
    """Whether ``model`` is an adversarially trained network of our zoo (family ``"adversarial"``), through any
    head."""
    from wnll_art.evaluation.victims import resolve_model
    from wnll_art.zoo_trained import trained_models

    try:
        entry = trained_models().get(resolve_model(model).name)
    except ValueError:
        return False
    return entry is not None and entry.family == "adversarial"
