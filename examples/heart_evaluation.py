"""HEART evaluation of the full defence (TVM purifier -> ResNet-56 -> WNLL head): clean and PGD accuracy.

HEART 0.7 (IBM's hardened extension of ART) works on MAITE protocols. Install it in a virtual environment of its
own (heart-library pins numpy<2, and the newest pyarrow, pulled by its ``datasets``, needs NumPy 2; maite 0.10
passes metadata to ``Metric.update``, which HEART 0.7's metrics do not take; torchmetrics is in HEART's
``pytorch`` extra only, beside torchvision):

    python3 -m venv .venv-heart && . .venv-heart/bin/activate
    pip install -c constraints.txt -e ".[heart]"      # heart-library==0.7.0 maite==0.8.2 torchmetrics pyarrow<20
    WNLL_ART_DATA=../shared/data python examples/heart_evaluation.py --weights ../shared/weights/resnet56-4bfd9763.th

What it uses:

- ``wnll_art.maite_cifar10``: CIFAR-10 test images as a MAITE dataset, with integer labels as targets
  (``target="label"``), which HEART's ``HeartAccuracyMetric`` compares with the arg-max of the scores;
- ``wnll_art.to_maite``: the defence as a MAITE image-classification model (``metadata`` and ``__call__``);
- HEART's ``JaticPyTorchClassifier`` around the same module: the ART estimator the attack differentiates (BPDA
  through TVM, EOT over 2 TVM draws, exact gradients through the WNLL solve, all inside the module);
  ``wnll_art.WNLLClassifier(defence)`` works there too;
- ``JaticAttack(ProjectedGradientDescent(...))`` as MAITE's augmentation in ``maite.tasks.evaluate``;
- ``HeartAccuracyMetric(..., average="micro")``: torchmetrics' default (``"macro"``) is the mean of the per-class
  recalls, not the accuracy.

One WNLL batch: the WNLL solve is transductive (the images of one call are solved together with the template), so
the defence is built with ``wnll_batch_size=n`` and MAITE's ``batch_size`` (default 1: one-image solves) and the
attack's are ``n``. Every call draws fresh TVM masks (``--seed`` fixes the first).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from _common import example_parser, parse_example_args
from art.attacks.evasion import ProjectedGradientDescent
from heart_library.attacks.attack import JaticAttack
from heart_library.estimators.classification.pytorch import JaticPyTorchClassifier
from heart_library.metrics import HeartAccuracyMetric
from maite.tasks import evaluate

import wnll_art


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_example_args(example_parser(__doc__), argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    defence = wnll_art.load_defence(args.model, tvm=True, seed=args.seed, weights=args.weights,
                                    data_root=args.data_root, wnll_batch_size=args.n)  # fmt: skip
    dataset = wnll_art.maite_cifar10(args.data_root, n=args.n, target="label")
    model = wnll_art.to_maite(defence, model_id=f"wnll-art:{args.model}+tvm+wnll")
    estimator = JaticPyTorchClassifier(model=defence, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 32, 32),
                                       nb_classes=10, clip_values=(0.0, 1.0), channels_first=True,
                                       id=model.metadata["id"])  # fmt: skip
    pgd = ProjectedGradientDescent(estimator, eps=args.eps, eps_step=args.step_size, max_iter=args.steps,
                                   batch_size=args.n, verbose=False)  # fmt: skip
    attack = JaticAttack(pgd, norm=np.inf)
    metric = HeartAccuracyMetric(task="multiclass", num_classes=10, average="micro")

    clean, _, _ = evaluate(model=model, dataset=dataset, metric=metric, batch_size=args.n)
    adversarial, _, batches = evaluate(model=model, dataset=dataset, metric=metric, batch_size=args.n,
                                       augmentation=attack, return_augmented_data=True)  # fmt: skip
    x = np.stack([dataset[i][0] for i in range(len(dataset))])
    x_adv = np.concatenate([np.stack(images) for images, _, _ in batches])
    linf = float(np.abs(x_adv - x).max())

    print(f"model: {model.metadata['id']} ({defence.settings()['classifier']} head, TVM "
          f"{defence.tvm.iterations if defence.tvm else 0} iterations, wnll_batch_size {args.n})")  # fmt: skip
    print(f"data: {dataset.metadata['id']}; heart-library HeartAccuracyMetric(average='micro')")
    print(f"clean accuracy: {clean['accuracy']:.3f} ({round(clean['accuracy'] * args.n)}/{args.n})")
    print(f"adversarial accuracy: {adversarial['accuracy']:.3f} ({round(adversarial['accuracy'] * args.n)}/"
          f"{args.n}; PGD L-inf eps {args.eps:.4f}, {args.steps} steps of {args.step_size:.4f}, BPDA + EOT "
          f"through TVM; largest |x_adv - x| {linf:.4f})")  # fmt: skip
    print(f"time: {time.perf_counter() - start:.1f} s")
    if linf > args.eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
        print("error: adversarial images outside the eps ball or [0, 1]", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
