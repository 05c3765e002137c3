"""Training with the WNLL activation (wnll_art.train): steps, augmentation, caches, the loop, exact resume."""

from __future__ import annotations

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
    HeadConfig,
    LoopConfig,
    TrainConfig,
    cached_features,
    lr_factor,
    random_crop_flip,
    train,
    tvm_images,
    zoo_entry_from_record,
)
from wnll_art.train import steps as steps_module
from wnll_art.train.checkpoint import generator_states, restore_generators
from wnll_art.train.steps import draw_template_indices, linear_step, take, wnll_loss, wnll_step
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.score import wnll_scores
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


def _synthetic_net(gradient: str, buffer_dim: int = 8) -> WNLLNet:
    """A WNLLNet whose linear head is ``Linear(buffer_dim, 10)``, for feature-level tests (no data)."""
    torch.manual_seed(0)
    images = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return WNLLNet(CifarResNet(1, 10), images, torch.arange(20) % 10, buffer_dim=buffer_dim,
                   gradient=gradient, **SMALL)  # type: ignore[arg-type]  # fmt: skip


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


def test_template_indices_follow_the_indexed_tensor() -> None:
    """Indices index tensors on other devices (CUDA features, CPU labels) through take(): no device clash.

    No GPU here: the meta device stands in for the training device.
    """
    labels = torch.arange(60) % 10
    idx = draw_template_indices(labels, 2, generator=torch.Generator().manual_seed(0), num_classes=10,
                                exclude=torch.arange(5))  # fmt: skip
    assert idx.device == labels.device and idx.dtype == torch.long
    features = torch.empty(60, 16, device="meta")
    picked = take(features, idx)
    assert picked.device.type == "meta" and picked.shape == (20, 16)
    assert torch.equal(take(labels, idx.to("cpu")), labels[idx])


def test_surrogate_gradient_is_wnll_minus_onehot() -> None:
    """Surrogate WNLL step: d loss / d linear logits = (u - e_y) / B, so it depends on the WNLL output."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 8, generator=g) * 3
    t_labels, labels = torch.arange(40) % 10, torch.randint(0, 10, (12,), generator=g)
    template = centers[t_labels] + torch.randn(40, 8, generator=g)
    feats = (centers[labels] + 2 * torch.randn(12, 8, generator=g)).requires_grad_()
    net = _synthetic_net("surrogate")
    head = net.linear_head
    loss, u = wnll_loss(feats, template, t_labels, labels, net=net)
    loss.backward()
    expect_u = wnll_interpolate(feats.detach(), template, t_labels, num_classes=10, **SMALL)  # type: ignore[arg-type]
    torch.testing.assert_close(u, expect_u)
    torch.testing.assert_close(loss, F.nll_loss(torch.log(expect_u + 1e-6), labels), atol=2e-5, rtol=0)
    expect_grad = (expect_u - F.one_hot(labels, 10)).mean(0)
    torch.testing.assert_close(head.bias.grad, expect_grad, atol=1e-5, rtol=1e-4)
    softmax_grad = (F.softmax(head(feats), 1) - F.one_hot(labels, 10)).mean(0).detach()
    assert isinstance(head.bias.grad, torch.Tensor)
    assert not torch.allclose(head.bias.grad, softmax_grad, atol=1e-3)  # not just a second CE step


def test_exact_loss_scores_with_wnll_scores_even_when_saturated() -> None:
    """The exact loss is cross-entropy of wnll_scores (log(u + floor)); a clamp would zero the gradient
    of the saturated points built here (batch points sitting on another class's cluster)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(10) * 4
    t_labels = torch.arange(40) % 10
    template = centers[t_labels] + 0.3 * torch.randn(40, 10, generator=g)
    labels = torch.arange(12) % 10
    wrong = (labels + 1) % 10
    base = torch.where((torch.arange(12) < 4)[:, None], centers[wrong], centers[labels])
    feats = (base + 0.3 * torch.randn(12, 10, generator=g)).requires_grad_()
    loss, u = wnll_loss(feats, template, t_labels, labels, net=_synthetic_net("exact"))
    u_y = u.gather(1, labels[:, None])
    assert bool(((u_y > 0) & (u_y < 1e-6)).any())  # a point below the floor, with a gradient
    (grad,) = torch.autograd.grad(loss, feats)
    ref_feats = feats.detach().clone().requires_grad_()
    ref_u = wnll_interpolate(ref_feats, template, t_labels, num_classes=10, **SMALL)  # type: ignore[arg-type]
    ref = F.cross_entropy(wnll_scores(ref_u, gradient="exact"), labels)
    (ref_grad,) = torch.autograd.grad(ref, ref_feats)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, ref_grad)
    clamp_u = wnll_interpolate(ref_feats, template, t_labels, num_classes=10, **SMALL)  # type: ignore[arg-type]
    (clamp_grad,) = torch.autograd.grad(F.nll_loss(torch.log(clamp_u.clamp(1e-6, 1.0)), labels), ref_feats)
    assert not torch.allclose(clamp_grad, ref_grad, atol=1e-3)  # the test tells the two scores apart


