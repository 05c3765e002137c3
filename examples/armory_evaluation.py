"""armory-library evaluation of the full defence (TVM purifier -> ResNet-56 -> WNLL head): clean and PGD accuracy.

armory-library 24.6.1 (Two Six Technologies) cannot be installed beside torch 2.13 the ordinary way: it requires
``setuptools<70`` (torch 2.13 requires ``>=77.0.3``; pip: ResolutionImpossible) and ``torchvision`` (PyPI's
torchvision for torch 2.13 is a CUDA build, which fails to import on a CPU-only torch). The workaround, in a
virtual environment of its own:

    python3 -m venv .venv-armory && . .venv-armory/bin/activate
    pip install -c constraints.txt -e ".[armory-deps]"           # armory's other dependencies
    pip install -c constraints.txt --no-deps armory-library==24.6.1
    WNLL_ART_DATA=../shared/data python examples/armory_evaluation.py --weights ../shared/weights/resnet56-4bfd9763.th

(``.[heart,armory-deps]`` in one environment runs both examples.) Two more workarounds happen in this script,
before armory is imported:

- ``MLFLOW_ALLOW_FILE_STORE=true`` (unless set): armory records runs in a file store (``<armory home>/mlruns``),
  which mlflow 3 refuses without it;
- a ``torchvision`` stub in ``sys.modules``: ``armory.data`` imports ``torchvision.ops.box_convert`` at import time
  (used for object detection only). The stub is put there after ``lightning`` and ``torchmetrics`` are imported,
  which look for torchvision and must not find it; calling it raises ``NotImplementedError``.

The evaluation: two chains over the same data and model, ``benign`` and ``pgd`` (ART's PGD through armory's
``ArtEvasionAttack``, on ``wnll_art.WNLLClassifier(defence)``: BPDA through TVM, EOT over 2 TVM draws, exact
gradients through the WNLL solve), scored by torchmetrics' ``MulticlassAccuracy(average="micro")`` (its default,
``"macro"``, is the mean of the per-class recalls). The data is ``wnll_art.maite_cifar10`` (the same MAITE dataset
the HEART example uses) as armory's ``TupleDataset``. One WNLL batch: the defence is built with
``wnll_batch_size=n`` and the data loader and the attack use batches of ``n`` (the WNLL solve is transductive).
Results go to ``--armory-home`` (default: a new temporary folder) as an mlflow store.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import NoReturn

from _common import example_parser, parse_example_args

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

import lightning.pytorch  # noqa: E402,F401  (before the stub: both test for torchvision)
import torchmetrics  # noqa: E402,F401


def _missing(*args: object, **kwargs: object) -> NoReturn:
    raise NotImplementedError("torchvision is a stub here (examples/armory_evaluation.py): armory's object "
                              "detection needs the real torchvision")  # fmt: skip


def stub_torchvision() -> None:
    """Puts a ``torchvision`` with ``ops.box_convert`` / ``ops.box_iou`` (raising) in ``sys.modules`` if the real
    one cannot be imported."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        modules = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.ops")}
        for name, module in modules.items():
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        modules["torchvision.ops"].box_convert = _missing  # type: ignore[attr-defined]
        modules["torchvision.ops"].box_iou = _missing  # type: ignore[attr-defined]
        modules["torchvision"].ops = modules["torchvision.ops"]  # type: ignore[attr-defined]
        sys.modules.update(modules)


stub_torchvision()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from armory import data  # noqa: E402
from armory.dataset import ImageClassificationDataLoader, TupleDataset  # noqa: E402
from armory.engine import EvaluationEngine  # noqa: E402
from armory.evaluation import Dataset, Evaluation, SysConfig  # noqa: E402
from armory.metric import PredictionMetric  # noqa: E402
from armory.model.image_classification import ImageClassifier  # noqa: E402
from armory.perturbation import ArtEvasionAttack  # noqa: E402
from art.attacks.evasion import ProjectedGradientDescent  # noqa: E402
from torchmetrics.classification import MulticlassAccuracy  # noqa: E402

import wnll_art  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = example_parser(__doc__)
    p.add_argument(
        "--armory-home", type=Path, default=None, help="armory's results (default: a temporary folder)"
    )
    return parse_example_args(p, argv)


def build_evaluation(args: argparse.Namespace) -> Evaluation:
    """The armory evaluation: chains ``benign`` and ``pgd`` over one dataset, model and accuracy metric."""
    defence = wnll_art.load_defence(args.model, tvm=True, seed=args.seed, weights=args.weights,
                                    data_root=args.data_root, wnll_batch_size=args.n)  # fmt: skip
    dataset = wnll_art.maite_cifar10(args.data_root, n=args.n, target="label")
    scale = data.Scale(dtype=data.DataType.FLOAT, max=1.0)
    loader = ImageClassificationDataLoader(TupleDataset(dataset, ("image", "label", "datum")),
                                           dim=data.ImageDimensions.CHW, image_key="image", label_key="label",
                                           scale=scale, batch_size=args.n)  # fmt: skip
    model = ImageClassifier(name=f"wnll-art {args.model} + TVM + WNLL", model=defence,
                            inputs_spec=data.TorchImageSpec(dim=data.ImageDimensions.CHW, scale=scale))  # fmt: skip
    pgd = ProjectedGradientDescent(wnll_art.WNLLClassifier(defence), eps=args.eps, eps_step=args.step_size,
                                   max_iter=args.steps, batch_size=args.n, verbose=False)  # fmt: skip
    inputs = data.NumpyImageSpec(dim=data.ImageDimensions.CHW, scale=scale, dtype=np.float32)
    attack = ArtEvasionAttack(name="PGD", attack=pgd, inputs_spec=inputs, use_label_for_untargeted=True)
    evaluation = Evaluation(name="wnll-art", description=f"{args.model} + TVM + WNLL under PGD",
                            author="wnll-art examples")  # fmt: skip
    evaluation.use_dataset(Dataset(name=dataset.metadata["id"], dataloader=loader))
    evaluation.use_model(model)
    evaluation.use_metrics(
        {"accuracy": PredictionMetric(MulticlassAccuracy(num_classes=10, average="micro"))}
    )
    with evaluation.add_chain("benign"):
        pass
    with evaluation.add_chain("pgd") as chain:
        chain.add_perturbation(attack)
    return evaluation


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    home = args.armory_home or Path(tempfile.mkdtemp(prefix="wnll-art-armory-"))
    sysconfig = SysConfig(armory_home=home, dataset_cache=home / "dataset_cache")
    engine = EvaluationEngine(build_evaluation(args), sysconfig=sysconfig, accelerator="cpu",
                              enable_progress_bar=False)  # fmt: skip
    results = engine.run()
    if results is None:
        print("error: armory returned no results", file=sys.stderr)
        return 1
    accuracy = {name: float(child.metrics["accuracy"]) for name, child in results.children.items()}
    print(
        f"model: wnll-art {args.model} + TVM + WNLL (wnll_batch_size {args.n}); data: cifar10-test[0:{args.n}]"
    )
    print(f"armory-library results: {home / 'mlruns'} (run {results.run_id})")
    print(f"clean accuracy: {accuracy['benign']:.3f} ({round(accuracy['benign'] * args.n)}/{args.n})")
    print(f"adversarial accuracy: {accuracy['pgd']:.3f} ({round(accuracy['pgd'] * args.n)}/{args.n}; PGD L-inf "
          f"eps {args.eps:.4f}, {args.steps} steps of {args.step_size:.4f}, BPDA + EOT through TVM)")  # fmt: skip
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
