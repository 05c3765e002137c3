"""Feature geometry (the paper's Fig. 4): the 64-D features of clean, IFGSM and TVM-purified images in the
plane of their first two principal components, softmax model vs WNLL model, coloured by class.

Wang et al. (2018), "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516, Fig. 4. Two figures:

* The default job (10 classes, IFGSM): the principal axes of each model are fitted on its clean features (SVD of
  the centred features) and every condition is projected onto them, so a panel shows how the attack and the
  purification move the features relative to the clean geometry. The JSON summary gives, per model and
  condition, the explained variance, class-centroid distances, within-class spread and their ratio.
* ``--paper-fig4``: the figure as the paper draws it: airplane and automobile only, 1,000 training and 100 test
  images, FGSM (the ``paper`` protocol's) at eps 0.02; the public softmax ResNet-56 (``backbone.features``) vs our
  WNLL model trained on original data (``resnet56-wnll``, :meth:`WNLLNet.embed`: the 64-D buffer block), each
  panel (a) training, (b) clean test, (c) FGSM test features on the first two principal axes of that model's
  *training* features. Writes ``OUT/paper_fig4.png`` and ``OUT/paper_fig4.json`` (accuracy, class-separation
  ratio in 64-D and in the plane, per model and condition)::

      WNLL_ART_DATA=../shared/data python evaluations/feature_geometry.py --paper-fig4 \\
          --weights ../shared/weights/resnet56-4bfd9763.th --out evaluations/results
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from wnll_art._device import Dist
from wnll_art._files import atomic_write
from wnll_art._random import derive_seed, seed_generator
from wnll_art.adapters.attacks import ArtBIM
from wnll_art.defence import Defence
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.engine import Batches, adversarial
from wnll_art.evaluation.protocols import SPECS, PlanOptions
from wnll_art.evaluation.records import CellRecord, RunStore
from wnll_art.evaluation.report import markdown_table, pct, save_png, write_text
from wnll_art.evaluation.setup import open_run, rows, victims_of
from wnll_art.evaluation.victims import Victim, predict_labels
from wnll_art.tvm.module import TVMPurifier
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.template import balanced_template

__all__ = ["CONDITIONS", "FIG4_CLASSES", "centroid_stats", "class_draw", "feature_geometry", "fig4_summary", "main",
           "paper_fig4", "principal_axes", "project_on_pcs"]  # fmt: skip

PROG = "feature_geometry"

CONDITIONS = ("clean", "ifgsm", "tvm_clean", "tvm_ifgsm")
FIG4_CLASSES = (0, 1)  # airplane, automobile: the two classes of the paper's Fig. 4
FIG4_MODELS = {"softmax": ("resnet56", "softmax"), "resnet56-wnll": ("resnet56-wnll", None)}  # label: (zoo, head)  # fmt: skip


def principal_axes(feats: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean ``(D,)``, first ``k`` principal axes ``(D, k)`` (sign: largest loading positive) and the
    explained-variance ratio of each ``(k,)``, from the SVD of the centred ``(N, D)`` features."""
    mean = feats.mean(0)
    _, s, vh = torch.linalg.svd(feats - mean, full_matrices=False)
    axes = vh[:k].T.clone()
    signs = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    axes *= torch.where(signs == 0, torch.ones_like(signs), signs)
    ratio = s[:k] ** 2 / (s**2).sum().clamp_min(torch.finfo(s.dtype).tiny)
    return mean, axes, ratio


