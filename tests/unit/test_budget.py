"""Budgeted whole-network training (wnll_art.train.budget): plan, template draw, FGSM-RS, schedule, learning."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from wnll_art.models.resnet import CifarResNet
from wnll_art.train.budget import BudgetConfig, BudgetTrainer, draw_template_on_device, fgsm_rs, plan_epochs
from wnll_art.train.checkpoint import with_placeholder_template
from wnll_art.train.config import TrainConfig
from wnll_art.wnll.model import WNLLNet


def _net(seed: int = 0, template_size: int = 20) -> WNLLNet:
    torch.manual_seed(seed)
    return with_placeholder_template(CifarResNet(1, 10, check_inputs=False), template_size=template_size,
                                     buffer_dim=16, gradient="surrogate", k=5, sigma_neighbor=3)  # fmt: skip


def _config(**kw: object) -> BudgetConfig:
    train = {"batch_size": 32, "lr": 0.05, "train_template_size": 20, "eval_template_size": 20, "k": 5,
             "sigma_neighbor": 3, "buffer_dim": 16, "num_blocks": 1, "epochs": 1}  # fmt: skip
    budget = {k: kw.pop(k) for k in list(kw) if k in ("time_budget_s", "warmup_epochs", "adversarial")}
    return BudgetConfig(train=TrainConfig(**{**train, **kw}), **{"time_budget_s": 60.0, **budget})  # type: ignore[arg-type]


def _colour_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is a colour (plus noise): learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    base = torch.rand(10, 3, 1, 1, generator=g) * 200
    x = base[y] + torch.rand(n, 3, 32, 32, generator=g) * 55
    return x.round().clamp(0, 255).to(torch.uint8), y


def test_plan_epochs_shares_the_device_by_measured_cost() -> None:
    # two runs of 10 s and 30 s an epoch, measured side by side: 20 device-seconds an epoch for both together
    assert plan_epochs({"a": 10.0, "b": 30.0}, seconds=400, runs_sharing=2, efficiency=1.0) == 20
    assert plan_epochs({"a": 10.0, "b": 30.0}, seconds=400, runs_sharing=2, efficiency=0.5) == 10
    assert plan_epochs({"a": 1000.0}, seconds=1, runs_sharing=1) == 1  # never zero
    with pytest.raises(ValueError):
        plan_epochs({"a": 0.0}, seconds=10, runs_sharing=1)
    with pytest.raises(ValueError):
        plan_epochs({}, seconds=10, runs_sharing=1)


def test_template_draw_is_balanced_without_replacement_and_avoids_the_batch_originals() -> None:
    n = 400
    labels = torch.arange(n).repeat(2) % 10  # originals then TVM copies
    source = torch.arange(n).repeat(2)
    counts = torch.bincount(labels, minlength=10)
    order = torch.argsort(labels, stable=True)
    labels_sorted, source_sorted = labels[order], source[order]  # any pool order works: sort to test both
    for lab, src in ((labels, source), (labels_sorted, source_sorted)):
        start = torch.cumsum(counts, 0) - counts
        batch = torch.randperm(800, generator=torch.Generator().manual_seed(5))[:60]  # rows of any class and kind
        g = torch.Generator().manual_seed(0)
        rows = draw_template_on_device(lab, src, batch, start, 7, generator=g)
        assert rows.shape == (70,) and rows.unique().numel() == 70
        assert torch.equal(lab[rows], torch.arange(10).repeat_interleave(7))
        assert not torch.isin(src[rows], src[batch]).any()  # neither the batch rows nor their TVM copies
    again = draw_template_on_device(labels, source, torch.arange(0, 60), torch.cumsum(counts, 0) - counts, 7,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    other = draw_template_on_device(labels, source, torch.arange(0, 60), torch.cumsum(counts, 0) - counts, 7,
                                    generator=torch.Generator().manual_seed(1))  # fmt: skip
    first = draw_template_on_device(labels, source, torch.arange(0, 60), torch.cumsum(counts, 0) - counts, 7,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(again, first) and not torch.equal(again, other)


def test_fgsm_rs_stays_in_the_ball_and_raises_the_loss() -> None:
    net = _net().eval()
    x, y = _colour_data(16)
    x = x.float() / 255
    eps = 8 / 255
    adv = fgsm_rs(net, x, y, eps=eps, alpha=10 / 255, generator=torch.Generator().manual_seed(0))
    assert float((adv - x).abs().max()) <= eps + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    # the same random start without the gradient step: the step must raise the loss
    start = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * eps
    rand = (x + start).clamp(0, 1)
    with torch.no_grad():
        loss_adv = F.cross_entropy(net.linear_logits(adv), y)
        loss_rand = F.cross_entropy(net.linear_logits(rand), y)
    assert float(loss_adv) > float(loss_rand)


def test_one_cycle_schedule_warms_up_peaks_and_ends_at_zero() -> None:
    x, y = _colour_data(320)
    cfg = _config(warmup_epochs=2.0)
    tr = BudgetTrainer(_net(), x, y, torch.arange(320), cfg, torch.device("cpu"))
    assert tr.steps_per_epoch == 10
    tr.plan(9)  # 90 steps: warm-up 20 steps (2 epochs, under a third of the plan)
    lrs = {}
    for step in (0, 9, 19, 55, 89, 90):
        tr.step_count = step
        lrs[step] = tr.learning_rate()
    assert lrs[0] == pytest.approx(0.05 / 20) and lrs[9] == pytest.approx(0.05 * 10 / 20)
    assert lrs[19] == pytest.approx(0.05)
    assert lrs[55] == pytest.approx(0.05 * (1 - 55 / 90) / (1 - 20 / 90))
    assert lrs[89] == pytest.approx(0.05 * (1 / 90) / (1 - 20 / 90)) and lrs[90] == 0.0
    # a run slower than planned follows the clock: half the budget gone means at most half the decay left
    tr.step_count = 30
    tr.t0 -= 0.5 * cfg.time_budget_s
    p = tr.progress()
    assert 0.5 <= p < 0.6 and p > 30 / 90
    assert tr.learning_rate() == pytest.approx(0.05 * (1 - p) / (1 - 20 / 90), rel=1e-2)


def test_trainer_stops_by_its_deadline() -> None:
    x, y = _colour_data(320)
    cfg = _config(time_budget_s=3.0, warmup_epochs=0.5, lr=0.05)
    tr = BudgetTrainer(_net(), x, y, torch.arange(320), cfg, torch.device("cpu"))
    tr.plan(10_000)  # far more than fits: the clock must stop it and anneal the learning rate
    t0 = time.perf_counter()
    tr.run()
    assert time.perf_counter() - t0 < 3.0 + 5.0  # one step past the deadline at most
    assert tr.finished() and tr.learning_rate() == 0.0
    assert 0 < tr.step_count < 10_000 * tr.steps_per_epoch


def test_trainer_learns_in_a_fixed_plan() -> None:
    """A plan of 80 steps and a budget far beyond it: the step count, not the machine's speed, decides what is
    learnt (about 0.8 linear / WNLL accuracy from 0.24; a trainer that does not step stays near 0.24)."""
    x, y = _colour_data(320)
    cfg = _config(time_budget_s=600.0, warmup_epochs=0.5, lr=0.05)
    tr = BudgetTrainer(_net(), x, y, torch.arange(320), cfg, torch.device("cpu"))
    tr.plan(8)
    tr.run()
    assert tr.finished() and tr.step_count == 8 * tr.steps_per_epoch == 80
    first, last = tr.epoch_records[0], tr.epoch_records[-1]
    assert last["train_acc_linear"] > max(0.5, first["train_acc_linear"])  # colours are easy to learn
    assert last["train_loss_wnll"] is not None and last["train_acc_wnll"] > 0.5


def test_budget_config_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="time_budget_s"):
        _config(time_budget_s=0.0)
    with pytest.raises(ValueError, match="adversarial"):
        _config(adversarial="pgd")
    with pytest.raises(TypeError, match="TrainConfig"):
        BudgetConfig(train=object(), time_budget_s=1.0)  # type: ignore[arg-type]
    x, y = _colour_data(20)
    with pytest.raises(ValueError, match="no batch"):
        BudgetTrainer(_net(), x, y, torch.arange(20), _config(), torch.device("cpu"))


@pytest.mark.parametrize("gradient", ["surrogate", "exact"])
def test_wnll_step_embeds_the_template_with_grad_only_for_the_exact_gradient(
    gradient: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wnll_art.train.steps as steps_module

    seen: list[bool] = []
    real = steps_module.wnll_loss

    def spy(feats: torch.Tensor, t_feats: torch.Tensor, *args: object, **kwargs: object) -> object:
        seen.append(t_feats.requires_grad)
        return real(feats, t_feats, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(steps_module, "wnll_loss", spy)
    x, y = _colour_data(64)
    torch.manual_seed(0)
    net = with_placeholder_template(CifarResNet(1, 10, check_inputs=False), template_size=20, buffer_dim=16,
                                    gradient=gradient, k=5, sigma_neighbor=3)  # type: ignore[arg-type]  # fmt: skip
    tr = BudgetTrainer(net, x, y, torch.arange(64), _config(gradient=gradient), torch.device("cpu"))
    before = [p.detach().clone() for p in net.buffer.parameters()]  # type: ignore[union-attr]
    net.train()
    tr.step()
    assert seen == [gradient == "exact"]
    assert any(not torch.equal(a, b) for a, b in zip(before, net.buffer.parameters(), strict=True))  # type: ignore[union-attr]
