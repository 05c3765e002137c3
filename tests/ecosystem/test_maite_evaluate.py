"""``to_maite`` / ``maite_cifar10`` inside MAITE's own ``evaluate`` (and HEART's metric), where they are installed.

CI runs this tier in its second environment (``.ci/run``: ``.[heart,armory-deps]``); elsewhere it is skipped.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

from wnll_art.adapters.maite import Cifar10Dataset, to_maite
from wnll_art.wnll.model import WNLLNet

maite_tasks = pytest.importorskip("maite.tasks", reason="MAITE is not installed (pip install -e '.[heart]')")
pytestmark = pytest.mark.ecosystem


class Accuracy:
    """A MAITE image-classification metric: arg-max of the scores against one-hot or integer targets."""

    metadata: dict[str, Any] = {"id": "accuracy"}

    def __init__(self) -> None:
        self.correct = self.total = 0

    def reset(self) -> None:
        self.correct = self.total = 0

    def update(self, preds: Any, targets: Any, *args: Any) -> None:  # maite 0.10 adds the datum metadata
        predicted = np.stack([np.asarray(p) for p in preds]).argmax(1)
        truth = np.stack([np.asarray(t) for t in targets])
        truth = truth.argmax(1) if truth.ndim == 2 else truth
        self.correct += int((predicted == truth).sum())
        self.total += len(truth)

    def compute(self) -> dict[str, float]:
        return {"accuracy": self.correct / self.total}


def _dataset(target: str) -> Cifar10Dataset:
    images = torch.randint(
        0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    return Cifar10Dataset(images, torch.arange(16) % 10, name="synthetic", start=0, target=target)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["one_hot", "label"])
def test_evaluate_scores_whole_wnll_batches(tiny_wnll_net: WNLLNet, target: str) -> None:
    model, dataset = to_maite(tiny_wnll_net), _dataset(target)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # batches of 8 = wnll_batch_size: no small-batch warning
        result, preds, _ = maite_tasks.evaluate(model=model, dataset=dataset, metric=Accuracy(), batch_size=8,
                                                return_preds=True)  # fmt: skip
    assert model.observed_batches == {8: 2}
    x = torch.from_numpy(np.stack([dataset[i][0] for i in range(16)]))
    with torch.no_grad():
        expected = torch.cat([tiny_wnll_net(x[:8]), tiny_wnll_net(x[8:])]).numpy()
    np.testing.assert_array_equal(np.stack([p for batch in preds for p in batch]), expected)
    labels = np.arange(16) % 10
    assert result["accuracy"] == pytest.approx(float((expected.argmax(1) == labels).mean()))


def test_evaluates_default_batch_of_one_warns(tiny_wnll_net: WNLLNet) -> None:
    with pytest.warns(UserWarning, match="to_maite.*1 image"):
        maite_tasks.evaluate(model=to_maite(tiny_wnll_net), dataset=_dataset("label"), metric=Accuracy())


def test_heart_accuracy_metric_needs_micro_average(tiny_wnll_net: WNLLNet) -> None:
    metrics = pytest.importorskip("heart_library.metrics", reason="heart-library is not installed")
    model, dataset = to_maite(tiny_wnll_net), _dataset("label")
    mine, _, _ = maite_tasks.evaluate(model=model, dataset=dataset, metric=Accuracy(), batch_size=8)
    micro = metrics.HeartAccuracyMetric(task="multiclass", num_classes=10, average="micro")
    heart, _, _ = maite_tasks.evaluate(model=model, dataset=dataset, metric=micro, batch_size=8)
    assert heart["accuracy"] == pytest.approx(mine["accuracy"])
