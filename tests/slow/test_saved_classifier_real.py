"""The full defence (pretrained ResNet-56, post-hoc WNLL head, TVM) saved and loaded back in one call each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


def test_full_defence_round_trip(hub_dir: Path, cifar_root: Path, test_set: tuple[torch.Tensor, torch.Tensor],
                                 tmp_path: Path) -> None:  # fmt: skip
    from wnll_art import WNLLClassifier, load_defence

    weights = hub_dir / "hub" / "checkpoints" / "resnet56-4bfd9763.th"
    defence = load_defence("resnet56", tvm=True, weights=weights, data_root=cifar_root, wnll_batch_size=16)
    clf = WNLLClassifier(defence)
    folder = clf.save(tmp_path / "resnet56-tvm-wnll")
    back = WNLLClassifier.load(folder)
    assert back.model.settings() == defence.settings()
    x = test_set[0][:16].numpy().astype(np.float32) / 255
    before, after = clf.predict(x), back.predict(x)  # both purifiers draw their first masks from seed 0
    np.testing.assert_array_equal(before, after)
    assert (after.argmax(1) == test_set[1][:16].numpy()).mean() >= 0.6
