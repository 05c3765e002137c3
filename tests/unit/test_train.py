"""Training with the WNLL activation (wnll_art.train): steps, augmentation, caches, exact resume (fast)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wnll_art import load_cifar10
from wnll_art.models.resnet import CifarResNet
from wnll_art.train import (
    TrainConfig,
    TVMSettings,
    cached_features,
    lr_factor,
    random_crop_flip,
    train,
    tvm_images,
    zoo_entry_from_record,
)
from wnll_art.train.cli import add_train_parser, run_train
from wnll_art.train.steps import draw_template_indices, linear_step, wnll_loss, wnll_step
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.solver import wnll_interpolate
from wnll_art.zoo import ZOO, load_pretrained

SMALL = {"k": 6, "sigma_neighbor": 4}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The steps are tiny: one thread is faster and kinder to a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_subset(cifar_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 200 CIFAR-10 training images (uint8) and labels."""
    x, y = load_cifar10(cifar_root, split="train")
    return x[:200].clone(), y[:200].clone()


def _tiny_config(**overrides: object) -> TrainConfig:
    options: dict[str, object] = {
        "epochs": 3, "batch_size": 50, "lr": 0.05, "num_blocks": 1, "train_subset": 200, "test_subset": 100,
        "train_template_size": 50, "eval_template_size": 50, "wnll_batch_size": 100, "eval_every": 0,
        "final_eval": False, **SMALL,
    }  # fmt: skip
    options.update(overrides)
    return TrainConfig(**options)  # type: ignore[arg-type]


