"""The paper's tables: Table 2 (robust accuracy, paper vs adaptive protocol) and Table 1 (transfer).

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018), Tables 1 and 2. The adaptive protocol follows A. Athalye, N. Carlini,
D. Wagner (ICML 2018) and F. Tramer et al. (NeurIPS 2020); see :mod:`wnll_art.evaluation.protocols`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from wnll_art.evaluation.checks import eps_monotonicity_flags, run_convergence, stronger_flags
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import (
    AttackSpec,
    Batches,
    Dist,
    adversarial,
    cell_key,
    derive_seed,
    draw_extra,
    predict_correct,
    run_cells,
)
from wnll_art.evaluation.protocols import (
    ADAPTIVE_DEFAULT,
    ALL,
    CLEAN,
    FAMILIES,
    adaptive_minimum,
    adaptive_specs,
    paper_specs,
    select_specs,
    specs_for_victim,
)
from wnll_art.evaluation.records import CellRecord, RunStore
from wnll_art.evaluation.report import (
    attach_flags,
    flag_section,
    headline,
    markdown_table,
    merge_flags,
    pct,
    write_plots,
    write_text,
)
from wnll_art.evaluation.setup import (
    check_tvm,
    load_batches,
    load_victims,
    open_run,
    open_store,
    run_settings,
    victim_flags,
)
from wnll_art.evaluation.victims import Victim
from wnll_art.zoo import load_pretrained, sha256_file

__all__ = ["ProtocolRecords", "defense_table", "transfer_table"]

OnCell = Callable[[CellRecord], None] | None


@dataclass
class ProtocolRecords:
    """The records of one training-data variant: paper protocol, adaptive attacks, adaptive minima."""

    paper: list[CellRecord]
    adaptive_attacks: list[CellRecord]
    adaptive: list[CellRecord]


def _training_data(
    checkpoints: Mapping[str, os.PathLike[str] | str],
) -> list[tuple[str, Path | None, dict[str, Any]]]:
    out: list[tuple[str, Path | None, dict[str, Any]]] = [("original", None, {"weights": "zoo:resnet56"})]
    for name, path in checkpoints.items():
        p = Path(path)
        out.append((name, p, {"weights": str(p.resolve()), "sha256": sha256_file(p)}))
    return out


def defense_table(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    checkpoints: Mapping[str, str | os.PathLike[str]] | None = None,
    steps: int = 20,
    paper_cw_steps: int = 10,
    adaptive_attacks: Sequence[str] | None = None,
    on_cell: OnCell = None,
    restarts: int = 1,
    square_queries: int = 100,
    convergence: Convergence | None = None,
) -> dict[str, ProtocolRecords]:
    """The paper's Table 2 in the paper protocol and the adaptive protocol, side by side.

    For each training-data variant ("original": the zoo ResNet-56; plus every ``checkpoints`` entry, a
    ResNet-56 state dict trained on other data), softmax and WNLL (template ``cfg.template_size``, WNLL batch
    ``cfg.wnll_batch_size``) with each defence of ``cfg.defences`` are attacked by FGSM, IFGSM and C&W-L2 at
    each ``cfg.eps`` under :func:`~wnll_art.evaluation.protocols.paper_specs`, then by
    :func:`~wnll_art.evaluation.protocols.adaptive_specs`; the adaptive number of a family is the per-image
    minimum over clean accuracy, its paper attack and every adaptive attack.

    Writes ``out_dir/<training data>/`` (a :class:`RunStore`: ``run.json``, ``cells/*.json`` for protocols
    ``paper`` and ``adaptive``, ``accuracy_vs_eps__*.png``) and ``out_dir/defense_table.md``. Resumable and
    shardable over ``torchrun`` processes like ``wnll-art evaluate``.

    Args:
        cfg: Images, eps, defences, WNLL, TVM, EOT and C&W (adaptive) settings; ``cfg.attacks`` is unused.
        out_dir: Results directory.
        data_root: CIFAR-10 root.
        weights: The zoo ResNet-56 file (``None``: the torch hub cache).
        checkpoints: ``{name: path}`` of ResNet-56 state dicts trained on other data (loaded without the
            zoo's hash check). The paper also trains on TVM images; give such checkpoints here.
        steps: Iterations of the adaptive iterative attacks (PGD, IFGSM, APGD).
        paper_cw_steps: C&W steps in the paper protocol (the authors' code: 10).
        adaptive_attacks: Adaptive attack names (default: :data:`~wnll_art.evaluation.protocols.ADAPTIVE_DEFAULT`).
        on_cell: Called with each finished record.
        restarts: Random starts of PGD and APGD.
        square_queries: Iterations of the Square attack.
        convergence: The convergence checks run per victim on its strongest attack (default:
            :class:`Convergence`'s; ``Convergence(steps=())`` skips them). Their curves go into every adaptive
            minimum's ``extra["convergence"]`` and their flags into its flags.

    Returns:
        ``{training data: ProtocolRecords}`` (on every rank).
    """
    check_tvm(cfg.defences)
    if steps < 1 or paper_cw_steps < 1:
        raise ValueError(f"steps and paper_cw_steps must be >= 1, got {steps} and {paper_cw_steps}")
    adaptive = select_specs(adaptive_specs(eot_samples=cfg.tvm.eot_samples, steps=steps, restarts=restarts,
                                           square_queries=square_queries, cw_steps=cfg.cw_steps),
                            adaptive_attacks or ADAPTIVE_DEFAULT, what="adaptive attacks")  # fmt: skip
    conv = convergence or Convergence()
    paper = paper_specs(cw_steps=paper_cw_steps)
    variants = _training_data(checkpoints or {})
    dist = Dist.from_env(cfg.device)
    batches = load_batches(cfg, data_root, dist)
    results = {}
    for name, path, origin in variants:
        backbone = None if path is None else load_pretrained("resnet56", weights=path, check_hash=False)
        victims, softmax = load_victims(cfg, data_root, weights, backbone=backbone)
        settings = run_settings(cfg, dist, protocol="defense_table", training_data=name, **origin,
                                paper=[s.settings() for s in paper], adaptive=[s.settings() for s in adaptive],
                                convergence=conv.to_dict())  # fmt: skip
        store = open_store(Path(out_dir) / name, settings, dist)
        common: dict[str, Any] = dict(softmax=softmax, eps_values=cfg.eps, batches=batches, store=store, seed=cfg.seed,
                                      run_settings=settings, on_cell=on_cell, tvm_draws=cfg.tvm_draws)  # fmt: skip
        paper_records = run_cells(victims=victims, specs=paper, protocol="paper", **common)
        attack_records = [r for v in victims
                          for r in run_cells(victims=[v], specs=specs_for_victim(v, adaptive), protocol="adaptive", **common)]  # fmt: skip
        checks = _convergence(conv, victims, softmax, adaptive, attack_records, batches, cfg, settings,
                              Path(out_dir) / name / "convergence")  # fmt: skip
        results[name] = _finish(store, victims, batches, cfg, paper_records, attack_records, name, checks)
    if dist.rank == 0:
        _write_defense_markdown(results, Path(out_dir) / "defense_table.md", cfg, steps, paper_cw_steps)
    dist.barrier()
    return results


@dataclass(frozen=True)
class Convergence:
    """The convergence checks (N. Carlini et al. 2019) of each victim's strongest gradient attack.

    Attributes:
        steps: Step-count ladder (flag when the last doubling still lowers accuracy by > 1 point); ``()``: none.
        eot: EOT-sample ladder (against a randomised defence).
        images: Sub-sample: the first ``images`` evaluated images.
        unbounded_eps: Radius of the unbounded check (flag unless accuracy reaches 0).
    """

    steps: tuple[int, ...] = (10, 20, 50, 100)
    eot: tuple[int, ...] = (1, 2, 4)
    images: int = 20
    unbounded_eps: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "eot": list(self.eot), "images": self.images,
                "unbounded_eps": self.unbounded_eps}  # fmt: skip


Checks = dict[tuple[str, str], tuple[dict[str, Any], list[str]]]


def _convergence(
    conv: Convergence, victims: Sequence[Victim], softmax: Victim, specs: Sequence[AttackSpec],
    records: Sequence[CellRecord], batches: Batches, cfg: EvalConfig, settings: dict[str, Any], root: Path,
) -> Checks:  # fmt: skip
    """``{(model, defence): (curves, flags)}``: each victim's strongest gradient attack (lowest accuracy at the
    smallest eps) re-run with :attr:`Convergence.steps` / :attr:`Convergence.eot` on a sub-sample."""
    ladder = {s.name: s for s in specs if s.source == "self" and s.attack is not None and hasattr(s.attack, "steps")}
    if not conv.steps or not ladder:
        return {}
    m = min(conv.images, len(batches.indices))
    sub = Batches(batches.x[:m], batches.y[:m], batches.indices[:m], batches.batch_size, batches.dist)
    sub_settings = {**settings, "run": {**settings["run"], "n": m}}
    store = open_store(root, sub_settings, batches.dist)
    eps = min(cfg.eps)
    out: Checks = {}
    for v in victims:
        cells = [r for r in records if (r.model, r.defence, r.eps) == (v.model, v.defence, eps) and r.attack in ladder]
        if cells:
            strongest = min(cells, key=lambda r: (r.accuracy, list(ladder).index(r.attack)))
            out[v.model, v.defence] = run_convergence(
                v, softmax, ladder[strongest.attack], batches=sub, store=store, seed=cfg.seed,
                run_settings=sub_settings, eps=eps, steps=conv.steps, eot=conv.eot,
                unbounded_eps=conv.unbounded_eps, tvm_draws=cfg.tvm_draws)  # fmt: skip
    return out


def _finish(
    store: RunStore, victims: Sequence[Victim], batches: Batches, cfg: EvalConfig,
    paper: list[CellRecord], attacks: list[CellRecord], name: str, checks: Checks,
) -> ProtocolRecords:  # fmt: skip
    """Flags, adaptive minima and plots (rank 0 writes; every rank returns the same records)."""
    # the paper's attacks (surrogate gradient, TVM unseen) relabelled so they can challenge the adaptive ones
    relabelled = [replace(r, protocol="adaptive", attack=f"paper_{r.attack}") for r in paper]
    pairs = [("pgd_exact_eot", "transfer_pgd", "black_box_stronger", "transfer beats white box"),
             ("pgd_exact_eot", "square", "gradient_free_stronger", "Square beats exact-gradient PGD: masked gradients"),
             ("pgd_exact_eot", "pgd_surrogate_eot", "surrogate_stronger", "exact WNLL gradient weaker than the straight-through one"),
             ("ifgsm_exact_eot", "transfer_ifgsm", "black_box_stronger", "transfer beats white box"),
             ("ifgsm_exact_eot", "ifgsm_surrogate_eot", "surrogate_stronger", "exact WNLL gradient weaker than the straight-through one"),
             ("fgsm_exact_eot", "paper_fgsm", "paper_attack_stronger", "surrogate / TVM-oblivious FGSM beats exact + BPDA + EOT")]  # fmt: skip
    cell = merge_flags(eps_monotonicity_flags([*paper, *attacks]), *(
        stronger_flags([*attacks, *relabelled], reference=reference, challenger=challenger, flag=flag, why=why)
        for reference, challenger, flag, why in pairs
    ))  # fmt: skip
    rank0 = batches.dist.rank == 0
    vflags = victim_flags(victims, batches, eot_samples=cfg.tvm.eot_samples)
    paper = attach_flags(store if rank0 else None, paper, victim_flags=vflags, cell_flags=cell)
    attacks = attach_flags(store if rank0 else None, attacks, victim_flags=vflags, cell_flags=cell)
    minima = [
        replace(r, settings={**r.settings, "training_data": name},
                flags=sorted({*r.flags, *checks.get((r.model, r.defence), ({}, []))[1]}),
                extra={**r.extra, "convergence": checks.get((r.model, r.defence), ({}, []))[0] or None})
        for r in adaptive_minimum(paper, attacks)
    ]  # fmt: skip
    if rank0:
        for r in minima:
            store.put(r)
        write_plots([*paper, *minima], store.root)
    batches.dist.barrier()
    return ProtocolRecords(paper, attacks, minima)


def _family_rows(name: str, recs: ProtocolRecords, eps_values: Sequence[float]) -> list[list[str]]:
    """Rows ``training data | model | defence | family | clean | paper / adaptive per eps``."""
    clean = {(r.model, r.defence): r for r in recs.paper if r.attack == "clean"}
    paper = {(r.model, r.defence, r.attack, r.eps): r for r in recs.paper}
    ada = {(r.model, r.defence, r.attack, r.eps): r for r in recs.adaptive}
    rows = []
    for model, defence in sorted(clean):
        for family in FAMILIES:
            cells = []
            for e in eps_values:
                p, a = paper.get((model, defence, family, e)), ada.get((model, defence, family, e))
                cells.append(f"{pct(p.accuracy) if p else '-'} / {pct(a.accuracy) if a else '-'}")
            rows.append([name, model, defence, family, pct(clean[model, defence].accuracy), *cells])
    return rows


def _attack_rows(name: str, recs: ProtocolRecords, eps_values: Sequence[float]) -> list[list[str]]:
    """Rows ``training data | model | defence | adaptive attack | accuracy per eps``."""
    cells: dict[tuple[str, str, str], dict[float, CellRecord]] = {}
    for r in recs.adaptive_attacks:
        cells.setdefault((r.model, r.defence, r.attack), {})[r.eps] = r
    return [[name, *row, *(pct(by_eps[e].accuracy) if e in by_eps else "-" for e in eps_values)]
            for row, by_eps in sorted(cells.items())]  # fmt: skip


def _convergence_lines(results: Mapping[str, ProtocolRecords]) -> list[str]:
    """The ``## Convergence checks`` section: each victim's step / EOT ladders and unbounded check."""
    rows = []
    for name, recs in results.items():
        seen = {(r.model, r.defence): r.extra.get("convergence") for r in recs.adaptive if r.attack == ALL}
        for (model, defence), c in sorted(seen.items()):
            if c:
                curve = lambda d: ", ".join(f"{k}: {pct(a)}" for k, a in sorted(d.items(), key=lambda kv: int(kv[0])))  # noqa: E731
                rows.append([name, f"{model} + {defence}", c["attack"], f"{c['eps']:g}", str(c["n"]),
                             curve(c["steps"]), curve(c["eot"]) or "-", pct(c["unbounded"]["accuracy"])])  # fmt: skip
    if not rows:
        return []
    return ["", "## Convergence checks (Carlini et al. 2019; accuracy %, sub-sample)", "",
            *markdown_table(["training data", "victim", "strongest attack", "eps", "n", "steps", "EOT samples",
                             "unbounded (eps 0.3)"], rows)]  # fmt: skip


def _write_defense_markdown(
    results: Mapping[str, ProtocolRecords], path: Path, cfg: EvalConfig, steps: int, paper_cw_steps: int
) -> str:
    eps_values = sorted(cfg.eps)
    eps_head = [f"eps={e:g}" for e in eps_values]
    used = sorted({r.attack for recs in results.values() for r in recs.adaptive_attacks})
    worst = [r for recs in results.values() for r in recs.adaptive if r.attack == ALL]
    lines = ["# Robust accuracy (%), paper protocol / adaptive protocol (the paper's Table 2)", "",
             *headline(worst, what=f"every paper and adaptive attack (BPDA + EOT({cfg.tvm.eot_samples}) through TVM, "
                                   f"{steps} steps)"),
             "## Detail", "", "Each cell: **paper / adaptive**. Paper protocol: the paper's stated settings (IFGSM 10 steps of size "
             f"eps, C&W c=10 kappa=0 with {paper_cw_steps} steps, straight-through surrogate gradient on WNLL, TVM "
             "unseen by the attacker). Adaptive: per image, the minimum over clean accuracy, the family's paper "
             f"attack and every adaptive attack run ({', '.join(used) or 'none'}; EOT({cfg.tvm.eot_samples}) and BPDA "
             f"through TVM, {steps} steps), so adaptive <= paper by construction.", "",
             *markdown_table(["training data", "model", "defence", "attack", "clean", *eps_head],
                             [row for name, recs in results.items() for row in _family_rows(name, recs, eps_values)]),
             "", "## Adaptive attacks (components of the adaptive numbers)", "",
             *markdown_table(["training data", "model", "defence", "attack", *eps_head],
                             [row for name, recs in results.items() for row in _attack_rows(name, recs, eps_values)])]  # fmt: skip
    flags = sorted({(name, r.protocol, r.model, r.defence, r.attack, f) for name, recs in results.items()
                    for r in [*recs.paper, *recs.adaptive_attacks] for f in r.flags})  # fmt: skip
    lines += flag_section("/".join(fl[:5]) + f": {fl[5]}" for fl in flags)
    lines += _convergence_lines(results)
    others = [n for n in results if n != "original"]
    lines += ["", "## Training data", "",
              f"- available: {', '.join(results)}" + ("" if others else " (only 'original', the public pretrained "
              "ResNet-56, was available; the paper's TVM-trained variants need checkpoints passed with --checkpoint NAME=PATH)"),
              f"- images per cell: {cfg.n} (test indices {cfg.start}..{cfg.start + cfg.n - 1}); WNLL batch "
              f"{cfg.wnll_batch_size}, template {cfg.template_size}, coupling {cfg.coupling}, kernel {cfg.kernel}, "
              f"seed {cfg.seed}; TVM {cfg.tvm}", "- records: <training data>/cells/*.json; settings: <training data>/run.json", ""]  # fmt: skip
    return write_text(path, lines)


# ------------------------------------------------------------------------------------------ Table 1
def transfer_table(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    gradient: str = "surrogate",
    attacks: Sequence[str] = ("fgsm", "ifgsm", "cw_l2"),
    paper_cw_steps: int = 10,
    on_cell: OnCell = None,
) -> list[CellRecord]:
    """The paper's Table 1: adversarials crafted on softmax or WNLL, classified by every victim.

    Attacks are the paper protocol's (:func:`~wnll_art.evaluation.protocols.paper_specs`), crafted white box
    on the undefended source model; ``gradient`` is the WNLL gradient used when the source is WNLL
    (``"surrogate"``: the paper's straight-through estimator; ``"exact"``: through the WNLL solve). Targets
    are softmax and WNLL with each defence of ``cfg.defences`` (TVM, if any, is unseen by the attacker).
    Records: protocol ``"transfer"``, attack ``"<attack>_from_<source>"``, model/defence = the target; the
    source = target cells are the white-box references. Writes ``out_dir/`` (a :class:`RunStore`) and
    ``out_dir/transfer_table.md``. Resumable and shardable.

    Returns:
        All records (clean ones included).
    """
    check_tvm(cfg.defences)
    if "none" not in cfg.defences:
        raise ValueError(
            "defences must include 'none' (the adversarials are crafted on the undefended models)"
        )
    if gradient not in ("exact", "surrogate"):
        raise ValueError(f"gradient must be 'exact' or 'surrogate', got {gradient!r}")
    paper = [s for s in paper_specs(cw_steps=paper_cw_steps) if s.attack is not None]
    crafting = [replace(s, gradient=gradient) for s in select_specs(paper, attacks, what="attacks")]  # type: ignore[arg-type]
    dist = Dist.from_env(cfg.device)
    settings, store, batches = open_run(cfg, out_dir, data_root, dist=dist, protocol="transfer_table",
                                        gradient=gradient, attacks=[s.settings() for s in crafting])  # fmt: skip
    victims, softmax = load_victims(cfg, data_root, weights)
    records = run_cells(victims=victims, softmax=softmax, specs=[CLEAN], eps_values=cfg.eps, batches=batches,
                        store=store, protocol="transfer", seed=cfg.seed, run_settings=settings, on_cell=on_cell, tvm_draws=cfg.tvm_draws)  # fmt: skip
    for source in (v for v in victims if v.defence == "none"):
        for spec in crafting:
            raw_cache: dict[Any, torch.Tensor] = {}  # C&W runs once per batch, projected onto each eps
            for eps in cfg.eps:
                cells = _transfer_cells(source, spec, eps, victims, softmax, batches, store, cfg.seed, settings,
                                        raw_cache, cfg.tvm_draws)  # fmt: skip
                for r in cells:
                    if on_cell is not None:
                        on_cell(r)
                records += cells
    if dist.rank == 0:
        _write_transfer_markdown(records, Path(out_dir) / "transfer_table.md", cfg, gradient)
    dist.barrier()
    return records


def _transfer_cells(
    source: Victim, spec: AttackSpec, eps: float, targets: Sequence[Victim], softmax: Victim, batches: Batches,
    store: RunStore, seed: int, settings: dict[str, Any], raw_cache: dict[Any, torch.Tensor], draws: int,
) -> list[CellRecord]:  # fmt: skip
    name = f"{spec.name}_from_{source.model}"
    keys = [cell_key("transfer", t.model, t.defence, name, eps) for t in targets]
    stored = [store.get(k) for k in keys]
    if all(r is not None for r in stored):
        return [r for r in stored if r is not None]
    start = time.perf_counter()
    mine: dict[int, list[tuple[list[int], list[float]]]] = {}
    for b in batches.mine():
        x, y = batches.get(b)
        attack_seed = derive_seed(seed, "transfer", source.model, spec.name, b)
        x_adv = adversarial(spec, source, softmax, x, y, eps=eps, seed=attack_seed, raw_cache=raw_cache)
        mine[b] = [predict_correct(t, x_adv, y, draws=draws, seed=derive_seed(seed, "predict", b, name, eps))
                   for t in targets]  # fmt: skip
    merged = {b: c for part in batches.dist.gather(mine) for b, c in part.items()}
    elapsed = time.perf_counter() - start
    out = []
    for i, t in enumerate(targets):
        correct = [c for b in sorted(merged) for c in merged[b][i][0]]
        mean = [m for b in sorted(merged) for m in merged[b][i][1]]
        rec = CellRecord(
            model=t.model, defence=t.defence, attack=name, eps=eps, protocol="transfer",
            accuracy=sum(correct) / len(correct), n=len(correct), per_image_correct=correct,
            image_indices=batches.indices, time_s=elapsed,
            settings={**settings, "victim": t.settings(), "source": source.settings(), "spec": spec.settings()},
            extra={"source": source.model, "white_box": t.model == source.model and t.defence == "none",
                   **draw_extra(t, draws, mean)},
        )  # fmt: skip
        if batches.dist.rank == 0:
            store.put(rec)
        out.append(rec)
    batches.dist.barrier()
    return out


def _write_transfer_markdown(
    records: Sequence[CellRecord], path: Path, cfg: EvalConfig, gradient: str
) -> str:
    targets = sorted({(r.model, r.defence) for r in records}, key=lambda md: (md[1] != "none", md))
    labels = [m if d == "none" else f"{m} + {d}" for m, d in targets]
    index = {(r.model, r.defence, r.attack, r.eps): r for r in records}
    rows = [["clean", "-", "0", *(pct(index[m, d, "clean", 0.0].accuracy) for m, d in targets)]]
    for attack, eps in sorted({(r.attack, r.eps) for r in records if r.attack != "clean"}):
        base, _, source = attack.partition("_from_")
        rows.append([base, source, f"{eps:g}", *(pct(index[m, d, attack, eps].accuracy)
                                                 if (m, d, attack, eps) in index else "-" for m, d in targets)])  # fmt: skip
    lines = ["# Transfer of adversarial examples between activations (%; the paper's Table 1)", "",
             f"Rows: attack crafted white box on the source model (paper-protocol attacks; WNLL gradient: {gradient}). "
             "Columns: accuracy of each classifier on those images (source = column: white-box reference).", "",
             *markdown_table(["attack", "crafted on", "eps", *labels], rows),
             "", f"Images per cell: {cfg.n}; WNLL batch {cfg.wnll_batch_size}, template {cfg.template_size}, "
             f"seed {cfg.seed}. Records: cells/*.json; settings: run.json.", ""]  # fmt: skip
    return write_text(path, lines)
