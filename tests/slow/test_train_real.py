"""CPU head fine-tune (buffer block + heads) on the real pretrained ResNet-56 (slow tier).

Budget: backbone features of the first 5,000 training images (the fine-tune pool and template source)
and of all 10,000 test images are computed once into a temporary cache (about 15,000 ResNet-56 forward
passes, 1-3 minutes on two cores); the fine-tune itself takes seconds. The full 50,000-image run is what
``wnll-art train --mode head`` does by default.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wnll_art import load_cifar10
from wnll_art.train import HeadConfig, cached_features, train, zoo_entry_from_record
from wnll_art.train.augment import to_unit_float
from wnll_art.zoo import ZOO, load_pretrained

pytestmark = pytest.mark.slow

TRAIN_SUBSET = 5000


def test_head_finetune_wnll_accuracy(
    cifar_root: Path, hub_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    # a random buffer block and linear head (not the pretrained head, whose 93 % a trainer that does nothing
    # would keep): the linear head starts at chance, the WNLL on the random buffer's features near 92 %
    config = HeadConfig(epochs=4, train_subset=TRAIN_SUBSET, buffer_init="random", lr=0.05)
    result = train(config, out_dir=tmp_path, data_root=cifar_root, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert result.test_accuracy is not None and result.linear_accuracy is not None
    print(
        f"head fine-tune: WNLL {result.test_accuracy:.2%} (before {records[0]['test_acc_wnll']:.2%}), "
        f"linear {result.linear_accuracy:.2%} on 10,000 test images, {result.wall_s:.0f} s"
    )
    assert records[0]["test_acc_linear"] < 0.3, records[0]  # measured before training: chance
    assert result.linear_accuracy >= 0.91, result.linear_accuracy  # 93.4 % measured
    assert result.test_accuracy >= 0.92, result.test_accuracy  # 93.1 % measured
    assert result.test_accuracy > records[0]["test_acc_wnll"] + 0.003, (result.test_accuracy, records[0])
    assert [r["epoch"] for r in records] == list(range(config.epochs + 1))
    # the accuracy was measured on cached features; the model's own forward on images agrees
    x, y = load_cifar10(cifar_root, split="test")
    model = result.model.eval()
    with torch.inference_mode():
        pred = model(to_unit_float(x[:500])).argmax(1)
        test_feats = cached_features(
            model.backbone,
            x,
            cache_dir=tmp_path / "cache",
            weights_sha256=ZOO["resnet56"].sha256,
            progress=False,
        )[:500]
        template_feats = model.backbone.features(model.template_images)  # type: ignore[operator]
        u = model.interpolate(model.buffer(test_feats), model.buffer(template_feats))  # type: ignore[misc]
    assert torch.equal(u.argmax(1), pred)
    assert float((pred == y[:500]).float().mean()) >= 0.9
    # the zoo record round-trips through load_pretrained (sha256-checked)
    assert result.zoo_record is not None
    entry = zoo_entry_from_record(result.zoo_record)
    monkeypatch.setitem(ZOO, "wnll_resnet56_head", entry)
    loaded = load_pretrained("wnll_resnet56_head", weights=result.final_weights)
    assert entry.reference_accuracy == pytest.approx(100 * result.test_accuracy)  # ZooEntry: percent
    with torch.inference_mode():
        assert torch.equal(loaded(to_unit_float(x[:500])).argmax(1), pred)