def centroid_stats(feats: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Class centroids of ``(N, D)`` features: pairwise distances, mean distance between centroids, mean
    distance of a point to its class centroid (within-class spread) and their ratio (higher: more separated)."""
    classes = sorted(set(labels.tolist()))
    centroids = torch.stack([feats[labels == c].mean(0) for c in classes])
    dist = torch.cdist(centroids, centroids)
    m = len(classes)
    between = float(dist.sum() / (m * (m - 1))) if m > 1 else 0.0
    index = {c: i for i, c in enumerate(classes)}
    own = centroids[torch.tensor([index[int(c)] for c in labels])]
    within = float((feats - own).norm(dim=1).mean())
    return {"classes": classes, "centroid_distances": dist.tolist(), "centroid_distance_mean": between,
            "within_class_spread_mean": within, "separation_ratio": between / within if within > 0 else None}  # fmt: skip


def _collect(
    cfg: EvalConfig, eps: float, model: str, clf: torch.nn.Module, view: torch.nn.Module,
    embed: Callable[[torch.Tensor], torch.Tensor], purifier: torch.nn.Module | None, batches: Batches, attack: ArtBIM,
) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:  # fmt: skip
    feats: dict[str, list[torch.Tensor]] = {}
    correct: dict[str, list[int]] = {}
    for b in range(batches.count):
        x, y = batches.get(b)
        adv = attack(view, x, y, eps=eps, seed=derive_seed(cfg.seed, "geometry", model, b))
        images = {"clean": x, "ifgsm": adv}
        if purifier is not None:
            # the same masks for both models: they see the same purified clean images
            with torch.no_grad(), purifier.drawing(derive_seed(cfg.seed, "geometry_tvm", b)):  # type: ignore[operator]
                images["tvm_clean"] = purifier(x)
            with torch.no_grad(), purifier.drawing(derive_seed(cfg.seed, "geometry_tvm_adv", b)):  # type: ignore[operator]
                images["tvm_ifgsm"] = purifier(images["ifgsm"])
        with torch.no_grad():
            for c, img in images.items():
                feats.setdefault(c, []).append(embed(img).cpu())
                correct.setdefault(c, []).extend((predict_labels(clf, img) == y).int().tolist())
    return {c: torch.cat(f).double() for c, f in feats.items()}, correct


def feature_geometry(
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    steps: int = 10,
    step_fraction: float = 0.25,
    gradient: str = "exact",
) -> dict[str, Any]:
    """Fig. 4: PCA of the 64-D features, softmax vs WNLL, clean / IFGSM / TVM(clean) / TVM(IFGSM).

    Softmax features are ``backbone.features``; WNLL features are :meth:`WNLLNet.embed` (on the zoo
    backbone, which has no buffer block, these are the same features: the models differ only in their
    output activation, so the clean panels coincide and the adversarial panels differ by what the attack
    targets). IFGSM: ART BIM, ``steps`` steps of ``step_fraction * eps`` at the single ``cfg.eps`` value,
    white box (``gradient`` through the WNLL solve). TVM panels need ``"tvm"`` in ``cfg.defences``.

    Writes ``out_dir/feature_geometry.png``, ``out_dir/feature_geometry.json`` (the summary, returned),
    ``out_dir/feature_geometry.md`` and accuracy records ``out_dir/cells/*.json`` (protocol ``"geometry"``).
    Single process (not sharded).
    """
    if len(cfg.eps) != 1:
        raise ValueError(f"feature_geometry takes one eps value, got {cfg.eps}")
    if gradient not in ("exact", "surrogate"):
        raise ValueError(f"gradient must be 'exact' or 'surrogate', got {gradient!r}")
    eps = cfg.eps[0]
    settings, store, batches = open_run(cfg, out_dir, data_root, dist=Dist(), protocol="feature_geometry",
                                        steps=steps, step_fraction=step_fraction, gradient=gradient)  # fmt: skip
    victims, _ = victims_of(rows(cfg)[0], cfg, defences=("none",), data_root=data_root, weights=weights)
    purifier = TVMPurifier(cfg.tvm, seed=cfg.seed) if "tvm" in cfg.defences else None
    attack = ArtBIM(steps=steps, step_fraction=step_fraction)
    y = batches.y.cpu()
    summary: dict[str, Any] = {"settings": settings, "eps": eps, "n": cfg.n, "conditions": [], "models": {},
                               "pca_fit_on": "clean features of each model"}  # fmt: skip
    projections: dict[str, dict[str, torch.Tensor]] = {}
    for v in victims:
        clf = v.module.classifier
        embed = clf.embed if isinstance(clf, WNLLNet) else clf.features  # type: ignore[union-attr]
        feats, correct = _collect(cfg, eps, v.model, clf, v.module.view(gradient=gradient).eval(),  # type: ignore[arg-type]
                                  embed, purifier, batches, attack)  # type: ignore[arg-type]  # fmt: skip
        summary["conditions"] = list(feats)
        summary["models"][v.model], projections[v.model] = _model_summary(feats, correct, y)
        for c in feats:
            _record(store, v.model, c, eps, correct[c], batches.indices, settings)
    summary["same_features"] = _same_features(victims)
    out = Path(out_dir)
    (out / "feature_geometry.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    from wnll_art.plots import feature_planes

    save_png(feature_planes(projections, summary, y, gradient=gradient), out / "feature_geometry.png")
    _markdown(summary, out / "feature_geometry.md")
    return summary


def _same_features(victims: Sequence[Victim]) -> bool:
    """Whether the WNLL model embeds as the softmax model: no buffer block and the same backbone weights."""
    wnll = next((v.module.classifier for v in victims if isinstance(v.module.classifier, WNLLNet)), None)
    softmax_clf = next(v.module.classifier for v in victims if v.model == "softmax")
    return bool(  # the same backbone weights (each classifier is loaded on its own)
        wnll is not None and wnll.buffer is None
        and all(torch.equal(a, b) for a, b in zip(wnll.backbone.state_dict().values(),
                                                  softmax_clf.state_dict().values(), strict=True)))  # fmt: skip


def _model_summary(
    feats: dict[str, torch.Tensor], correct: dict[str, list[int]], y: torch.Tensor
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One model's summary (PCA fitted on its clean features; per condition accuracy and centroid
    statistics in 64-D and in the PC plane) and its ``{condition: (N, 2) projection}``."""
    mean, axes, ratio = principal_axes(feats["clean"])
    clean_proj = (feats["clean"] - mean) @ axes
    summary: dict[str, Any] = {"feature_dim": int(feats["clean"].shape[1]),
                               "explained_variance_ratio": ratio.tolist(), "conditions": {}}  # fmt: skip
    projections = {}
    for c, f in feats.items():
        proj = projections[c] = (f - mean) @ axes
        stats, stats_2d = centroid_stats(f, y), centroid_stats(proj, y)
        centred = (f - mean).pow(2).sum()
        summary["conditions"][c] = {
            "accuracy": sum(correct[c]) / len(correct[c]),
            "variance_in_pc_plane": float(proj.pow(2).sum() / centred) if centred > 0 else None,
            "mean_shift_from_clean": float((f - feats["clean"]).norm(dim=1).mean()),
            "mean_shift_from_clean_2d": float((proj - clean_proj).norm(dim=1).mean()),
            **stats, "centroid_distance_mean_2d": stats_2d["centroid_distance_mean"],
            "separation_ratio_2d": stats_2d["separation_ratio"],
        }  # fmt: skip
    return summary, projections


def _record(store: RunStore, model: str, condition: str, eps: float, correct: list[int], indices: list[int],
            settings: dict[str, Any]) -> None:  # fmt: skip
    defence = "tvm" if condition.startswith("tvm") else "none"
    attack = "ifgsm" if condition.endswith("ifgsm") else "clean"
    store.put(CellRecord(model=model, defence=defence, attack=attack, eps=eps if attack != "clean" else 0.0,
                         protocol="geometry", accuracy=sum(correct) / len(correct), n=len(correct),
                         per_image_correct=correct, image_indices=indices, settings=settings))  # fmt: skip


def _markdown(summary: dict[str, Any], path: Path) -> None:
    rows = []
    for model, ms in summary["models"].items():
        for c, st in ms["conditions"].items():
            ratio = "-" if st["separation_ratio"] is None else f"{st['separation_ratio']:.3f}"
            rows.append([model, c, pct(st["accuracy"]), f"{st['centroid_distance_mean']:.3f}",
                         f"{st['within_class_spread_mean']:.3f}", ratio, f"{st['mean_shift_from_clean']:.3f}"])  # fmt: skip
    head = ["model", "condition", "accuracy (%)", "centroid distance", "within-class spread", "separation ratio",
            "shift from clean"]  # fmt: skip
    lines = [f"# Feature geometry (the paper's Fig. 4), IFGSM eps={summary['eps']:g}, n={summary['n']}", "",
             *markdown_table(head, rows), "", "Explained variance of the two PCs (clean): "
             + "; ".join(f"{m}: {', '.join(f'{100 * v:.1f}%' for v in ms['explained_variance_ratio'])}"
                         for m, ms in summary["models"].items()),
             "Figure: feature_geometry.png; numbers: feature_geometry.json; accuracy records: cells/*.json.", ""]  # fmt: skip
    write_text(path, lines)


# ------------------------------------------------------------------------------ the paper's Fig. 4 (--paper-fig4)
def class_draw(
    labels: torch.Tensor, classes: Sequence[int], per_class: int, *, generator: torch.Generator
) -> torch.Tensor:
    """Indices of ``per_class`` images of each of ``classes``, drawn without replacement by ``generator``.

    Args:
        labels: ``(N,)`` int64 labels (CPU); classes: the classes drawn, in this order.
        per_class: Images drawn per class; generator: the only source of randomness.

    Returns:
        ``(len(classes) * per_class,)`` int64 indices into ``labels``, class by class, then by draw
        (:func:`~wnll_art.wnll.template.balanced_template` drawing from the indices).
    """
    chosen = torch.nonzero(torch.isin(labels, torch.tensor(list(classes)))).flatten()
    position = {c: i for i, c in enumerate(classes)}
    remapped = torch.tensor([position[int(c)] for c in labels[chosen]], dtype=torch.int64)
    index, _ = balanced_template(chosen, remapped, per_class, generator=generator, num_classes=len(classes))
    return index


def project_on_pcs(
    feats: Mapping[str, torch.Tensor], *, fit_on: str
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every condition's features on the first two principal axes of one condition's features.

    Args:
        feats: ``{condition: (N_c, D)}`` features; fit_on: the condition the axes are fitted on (centred).

    Returns:
        ``{condition: (N_c, 2)}`` coordinates and the explained-variance ratio ``(2,)`` of the fitted features.
    """
    mean, axes, ratio = principal_axes(feats[fit_on])
    return {c: (f - mean) @ axes for c, f in feats.items()}, ratio


def fig4_summary(
    feats: Mapping[str, torch.Tensor], predicted: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:  # fmt: skip
    """One model's Fig. 4 numbers: axes fitted on the ``"train"`` features; per condition the accuracy and the
    class statistics of :func:`centroid_stats` in ``D`` dimensions and in the plane.

    Args:
        feats: ``{condition: (N_c, D)}`` features, ``"train"`` among them.
        predicted: ``{condition: (N_c,)}`` predicted labels.
        labels: ``{condition: (N_c,)}`` true labels.

    Returns:
        The summary (``feature_dim``, ``explained_variance_ratio``, ``conditions``) and ``{condition: (N_c, 2)}``.
    """
    projections, ratio = project_on_pcs(feats, fit_on="train")
    out: dict[str, Any] = {"feature_dim": int(feats["train"].shape[1]), "explained_variance_ratio": ratio.tolist(),
                           "conditions": {}}  # fmt: skip
    for c, f in feats.items():
        stats, plane = centroid_stats(f, labels[c]), centroid_stats(projections[c], labels[c])
        out["conditions"][c] = {"n": int(f.shape[0]), "accuracy": float((predicted[c] == labels[c]).double().mean()),
                                "separation_ratio": stats["separation_ratio"],
                                "separation_ratio_2d": plane["separation_ratio"],
                                "centroid_distance_mean": stats["centroid_distance_mean"],
                                "within_class_spread_mean": stats["within_class_spread_mean"]}  # fmt: skip
    return out, projections


def _fig4_features(
    model: str, clf: torch.nn.Module, images: Mapping[str, torch.Tensor], y_test: torch.Tensor, *, eps: float, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
    """Features (float64, CPU) and predicted labels of ``images["train"]``, ``images["clean"]`` and the ``paper``
    protocol's FGSM of the clean test images (crafted on ``clf`` as the engine crafts it, one batch)."""
    spec = SPECS["paper:fgsm"].build(PlanOptions())
    victim = Victim(model, "none", Defence(clf).eval())  # eval: the attack puts back the mode it found
    x_adv = adversarial(spec, victim, images["clean"], y_test, eps=eps, raw_cache={},
                        seed=derive_seed(seed, model, "none", spec.name, 0))  # fmt: skip
    embed = clf.embed if isinstance(clf, WNLLNet) else clf.features  # type: ignore[union-attr]
    conditions = {"train": images["train"], "clean": images["clean"], "fgsm": x_adv}
    with torch.no_grad():
        feats = {c: torch.cat([embed(x[i : i + 250]) for i in range(0, len(x), 250)]).double()  # type: ignore[operator]
                 for c, x in conditions.items()}  # fmt: skip
        predicted = {c: predict_labels(clf, x) for c, x in conditions.items()}
    return feats, predicted


def paper_fig4(
    *, out_dir: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None, eps: float = 0.02, n_train: int = 1000, n_test: int = 100,
    seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The paper's Fig. 4: airplane / automobile features of :data:`FIG4_MODELS`, on PCs of the training features.

    Args:
        out_dir: Where ``paper_fig4.png`` and ``paper_fig4.json`` (the summary, returned) are written.
        data_root: CIFAR-10 root. weights: The public ResNet-56 file (sha256-checked).
        eps: The FGSM radius (the paper: 0.02).
        n_train: Training images (half per class), drawn with a generator seeded from ``seed``.
        n_test: Test images (half per class), likewise.
        seed: The draws' and the attack's seed.

    Raises:
        ValueError: ``n_train`` or ``n_test`` not a positive multiple of the two classes.
    """
    from wnll_art.data import CIFAR10_CLASSES, load_cifar10
    from wnll_art.defence import load_classifier

    if n_train < 2 or n_train % 2 or n_test < 2 or n_test % 2:
        raise ValueError(f"n_train and n_test must be even (two classes), got {n_train}, {n_test}")
    (x_tr, y_tr), (x_te, y_te) = load_cifar10(data_root, "train"), load_cifar10(data_root, "test")
    idx = {"train": class_draw(y_tr, FIG4_CLASSES, n_train // 2, generator=seed_generator(derive_seed(seed, "fig4", "train"))),
           "test": class_draw(y_te, FIG4_CLASSES, n_test // 2, generator=seed_generator(derive_seed(seed, "fig4", "test")))}  # fmt: skip
    images = {"train": x_tr[idx["train"]].float() / 255, "clean": x_te[idx["test"]].float() / 255}
    labels = {"train": y_tr[idx["train"]], "clean": y_te[idx["test"]], "fgsm": y_te[idx["test"]]}
    summary: dict[str, Any] = {"eps": eps, "n": n_test, "n_train": n_train, "seed": seed, "attack": "paper:fgsm",
                               "classes": [CIFAR10_CLASSES[c] for c in FIG4_CLASSES], "conditions": ["train", "clean", "fgsm"],
                               "pca_fit_on": "training features of each model", "models": {},
                               "test_indices": idx["test"].tolist(), "train_indices": idx["train"].tolist()}  # fmt: skip
    projections = {}
    for label, (name, head) in FIG4_MODELS.items():
        clf = load_classifier(name, head=head, data_root=data_root, weights=weights)  # type: ignore[arg-type]
        feats, predicted = _fig4_features(label, clf, images, labels["clean"], eps=eps, seed=seed)
        summary["models"][label], projections[label] = fig4_summary(feats, predicted, labels)
        summary["models"][label]["zoo_name"] = name
    from wnll_art.plots import feature_planes

    title = (f"Fig. 4 (Wang et al. 2018): airplane vs automobile, 64-D features on the first two PCs of each "
             f"model's training features\n(a) {n_train} training, (b) {n_test} clean test, (c) FGSM (paper protocol) "
             f"eps={eps:g} test images")  # fmt: skip
    out = Path(out_dir)
    save_png(feature_planes(projections, summary, labels, gradient="surrogate", title=title, fitted_on="training"),
             out / "paper_fig4.png")  # fmt: skip
    atomic_write(out / "paper_fig4.json", json.dumps(summary, indent=1, sort_keys=True))
    return summary


def _fig4_lines(summary: Mapping[str, Any]) -> list[str]:
    """One printed line per model and condition: accuracy and class-separation ratio (64-D and plane)."""
    return [f"{model} {c}: accuracy {100 * st['accuracy']:.1f}%, separation ratio {st['separation_ratio']:.3f} "
            f"(64-D) / {st['separation_ratio_2d']:.3f} (PC plane)"
            for model, ms in summary["models"].items() for c, st in ms["conditions"].items()]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs :func:`feature_geometry` (or :func:`paper_fig4` with ``--paper-fig4``); returns the
    exit status."""
    from wnll_art._argparse import positive_int, unit_float
    from wnll_art.evaluation.parser import config_from_args, run_script, script_parser

    p = script_parser(PROG, __doc__ or "", n=500, eps=(0.02,), steps=10, out="results/feature_geometry")
    p.add_argument(
        "--step-fraction", type=unit_float, default=0.25, help="IFGSM step size as a fraction of eps"
    )
    p.add_argument(
        "--gradient", choices=("exact", "surrogate"), default="exact", help="WNLL gradient of the IFGSM"
    )
    p.add_argument("--paper-fig4", action="store_true",
                   help="the paper's Fig. 4 instead (two classes, FGSM): OUT/paper_fig4.png and .json")  # fmt: skip
    p.add_argument("--fig4-train", type=positive_int, default=1000, help="--paper-fig4: training images")
    p.add_argument("--fig4-test", type=positive_int, default=100, help="--paper-fig4: test images")
    args = p.parse_args(argv)
    if args.paper_fig4 and len(args.eps) != 1:
        p.error(f"--paper-fig4 takes one eps value, got {args.eps}")

    def body() -> None:
        if args.paper_fig4:
            summary = paper_fig4(out_dir=args.out, data_root=args.data_root, weights=args.weights, eps=args.eps[0],
                                 n_train=args.fig4_train, n_test=args.fig4_test, seed=args.seed)  # fmt: skip
            print("\n".join(_fig4_lines(summary)))
            return
        feature_geometry(config_from_args(args), out_dir=args.out, data_root=args.data_root, weights=args.weights,
                         steps=args.steps, step_fraction=args.step_fraction, gradient=args.gradient)  # fmt: skip
        print((Path(args.out) / "feature_geometry.md").read_text())

    return run_script(body, PROG, args, lock=not args.paper_fig4)


if __name__ == "__main__":
    sys.exit(main())