def _tiny_net(images: torch.Tensor, labels: torch.Tensor, **kwargs: object) -> WNLLNet:
    torch.manual_seed(0)
    backbone = CifarResNet(1, 10, check_inputs=False)
    idx = draw_template_indices(labels, 5, generator=torch.Generator().manual_seed(0), num_classes=10)
    return WNLLNet(backbone, images[idx], labels[idx], buffer_dim=32, **SMALL, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ augmentation
def test_augmentation_matches_reference_and_is_reproducible() -> None:
    x = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    out1 = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    out2 = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    out3 = random_crop_flip(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(x, before)  # input untouched
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert float(out1.min()) >= 0.0 and float(out1.max()) <= 1.0
    # reference: the same draws applied image by image
    g = torch.Generator().manual_seed(5)
    offsets = torch.randint(0, 9, (6, 2), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    for i in range(6):
        dy, dx = offsets[i].tolist()
        ref = F.pad(x[i], (4, 4, 4, 4))[:, dy : dy + 12, dx : dx + 12]
        ref = ref.flip(2) if flips[i] else ref
        assert torch.equal(out1[i], ref), i
    assert torch.equal(random_crop_flip(x, generator=torch.Generator(), padding=0, flip=False), x)


def test_augmentation_rejects_bad_arguments() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(TypeError, match="generator"):
        random_crop_flip(x, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(x, generator=torch.Generator(), padding=-1)
    with pytest.raises(ValueError, match="must lie in"):
        random_crop_flip(x * 3, generator=torch.Generator())


# ------------------------------------------------------------------------------------------- steps
def test_template_draw_is_balanced_and_excludes_batch() -> None:
    labels = torch.arange(100) % 10
    exclude = torch.arange(0, 40)
    idx = draw_template_indices(labels, 4, generator=torch.Generator().manual_seed(0), num_classes=10,
                                exclude=exclude)  # fmt: skip
    assert torch.bincount(labels[idx], minlength=10).tolist() == [4] * 10
    assert not bool(torch.isin(idx, exclude).any()) and idx.unique().numel() == 40


def test_surrogate_gradient_is_wnll_minus_onehot() -> None:
    """Surrogate WNLL step: d loss / d linear logits = (u - e_y) / B, so it depends on the WNLL output."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 8, generator=g) * 3
    t_labels, labels = torch.arange(40) % 10, torch.randint(0, 10, (12,), generator=g)
    template = centers[t_labels] + torch.randn(40, 8, generator=g)
    feats = (centers[labels] + 2 * torch.randn(12, 8, generator=g)).requires_grad_()
    head = nn.Linear(8, 10)
    loss, u = wnll_loss(feats, template, t_labels, labels, head=head, gradient="surrogate", options=SMALL,
                        num_classes=10)  # fmt: skip
    loss.backward()
    expect_u = wnll_interpolate(feats.detach(), template, t_labels, num_classes=10, **SMALL)  # type: ignore[arg-type]
    torch.testing.assert_close(u, expect_u)
    torch.testing.assert_close(loss, F.nll_loss(torch.log(expect_u.clamp(1e-6, 1)), labels))
    expect_grad = (expect_u - F.one_hot(labels, 10)).mean(0)
    torch.testing.assert_close(head.bias.grad, expect_grad, atol=1e-5, rtol=1e-4)
    softmax_grad = (F.softmax(head(feats), 1) - F.one_hot(labels, 10)).mean(0).detach()
    assert not torch.allclose(head.bias.grad, softmax_grad, atol=1e-3)  # not just a second CE step


@pytest.mark.parametrize("gradient", ["surrogate", "exact"])
def test_wnll_step_updates_backbone(gradient: str, train_subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = train_subset
    net = _tiny_net(images, labels).train()
    x, y = images[:40].float() / 255, labels[:40]
    t_idx = draw_template_indices(labels, 5, generator=torch.Generator().manual_seed(1), num_classes=10,
                                  exclude=torch.arange(40))  # fmt: skip
    before = {k: v.clone() for k, v in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss, correct = wnll_step(
        embed=net.embed, head=net.linear_head, optimizer=opt, inputs=x, labels=y,
        template_inputs=images[t_idx].float() / 255, template_labels=labels[t_idx], gradient=gradient,  # type: ignore[arg-type]
        options=SMALL, num_classes=10,
    )  # fmt: skip
    assert loss > 0 and 0 <= correct <= 40
    changed = {k for k, v in net.named_parameters() if not torch.equal(v, before[k])}
    assert "backbone.conv1.weight" in changed and "backbone.layer3.0.conv2.weight" in changed
    assert "buffer.0.weight" in changed
    assert "backbone.linear.weight" not in changed  # the backbone's own head is not in the WNLL path


def test_alternating_steps_lower_training_loss(train_subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = train_subset
    x = images.float() / 255
    net = _tiny_net(images, labels).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = float(F.cross_entropy(net.linear_logits(x), labels))
    for _ in range(20):
        b = torch.randperm(200, generator=gen)[:50]
        linear_step(embed=net.embed, head=net.linear_head, optimizer=opt, inputs=x[b], labels=labels[b])
        t_idx = draw_template_indices(labels, 5, generator=gen, num_classes=10, exclude=b)
        wnll_step(
            embed=net.embed, head=net.linear_head, optimizer=opt, inputs=x[b], labels=labels[b],
            template_inputs=x[t_idx], template_labels=labels[t_idx], gradient="surrogate", options=SMALL,
            num_classes=10,
        )  # fmt: skip
    with torch.no_grad():
        after = float(F.cross_entropy(net.linear_logits(x), labels))
    assert after < before - 0.02, (before, after)


def test_exact_wnll_steps_lower_the_wnll_loss(train_subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = train_subset
    x = images.float() / 255
    net = _tiny_net(images, labels).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    t_idx = draw_template_indices(labels, 5, generator=torch.Generator().manual_seed(0), num_classes=10,
                                  exclude=torch.arange(60))  # fmt: skip
    losses = [
        wnll_step(
            embed=net.embed, head=net.linear_head, optimizer=opt, inputs=x[:60], labels=labels[:60],
            template_inputs=x[t_idx], template_labels=labels[t_idx], gradient="exact", options=SMALL,
            num_classes=10,
        )[0]
        for _ in range(10)
    ]  # fmt: skip
    assert sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses


def test_lr_schedules() -> None:
    cfg = TrainConfig(epochs=200)
    assert [lr_factor(e, cfg) for e in (0, 99, 100, 149, 150, 199)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert lr_factor(0, TrainConfig(epochs=1)) == 1.0  # no decay before the first epoch
    assert [lr_factor(e, TrainConfig(epochs=4)) for e in range(4)] == pytest.approx([1, 1, 0.1, 0.01])
    authors = TrainConfig(lr_schedule="authors")
    assert [lr_factor(e, authors) for e in (0, 79, 80, 119, 120, 160)] == [1, 1, 0.25, 0.25, 0.125, 0.0625]


# ------------------------------------------------------------------------------ train() end to end
def test_train_resume_is_bit_identical(cifar_root: Path, tmp_path: Path) -> None:
    cfg = _tiny_config()
    straight = train(cfg, out_dir=tmp_path / "a", data_root=cifar_root, progress=False)
    part = train(cfg, out_dir=tmp_path / "b", data_root=cifar_root, stop_after_epoch=1, progress=False)
    assert part.epochs_done == 1 and part.final_weights is None
    resumed = train(cfg, out_dir=tmp_path / "b", data_root=cifar_root, resume=True, progress=False)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    log_a = [json.loads(s) for s in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(s) for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log_b] == [1, 2, 3]
    assert [r["train_loss_wnll"] for r in log_a] == [r["train_loss_wnll"] for r in log_b]
    assert {"images_per_s", "epoch_time_s", "lr", "train_acc_wnll"} <= log_a[0].keys()
    # a changed config is refused on resume; a different seed gives different weights
    with pytest.raises(ValueError, match="lr"):
        train(
            _tiny_config(lr=0.01), out_dir=tmp_path / "b", data_root=cifar_root, resume=True, progress=False
        )
    other = train(
        _tiny_config(seed=1, epochs=1), out_dir=tmp_path / "c", data_root=cifar_root, progress=False
    )
    assert not torch.equal(other.model.state_dict()["buffer.0.weight"], a["buffer.0.weight"])


def test_final_model_registers_in_the_zoo(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = train(_tiny_config(epochs=1, final_eval=True), out_dir=tmp_path, data_root=cifar_root,
                   progress=False)  # fmt: skip
    assert result.zoo_record is not None and result.final_weights is not None
    assert result.test_accuracy is not None and 0.0 <= result.test_accuracy <= 100.0
    entry = zoo_entry_from_record(result.zoo_record)
    assert entry.reference_accuracy == pytest.approx(result.test_accuracy)
    monkeypatch.setitem(ZOO, "tiny_wnll", entry)
    loaded = load_pretrained("tiny_wnll", weights=result.final_weights)
    assert isinstance(loaded, WNLLNet) and loaded.settings() == result.model.settings()
    x = load_cifar10(cifar_root, split="test")[0][:100].float() / 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model(x))
    assert 100.0 * float((loaded(x).argmax(1) == load_cifar10(cifar_root, split="test")[1][:100]).float().mean()) \
        == pytest.approx(result.test_accuracy)  # fmt: skip


# ------------------------------------------------------------------------------------------ caches
def _fake_tvm(calls: list[int]) -> Callable[..., torch.Tensor]:
    """A stand-in TVM that records its batch sizes and uses the generator like the real one."""

    def tvm(
        x: torch.Tensor, *, generator: torch.Generator, prob: float, lamb: float, **_: object
    ) -> torch.Tensor:
        calls.append(x.shape[0])
        noise = torch.rand(x.shape, generator=generator)
        return (x * (1 - lamb) + lamb * noise * prob).clamp(0, 1)

    return tvm


def test_tvm_cache_reused_and_invalidated(
    train_subset: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    images = train_subset[0][:60]
    calls: list[int] = []
    settings = TVMSettings(chunk_size=25)
    first = tvm_images(images, settings=settings, cache_dir=tmp_path, tvm_fn=_fake_tvm(calls), progress=False)
    assert calls == [25, 25, 10] and first.dtype == torch.uint8 and first.shape == images.shape
    again = tvm_images(images, settings=settings, cache_dir=tmp_path, tvm_fn=_fake_tvm(calls), progress=False)
    assert calls == [25, 25, 10] and torch.equal(again, first)  # reused, not recomputed
    changed = TVMSettings(chunk_size=25, lamb=0.25)
    third = tvm_images(images, settings=changed, cache_dir=tmp_path, tvm_fn=_fake_tvm(calls), progress=False)
    assert len(calls) == 6 and not torch.equal(third, first)  # a setting changed: recomputed
    tvm_images(images[:50], settings=settings, cache_dir=tmp_path, tvm_fn=_fake_tvm(calls), progress=False)
    assert len(calls) == 8  # other data: recomputed


def test_tvm_cache_with_the_real_solver(
    train_subset: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    """The default TVM is wnll_art.tvm.total_variation_minimize, called with the settings."""
    pytest.importorskip("wnll_art.tvm")
    images = train_subset[0][:20]
    out = tvm_images(images, settings=TVMSettings(chunk_size=10), cache_dir=tmp_path, progress=False)
    assert out.dtype == torch.uint8 and out.shape == images.shape and not torch.equal(out, images)
    again = tvm_images(
        images, settings=TVMSettings(chunk_size=10, seed=1), cache_dir=tmp_path, progress=False
    )
    assert not torch.equal(again, out)  # another mask seed, other masks


def test_train_on_original_plus_tvm_uses_the_cache(cifar_root: Path, tmp_path: Path) -> None:
    calls: list[int] = []
    cfg = _tiny_config(epochs=1, data="original+tvm", tvm=TVMSettings(chunk_size=100))
    kw = {
        "data_root": cifar_root,
        "cache_dir": tmp_path / "cache",
        "progress": False,
        "tvm_fn": _fake_tvm(calls),
    }
    first = train(cfg, out_dir=tmp_path / "a", **kw)  # type: ignore[arg-type]
    assert calls == [100, 100] and first.metrics[0]["images"] == 400  # 200 originals + 200 TVM copies
    train(cfg, out_dir=tmp_path / "b", **kw)  # type: ignore[arg-type]
    assert calls == [100, 100]


def test_feature_cache_keyed_by_weights(tmp_path: Path) -> None:
    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def features(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x.mean(dim=(2, 3))

    images = torch.randint(
        0, 256, (30, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    net = Counting()
    kw = {"cache_dir": tmp_path, "batch_size": 10, "progress": False}
    f1 = cached_features(net, images, weights_sha256="a" * 64, **kw)  # type: ignore[arg-type]
    f2 = cached_features(net, images, weights_sha256="a" * 64, **kw)  # type: ignore[arg-type]
    assert net.calls == 3 and torch.equal(f1, f2)
    torch.testing.assert_close(f1, images.float().mean(dim=(2, 3)) / 255)
    cached_features(net, images, weights_sha256="b" * 64, **kw)  # type: ignore[arg-type]
    assert net.calls == 6


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_parses_and_reports_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="wnll-art")
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--out", "x", "--mode", "full", "--data", "original+tvm",
                              "--gradient", "exact", "--epochs", "2", "--template-size", "55"])  # fmt: skip
    assert (args.mode, args.data, args.gradient, args.epochs, args.func) == (
        "full",
        "original+tvm",
        "exact",
        2,
        run_train,
    )
    assert run_train(args) == 2
    assert "template_size" in capsys.readouterr().err
