"""WNLL + TVM against ART's input-transformation defences, on the same model, attacks and images.

Defences: none, our TVM (:class:`~wnll_art.tvm.module.TVMPurifier`), and ART's ``TotalVarMin`` (C. Guo et al.,
ICLR 2018), ``JpegCompression`` (G. K. Dziugaite et al. 2016; Guo et al. 2018), ``SpatialSmoothing`` and
``FeatureSqueezing`` (W. Xu, D. Evans, Y. Qi, NDSS 2018), each in front of the softmax and the WNLL model.

Gradients: ART's numpy preprocessors are not differentiable; ART's ``PyTorchClassifier(preprocessing_defences=...)``
back-propagates through them with each preprocessor's ``estimate_gradient``, which for all four is the identity
(BPDA, A. Athalye et al., ICML 2018). :class:`ArtPreprocessor` wraps a preprocessor as an ``nn.Module`` whose
backward *is* that ``estimate_gradient``, so ART and Foolbox attacks see the same function and gradient as
through ART's own classifier. Randomised defences (both TVMs) are attacked with EOT over their draws.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wnll_art.defence import Defence
from wnll_art.evaluation.checks import eps_monotonicity_flags, model_flags
from wnll_art.evaluation.engine import Batches, Dist, derive_seed, run_cells
from wnll_art.evaluation.harness import EvalConfig, load_batches, load_victims
from wnll_art.evaluation.protocols import CLEAN, adaptive_specs
from wnll_art.evaluation.records import CellRecord
from wnll_art.evaluation.tables import (
    attach_flags,
    open_store,
    pct,
    per_image_minimum,
    specs_for_victim,
    stronger_flags,
    tvm_available,
)
from wnll_art.evaluation.victims import Victim

__all__ = ["DEFENCES", "GRADIENTS", "ArtPreprocessor", "art_defence", "compare_defences"]

DEFENCES = ("none", "tvm", "art_tvm", "jpeg", "spatial_smoothing", "feature_squeezing")
DEFAULT_ATTACKS = ("fgsm_exact_eot", "ifgsm_exact_eot", "transfer_ifgsm")
GRADIENTS = {
    "none": "exact (no preprocessing)",
    "tvm": "BPDA (identity backward) through our TVM; EOT over its Bernoulli masks",
    "art_tvm": "BPDA: ART TotalVarMin.estimate_gradient (identity); EOT over its Bernoulli masks",
    "jpeg": "BPDA: ART JpegCompression.estimate_gradient (identity); deterministic, no EOT",
    "spatial_smoothing": "BPDA: ART SpatialSmoothing.estimate_gradient (identity); deterministic, no EOT",
    "feature_squeezing": "BPDA: ART FeatureSqueezing.estimate_gradient (identity; the true gradient is 0 a.e.)",
}
# Guo et al. 2018 (JPEG quality 75), ART defaults (window 3, TotalVarMin), Xu et al. 2018 (5 bits on CIFAR-10)
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "jpeg": {"quality": 75},
    "spatial_smoothing": {"window_size": 3},
    "feature_squeezing": {"bit_depth": 5},
    "art_tvm": {"prob": 0.3, "norm": 2, "lamb": 0.5, "solver": "L-BFGS-B", "max_iter": 10},
}


class _BPDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: ArtPreprocessor) -> torch.Tensor:  # type: ignore[override]
        ctx.module, ctx.x_np = module, module._to_art(x)
        return module._from_art(module._run_art(ctx.x_np), x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        module: ArtPreprocessor = ctx.module
        estimate = module.preprocessor.estimate_gradient(ctx.x_np, module._to_art(grad))
        return module._from_art(np.asarray(estimate), grad), None


class ArtPreprocessor(nn.Module):
    """An ART numpy ``Preprocessor`` as an ``nn.Module`` with ART's gradient estimate as its backward.

    Args:
        name: Defence name in the records.
        preprocessor: The ART preprocessor (``clip_values=(0, 1)`` where it takes them).
        channels_last: The preprocessor expects ``(N, H, W, C)`` (ART's ``TotalVarMin`` does; it has no
            ``channels_first`` option and would otherwise smooth image columns as if they were channels).
        randomised: The preprocessor draws from NumPy's global generator (``TotalVarMin``); each call then
            draws from a generator seeded by ``(seed, call number)``, and the global state is restored.
        seed: Seed of those draws.

    Shapes:
        ``(N, 3, H, W)`` float in [0, 1] on any device -> same shape, dtype and device.
    """

    gradient = "bpda"

    def __init__(
        self,
        name: str,
        preprocessor: Any,
        *,
        channels_last: bool = False,
        randomised: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.name, self.preprocessor = name, preprocessor
        self.channels_last, self.randomised = channels_last, randomised
        self.seed, self._calls = seed, 0

    def reseed(self, seed: int) -> None:
        """Restarts the draws from ``seed`` (no effect on deterministic preprocessors)."""
        self.seed, self._calls = seed, 0

    def with_gradient(self, gradient: str) -> ArtPreprocessor:
        if gradient != "bpda":
            raise ValueError(f"{self.name}: ART preprocessors offer only the BPDA gradient, not {gradient!r}")
        return self

    def _to_art(self, t: torch.Tensor) -> np.ndarray:
        a = t.detach().cpu().float().numpy()
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if self.channels_last else a

    def _from_art(self, a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            a = a.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)

    def _run_art(self, x: np.ndarray) -> np.ndarray:
        if not self.randomised:
            return np.asarray(self.preprocessor(x)[0])
        state = np.random.get_state()
        np.random.seed(derive_seed(self.seed, self._calls))
        self._calls += 1
        try:
            return np.asarray(self.preprocessor(x)[0])
        finally:
            np.random.set_state(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _BPDAFunction.apply(x, self)
        return out

    def settings(self) -> dict[str, Any]:
        params = {k: getattr(self.preprocessor, k) for k in getattr(self.preprocessor, "params", [])}
        return {"name": self.name, "art_class": type(self.preprocessor).__name__, "params": params,
                "gradient": GRADIENTS.get(self.name, "BPDA: estimate_gradient"), "randomised": self.randomised,
                "seed": self.seed}  # fmt: skip


def art_defence(name: str, *, seed: int = 0, **options: Any) -> ArtPreprocessor:
    """ART's ``JpegCompression`` (``"jpeg"``), ``SpatialSmoothing``, ``FeatureSqueezing`` or ``TotalVarMin``
    (``"art_tvm"``) with ``clip_values=(0, 1)``, :data:`DEFAULT_OPTIONS` overridden by ``options``."""
    from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing, TotalVarMin

    opts = {**DEFAULT_OPTIONS.get(name, {}), **options}
    if name == "jpeg":
        return ArtPreprocessor(name, JpegCompression(clip_values=(0.0, 1.0), channels_first=True, **opts))
    if name == "spatial_smoothing":
        return ArtPreprocessor(name, SpatialSmoothing(clip_values=(0.0, 1.0), channels_first=True, **opts))
    if name == "feature_squeezing":
        return ArtPreprocessor(name, FeatureSqueezing(clip_values=(0.0, 1.0), **opts))
    if name == "art_tvm":
        tvm = TotalVarMin(clip_values=(0.0, 1.0), **opts)
        return ArtPreprocessor(name, tvm, channels_last=True, randomised=True, seed=seed)
    raise ValueError(
        f"unknown ART defence {name!r}; choose from jpeg, spatial_smoothing, feature_squeezing, art_tvm"
    )


def _victims(
    cfg: EvalConfig, defences: Sequence[str], base: Sequence[Victim], options: Mapping[str, Mapping[str, Any]]
) -> list[Victim]:
    out = []
    for v in base:
        for d in defences:
            if d not in ("none", "tvm"):
                module = Defence(v.classifier, purifier=art_defence(d, seed=cfg.seed, **options.get(d, {})))
            else:
                module = Defence(v.classifier, tvm=cfg.tvm if d == "tvm" else None, seed=cfg.seed)
            module.training = False
            out.append(Victim(v.model, d, module))
    return out


def _victim_flags(victims: Sequence[Victim], batches: Batches, eot: int) -> dict[tuple[str, str], list[str]]:
    x, y = batches.get(0)
    flags = {}
    for v in victims:
        view = v.attack_view(eot_samples=eot if v.module.randomised else 1)
        flags[v.model, v.defence] = model_flags(v.predict_module, view, x, y, reseed=v.reseed)
    return flags


def compare_defences(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    defences: Sequence[str] = DEFENCES,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    steps: int = 10,
    defence_options: Mapping[str, Mapping[str, Any]] | None = None,
    on_cell: Callable[[CellRecord], None] | None = None,
) -> list[CellRecord]:
    """Robust accuracy of softmax and WNLL behind each defence, under the same adaptive attacks and images.

    Attacks are :func:`~wnll_art.evaluation.protocols.adaptive_specs` entries (white box with BPDA through
    every preprocessor, EOT over the randomised ones, plus transfer from the undefended softmax model); a
    ``worst_case`` record per (model, defence, eps) takes the per-image minimum over them. ART's
    ``TotalVarMin`` costs ~5-40 ms per image per call (SciPy L-BFGS-B per channel), times the EOT draws and
    attack steps: leave ``"art_tvm"`` out of ``defences`` for large runs.

    Writes ``out_dir/`` (a :class:`RunStore`: ``cells/*.json``, protocol ``"compare"``) and
    ``out_dir/compare_defences.md``. ``cfg.defences`` is unused (see ``defences``). Resumable, shardable.

    Args:
        cfg: Images, eps, WNLL, TVM (ours), EOT and C&W settings.
        defences: Subset of :data:`DEFENCES`.
        attacks: Names among the adaptive attacks (``fgsm_exact_eot``, ``ifgsm_exact_eot``, ``pgd_exact_eot``,
            ``cw_l2_exact_eot``, ``transfer_ifgsm``, ``autoattack``; the surrogate one applies to WNLL only).
        steps: Iterations of the iterative attacks.
        defence_options: Per-defence overrides of :data:`DEFAULT_OPTIONS` (e.g. ``{"jpeg": {"quality": 50}}``).

    Returns:
        All records, the ``worst_case`` ones included.
    """
    unknown = set(defences) - set(DEFENCES)
    if unknown or not defences:
        raise ValueError(f"defences must be a non-empty subset of {list(DEFENCES)}, got {list(defences)}")
    if ("tvm" in defences or "art_tvm" in defences) and not tvm_available():
        raise ValueError(
            "tvm/art_tvm need wnll_art.tvm (TVMPurifier, EOT), which is not importable; drop them"
        )
    specs = {
        s.name: s for s in adaptive_specs(eot_samples=cfg.eot_samples, steps=steps, cw_steps=cfg.cw_steps)
    }
    if not attacks or set(attacks) - set(specs):
        raise ValueError(f"attacks must be a non-empty subset of {sorted(specs)}, got {list(attacks)}")
    chosen = [specs[a] for a in specs if a in attacks]
    options = {**{d: {} for d in DEFENCES}, **(defence_options or {})}
    dist = Dist.from_env(cfg.device)
    settings = {"run": {**cfg.to_dict(), "defences": list(defences)}, "protocol": "compare_defences",
                "attacks": [s.settings() for s in chosen], "steps": steps,
                "defence_options": {d: {**DEFAULT_OPTIONS.get(d, {}), **options[d]} for d in defences}}  # fmt: skip
    store = open_store(out_dir, settings, dist)
    batches = load_batches(cfg, data_root, dist)
    base, softmax = load_victims(replace(cfg, defences=("none",)), data_root, weights)
    victims = _victims(cfg, defences, base, options)
    records = [r for v in victims
               for r in run_cells(victims=[v], softmax=softmax, specs=[CLEAN, *specs_for_victim(v, chosen)],
                                  eps_values=cfg.eps, batches=batches, store=store, protocol="compare", seed=cfg.seed,
                                  run_settings=settings, on_cell=on_cell)]  # fmt: skip
    cell = eps_monotonicity_flags(records)
    for key, fl in stronger_flags(records, reference="ifgsm_exact_eot", challenger="transfer_ifgsm",
                                  flag="black_box_stronger", why="transfer beats white box").items():  # fmt: skip
        cell.setdefault(key, []).extend(fl)
    rank0 = dist.rank == 0
    records = attach_flags(store if rank0 else None, records, cell_flags=cell,
                           victim_flags=_victim_flags(victims, batches, cfg.eot_samples))  # fmt: skip
    # robust = correct clean and under every attack, so a worst case never exceeds clean accuracy
    worst = per_image_minimum(records, attack="worst_case", protocol="compare", include_clean=True)
    if rank0:
        for r in worst:
            store.put(r)
        _write_markdown([*records, *worst], Path(out_dir) / "compare_defences.md", cfg, defences, settings)
    dist.barrier()
    return [*records, *worst]


def _write_markdown(
    records: Sequence[CellRecord],
    path: Path,
    cfg: EvalConfig,
    defences: Sequence[str],
    settings: dict[str, Any],
) -> str:
    eps_values = sorted(cfg.eps)
    index = {(r.model, r.defence, r.attack, r.eps): r for r in records}
    eps_head = " | ".join(f"eps={e:g}" for e in eps_values)
    lines = ["# Defences compared on the same model, attacks and images (robust accuracy, %)", "",
             "Worst case = per image, the minimum over the attacks below (all adaptive: BPDA through every "
             "preprocessor, EOT over randomised ones, transfer from the undefended softmax model).", "",
             f"| model | defence | attacker's gradient through the defence | clean | {eps_head} |",
             "|" + "---|" * (4 + len(eps_values))]  # fmt: skip
    for model in ("softmax", "wnll"):
        for d in defences:
            if (model, d, "clean", 0.0) not in index:
                continue
            vals = [pct(index[model, d, "worst_case", e].accuracy) if (model, d, "worst_case", e) in index else "-"
                    for e in eps_values]  # fmt: skip
            lines.append(f"| {model} | {d} | {GRADIENTS[d]} | {pct(index[model, d, 'clean', 0.0].accuracy)} | "
                         + " | ".join(vals) + " |")  # fmt: skip
    lines += [
        "",
        "## Each attack",
        "",
        f"| model | defence | attack | {eps_head} |",
        "|" + "---|" * (3 + len(eps_values)),
    ]
    for model, d, attack in sorted(
        {(r.model, r.defence, r.attack) for r in records if r.attack not in ("clean", "worst_case")}
    ):
        vals = [
            pct(index[model, d, attack, e].accuracy) if (model, d, attack, e) in index else "-"
            for e in eps_values
        ]
        lines.append(f"| {model} | {d} | {attack} | " + " | ".join(vals) + " |")
    flags = sorted(
        {(r.model, r.defence, r.attack, f) for r in records if r.attack != "worst_case" for f in r.flags}
    )
    lines += ["", "## Flags (gradient masking and sanity checks)", ""]
    lines += [f"- {m}/{d}/{a}: {f}" for m, d, a, f in flags] or ["- none"]
    lines += ["", "## Settings", "", f"- defence options: {settings['defence_options']}",
              f"- our TVM: {cfg.tvm}; EOT draws: {cfg.eot_samples}; iterative steps: {settings['steps']}",
              f"- images per cell: {cfg.n}; WNLL batch {cfg.wnll_batch_size}, template {cfg.template_size}, seed {cfg.seed}",
              "- ART TotalVarMin (art_tvm) runs SciPy L-BFGS-B per image and channel (~5-40 ms per image per call, "
              "times EOT draws and steps): it dominates the run time; keep n small or drop it.", ""]  # fmt: skip
    text = "\n".join(lines)
    path.write_text(text)
    return text