@pytest.mark.parametrize("gradient", ["surrogate", "exact"])
def test_training_loss_is_the_nll_of_the_model_output(
    gradient: str, train_subset: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Same batch, same template: the WNLL training loss and its gradient are those of WNLLNet's output."""
    images, labels = train_subset
    net = _tiny_net(images, labels, gradient=gradient).eval()
    x, y = images[:40].float() / 255, labels[:40]
    weight = net.get_parameter("buffer.0.weight")
    loss, _ = wnll_loss(net.embed(x), net.template_features(), net.template_labels, y, net=net)
    (grad,) = torch.autograd.grad(loss, weight)
    output = net(x)
    (model_grad,) = torch.autograd.grad(F.cross_entropy(output, y), weight)
    torch.testing.assert_close(loss, F.cross_entropy(output, y))
    torch.testing.assert_close(grad, model_grad)
    nll = F.nll_loss(output, y)  # the NLL of the output, up to log(1 + C * floor)
    assert abs(float(loss.detach()) - float(nll.detach())) < 2e-5


def test_wnll_solve_runs_in_float32_under_bf16_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast speeds the forward, but the kNN graph and solve get float32 features, autocast off."""
    seen: list[tuple[torch.dtype, torch.dtype, torch.dtype]] = []

    def spy(feats: torch.Tensor, template: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append((feats.dtype, template.dtype, (feats @ template.T).dtype))  # the graph's distances
        return wnll_interpolate(feats, template, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(steps_module, "wnll_interpolate_checked", spy)
    net = _synthetic_net("surrogate", buffer_dim=16).train()
    g = torch.Generator().manual_seed(0)
    feats, t_feats = torch.rand(16, 64, generator=g), torch.rand(30, 64, generator=g)
    y, t_y = torch.arange(16) % 10, torch.arange(30) % 10
    buffer = net.buffer
    assert buffer is not None
    embedded: list[torch.dtype] = []

    def embed(v: torch.Tensor) -> torch.Tensor:
        out = buffer(v)
        embedded.append(out.dtype)
        return out

    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def bf16() -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16)

    with bf16():  # an autocast context around the whole step too
        for gradient in ("surrogate", "exact"):
            net.gradient = gradient  # type: ignore[assignment]
            wnll_step(net=net, embed=embed, optimizer=opt, inputs=feats, labels=y, template_inputs=t_feats,
                      template_labels=t_y, autocast=bf16)  # fmt: skip
    assert embedded and set(embedded) == {torch.bfloat16}  # autocast was on for the forward
    assert seen == [(torch.float32, torch.float32, torch.float32)] * 2


@pytest.mark.parametrize("gradient", ["surrogate", "exact"])
def test_wnll_step_updates_backbone(
    gradient: str, train_subset: tuple[torch.Tensor, torch.Tensor], device: torch.device
) -> None:
    images, labels = train_subset
    net = _tiny_net(images, labels, gradient=gradient).to(device).train()
    x, y = images[:40].float().to(device) / 255, labels[:40].to(device)
    t_idx = draw_template_indices(labels, 5, generator=torch.Generator().manual_seed(1), num_classes=10,
                                  exclude=torch.arange(40))  # fmt: skip
    before = {k: v.clone() for k, v in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss, correct = wnll_step(net=net, embed=net.embed, optimizer=opt, inputs=x, labels=y,
                              template_inputs=images[t_idx].float().to(device) / 255,
                              template_labels=labels[t_idx].to(device))  # fmt: skip
    assert loss > 0 and 0 <= correct <= 40
    changed = {k for k, v in net.named_parameters() if not torch.equal(v, before[k])}
    assert "backbone.conv1.weight" in changed and "backbone.layer3.0.conv2.weight" in changed
    assert "buffer.0.weight" in changed
    assert "backbone.linear.weight" not in changed  # the backbone's own head is not in the WNLL path


def test_alternating_steps_lower_training_loss(train_subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = train_subset
    x = images.float() / 255
    net = _tiny_net(images, labels, gradient="surrogate").train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = float(F.cross_entropy(net.linear_logits(x), labels))
    for _ in range(20):
        b = torch.randperm(200, generator=gen)[:50]
        linear_step(net=net, embed=net.embed, optimizer=opt, inputs=x[b], labels=labels[b])
        t_idx = draw_template_indices(labels, 5, generator=gen, num_classes=10, exclude=b)
        wnll_step(net=net, embed=net.embed, optimizer=opt, inputs=x[b], labels=labels[b],
                  template_inputs=x[t_idx], template_labels=labels[t_idx])  # fmt: skip
    with torch.no_grad():
        after = float(F.cross_entropy(net.linear_logits(x), labels))
    assert after < before - 0.02, (before, after)


def test_exact_wnll_steps_lower_the_wnll_loss(train_subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = train_subset
    x = images.float() / 255
    net = _tiny_net(images, labels, gradient="exact").train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    t_idx = draw_template_indices(labels, 5, generator=torch.Generator().manual_seed(0), num_classes=10,
                                  exclude=torch.arange(60))  # fmt: skip
    losses = [
        wnll_step(net=net, embed=net.embed, optimizer=opt, inputs=x[:60], labels=labels[:60],
                  template_inputs=x[t_idx], template_labels=labels[t_idx])[0]
        for _ in range(10)
    ]  # fmt: skip
    assert sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses


# ------------------------------------------------------------------------------------------ config
def test_lr_schedules() -> None:
    cfg = TrainConfig(epochs=200)
    assert [lr_factor(e, cfg) for e in (0, 99, 100, 149, 150, 199)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert lr_factor(0, TrainConfig(epochs=1)) == 1.0  # no decay before the first epoch
    assert [lr_factor(e, TrainConfig(epochs=4)) for e in range(4)] == pytest.approx([1, 1, 0.1, 0.01])
    authors = TrainConfig(lr_schedule="authors")
    assert [lr_factor(e, authors) for e in (0, 79, 80, 119, 120, 160)] == [1, 1, 0.25, 0.25, 0.125, 0.0625]


def test_configs_validate_and_round_trip() -> None:
    for bad in ({"lr": float("nan")}, {"epochs": 0}, {"batch_size": 1}, {"momentum": 1.0}, {"data": "x"}):
        with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
            TrainConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train_template_size=15 is not a multiple of the model's 10"):
        TrainConfig(train_template_size=15).check_classes(10)
    TrainConfig(train_template_size=15, eval_template_size=15).check_classes(3)
    for cfg in (TrainConfig(data="tvm", tvm=TVMSettings(prob=0.3)), HeadConfig(epochs=2)):
        saved = cfg.to_dict()
        assert json.loads(json.dumps(saved)) == saved and saved["mode"] == cfg.mode
        assert LoopConfig.from_dict(saved) == cfg and type(cfg).from_dict(saved) == cfg
    assert TrainConfig().tvm == TVMSettings()  # Guo et al.'s setting, as the evaluation
    assert (HeadConfig().epochs, HeadConfig().lr, TrainConfig().epochs) == (6, 0.01, 200)
    with pytest.raises(ValueError, match="mode"):
        HeadConfig.from_dict(TrainConfig().to_dict())
    with pytest.raises(TypeError, match="TrainConfig"):
        LoopConfig()


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
    assert {"images_per_s", "epoch_time_s", "lr", "train_acc_wnll", "device_facts"} <= log_a[0].keys()
    assert log_a[0]["device_facts"]["device"] == "cpu"
    assert all(0.0 <= r[k] <= 1.0 for r in log_a for k in ("train_acc_wnll", "train_acc_linear"))
    # a changed config is refused on resume; a different seed gives different weights
    with pytest.raises(ValueError, match="lr"):
        train(
            _tiny_config(lr=0.01), out_dir=tmp_path / "b", data_root=cifar_root, resume=True, progress=False
        )
    other = train(
        _tiny_config(seed=1, epochs=1), out_dir=tmp_path / "c", data_root=cifar_root, progress=False
    )
    assert not torch.equal(other.model.state_dict()["buffer.0.weight"], a["buffer.0.weight"])


def test_checkpoint_generator_states_resume_on_any_device(cifar_root: Path, tmp_path: Path) -> None:
    """The generators stay on the CPU: a checkpoint holds CPU byte tensors that load anywhere."""
    cfg = _tiny_config(epochs=2)
    train(cfg, out_dir=tmp_path, data_root=cifar_root, stop_after_epoch=1, progress=False)
    ckpt = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    states = ckpt["generators"]
    assert set(states) == {"shuffle", "augment"}
    assert all(s.dtype == torch.uint8 and s.device.type == "cpu" for s in states.values())
    assert ckpt["config"]["tvm"] == TVMSettings().to_dict()  # the TVM settings stored whole
    gens = {name: torch.Generator() for name in states}
    restore_generators(gens, states)
    assert all(torch.equal(generator_states(gens)[n], states[n]) for n in states)
    with pytest.raises(ValueError, match="not a CPU generator state"):  # e.g. a CUDA (Philox) state
        restore_generators(gens, {**states, "augment": torch.zeros(16, dtype=torch.uint8)})
    resumed = train(cfg, out_dir=tmp_path, data_root=cifar_root, resume=True,
                    device=torch.device("cpu", 0), progress=False)  # fmt: skip
    assert resumed.epochs_done == 2


def test_train_on_the_test_device(cifar_root: Path, tmp_path: Path, device: torch.device) -> None:
    """One tiny epoch on ``$WNLL_ART_TEST_DEVICE`` (CUDA: bf16 autocast and channels-last too), resumable on
    the CPU; the records carry the device's facts. On the CPU the tests above cover it."""
    if device.type == "cpu":
        pytest.skip("the CPU runs of train() above cover it; set WNLL_ART_TEST_DEVICE=cuda")
    cfg = _tiny_config(epochs=2, bf16=True, channels_last=True)
    part = train(cfg, out_dir=tmp_path, data_root=cifar_root, device=device, stop_after_epoch=1, progress=False)
    assert part.epochs_done == 1
    log = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["device_facts"]["device"] == str(device) and "gpu" in log[-1]["device_facts"]
    done = train(cfg, out_dir=tmp_path, data_root=cifar_root, device=device, resume=True, progress=False)
    assert done.epochs_done == 2 and done.final_weights is not None and done.zoo_record is not None
    assert all(t.device.type == "cpu" for t in done.model.state_dict().values())


def test_final_model_registers_in_the_zoo(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = train(_tiny_config(epochs=1, final_eval=True), out_dir=tmp_path, data_root=cifar_root,
                   progress=False)  # fmt: skip
    assert result.zoo_record is not None and result.final_weights is not None
    assert result.test_accuracy is not None and 0.0 <= result.test_accuracy <= 1.0
    record = json.loads(result.zoo_record.read_text())
    assert record["reference_accuracy"] == pytest.approx(result.test_accuracy)  # a fraction
    assert record["extra"]["config"]["tvm"] == TVMSettings().to_dict()
    assert record["extra"]["device_facts"]["device"] == "cpu" and "deterministic" in record["extra"]["device_facts"]
    entry = zoo_entry_from_record(result.zoo_record)
    assert entry.reference_accuracy == pytest.approx(100 * result.test_accuracy)  # ZooEntry's unit: %
    monkeypatch.setitem(ZOO, "tiny_wnll", entry)
    loaded = load_pretrained("tiny_wnll", weights=result.final_weights)
    assert isinstance(loaded, WNLLNet) and loaded.settings() == result.model.settings()
    x, y = load_cifar10(cifar_root, split="test")
    with torch.no_grad():
        out = loaded(x[:100].float() / 255)
        torch.testing.assert_close(out, result.model(x[:100].float() / 255))
    assert float((out.argmax(1) == y[:100]).float().mean()) == pytest.approx(result.test_accuracy)


def test_head_mode_runs_the_same_loop(cifar_root: Path, hub_dir: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Head mode: cached features of the frozen ResNet-56, only buffer block and heads train, exact resume."""
    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    cfg = HeadConfig(epochs=2, batch_size=50, train_subset=200, test_subset=100, train_template_size=50,
                     eval_template_size=50, wnll_batch_size=100, **SMALL)  # type: ignore[arg-type]  # fmt: skip
    kw = {"data_root": cifar_root, "cache_dir": tmp_path / "cache", "progress": False}
    straight = train(cfg, out_dir=tmp_path / "a", **kw)  # type: ignore[arg-type]
    train(cfg, out_dir=tmp_path / "b", stop_after_epoch=1, **kw)  # type: ignore[arg-type]
    resumed = train(cfg, out_dir=tmp_path / "b", resume=True, **kw)  # type: ignore[arg-type]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    pretrained = load_pretrained("resnet56").state_dict()
    assert all(torch.equal(a[f"backbone.{k}"], v) for k, v in pretrained.items())  # frozen backbone
    assert [r["epoch"] for r in straight.metrics] == [0, 1, 2]  # epoch 0: before training
    assert all(0.0 <= r["test_acc_wnll"] <= 1.0 for r in straight.metrics)
    assert straight.test_accuracy == straight.metrics[-1]["test_acc_wnll"]
    x, y = load_cifar10(cifar_root, split="test")
    with torch.inference_mode():
        pred = straight.model(x[:100].float() / 255).argmax(1)
    assert float((pred == y[:100]).float().mean()) == pytest.approx(straight.test_accuracy)


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
    kw = {"cache_dir": tmp_path, "chunk_size": 25, "progress": False}

    def run(data: torch.Tensor, settings: TVMSettings, seed: int = 0) -> torch.Tensor:
        return tvm_images(data, settings=settings, seed=seed, tvm_fn=_fake_tvm(calls), **kw)  # type: ignore[arg-type]

    first = run(images, TVMSettings(lamb=0.5))
    assert calls == [25, 25, 10] and first.dtype == torch.uint8 and first.shape == images.shape
    again = run(images, TVMSettings(lamb=0.5))
    assert calls == [25, 25, 10] and torch.equal(again, first)  # reused, not recomputed
    third = run(images, TVMSettings(lamb=0.25))
    assert len(calls) == 6 and not torch.equal(third, first)  # a setting changed: recomputed
    run(images[:50], TVMSettings(lamb=0.5))
    assert len(calls) == 8  # other data: recomputed
    assert not torch.equal(run(images, TVMSettings(lamb=0.5), seed=1), first) and len(calls) == 11  # seed


def test_tvm_cache_with_the_real_solver(
    train_subset: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    """The default TVM is wnll_art.tvm.total_variation_minimize, called with the settings."""
    images = train_subset[0][:20]
    settings = TVMSettings(iterations=3)
    out = tvm_images(images, settings=settings, seed=0, cache_dir=tmp_path, chunk_size=10, progress=False)
    assert out.dtype == torch.uint8 and out.shape == images.shape and not torch.equal(out, images)
    again = tvm_images(images, settings=settings, seed=1, cache_dir=tmp_path, chunk_size=10, progress=False)
    assert not torch.equal(again, out)  # another mask seed, other masks


def test_train_on_original_plus_tvm_uses_the_cache(cifar_root: Path, tmp_path: Path) -> None:
    calls: list[int] = []
    cfg = _tiny_config(epochs=1, data="original+tvm")
    kw = {
        "data_root": cifar_root,
        "cache_dir": tmp_path / "cache",
        "progress": False,
        "tvm_fn": _fake_tvm(calls),
    }
    first = train(cfg, out_dir=tmp_path / "a", **kw)  # type: ignore[arg-type]
    assert calls == [200] and first.metrics[0]["images"] == 400  # 200 originals + 200 TVM copies
    train(cfg, out_dir=tmp_path / "b", **kw)  # type: ignore[arg-type]
    assert calls == [200]


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


def test_training_pool_modes() -> None:
    from wnll_art.train.data import training_pool

    x, t, y = torch.zeros(3, 1, dtype=torch.uint8), torch.ones(3, 1, dtype=torch.uint8), torch.tensor([2, 0, 1])
    images, labels, source = training_pool("original+tvm", x, t, y)
    assert images[:, 0].tolist() == [0, 0, 0, 1, 1, 1] and labels.tolist() == [2, 0, 1, 2, 0, 1]
    assert source.tolist() == [0, 1, 2, 0, 1, 2]  # a TVM copy shares its original's index
    assert training_pool("tvm", x, t, y)[0] is t and training_pool("original", x, None, y)[0] is x
    with pytest.raises(ValueError, match="need tvm"):
        training_pool("tvm", x, None, y)
    with pytest.raises(ValueError, match="got 'both'"):
        training_pool("both", x, t, y)
