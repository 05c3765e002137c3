"""Adaptive-evaluation pieces without data: the K-draw rule, convergence flags and the WNLL attacker scores."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from wnll_art.defence import Defence
from wnll_art.evaluation.checks import convergence_flags, convergence_specs, unbounded_flags
from wnll_art.evaluation.engine import predict_correct
from wnll_art.evaluation.protocols import SPECS, AttackSpec, PlanOptions, plan, registry_flags
from wnll_art.evaluation.records import CellRecord
from wnll_art.evaluation.victims import Victim
from wnll_art.wnll.score import wnll_scores

CLASSES = 10


class PixelClassifier(nn.Module):
    """Predicts class ``round(9 * x[:, 0, 0, 0])``."""

    num_classes = CLASSES

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = (x[:, 0, 0, 0] * 9).round().long()
        return nn.functional.one_hot(label, CLASSES).float() + 0 * self.dummy


class FlippingPurifier(nn.Module):
    """A randomised purifier that, per image and draw, moves the label pixel to another class w.p. 1/2."""

    randomised = True

    def __init__(self) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(0)

    @contextlib.contextmanager
    def drawing(self, seed: int) -> Iterator[None]:
        previous, self.gen = self.gen, torch.Generator().manual_seed(seed)
        try:
            yield
        finally:
            self.gen = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(len(x), generator=self.gen) < 0.5
        out = x.clone()
        out[flip, 0, 0, 0] = (out[flip, 0, 0, 0] + 1 / 9) % (10 / 9)
        return out


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % CLASSES
    x = torch.zeros(n, 3, 4, 4)
    x[:, 0, 0, 0] = y / 9
    return x, y


def test_k_draw_rule_counts_an_image_only_if_every_draw_is_correct() -> None:
    x, y = _images(200)
    victim = Victim("toy", "flip", Defence(PixelClassifier(), purifier=FlippingPurifier()).eval())
    rule, mean, undecided = predict_correct(victim, x, y, draws=3, seed=5)
    assert rule == [int(m == 1.0) for m in mean]  # correct under the rule iff all 3 draws were correct
    assert 0.3 < sum(mean) / len(mean) < 0.7  # each draw: about half correct
    assert 0.05 < sum(rule) / len(rule) < 0.25  # all three: about 1/8
    one, _, _ = predict_correct(victim, x, y, draws=1, seed=5)
    assert undecided == [0] * 200  # one-hot scores: every image decided
    assert sum(rule) < sum(one) and all(r <= o for r, o in zip(rule, one, strict=True))  # same first draw
    assert predict_correct(victim, x, y, draws=3, seed=5) == (rule, mean, undecided)  # reproducible


def test_deterministic_victims_are_asked_once() -> None:
    x, y = _images(20)
    victim = Victim("toy", "none", Defence(PixelClassifier()).eval())
    rule, mean, _ = predict_correct(victim, x, y, draws=3, seed=0)
    assert rule == [1] * 20 and mean == [1.0] * 20


def test_convergence_flag_fires_on_an_under_run_attack_only() -> None:
    under_run = {1: 0.6, 2: 0.35}  # a 2-step attack: the last doubling still gains 25 points
    assert convergence_flags(under_run, what="pgd steps")[0].startswith("not_converged: pgd steps")
    assert convergence_flags({10: 0.05, 20: 0.02, 50: 0.01, 100: 0.01}, what="pgd steps") == []
    assert convergence_flags({50: 0.02, 100: 0.01}, what="x") == []  # exactly one point: converged
    assert convergence_flags({10: 0.5}, what="x") == []
    assert unbounded_flags(0.0, eps=0.3, what="pgd") == []
    assert unbounded_flags(0.05, eps=0.3, what="pgd")[0].startswith("unbounded_not_zero")


def test_adaptive_plan_records_its_budgets_and_ladders_vary_them() -> None:
    options = PlanOptions(eot_samples=2, steps=7, restarts=2, square_queries=11)
    default = [s.name for s in plan("adaptive", options)]
    assert default == ["clean", "pgd_smooth_eot", "pgd_surrogate_eot", "apgd_ce_smooth_eot", "apgd_ce_surrogate_eot",
                       "apgd_dlr_smooth_eot", "apgd_dlr_surrogate_eot", "transfer_pgd", "square"]  # fmt: skip
    names = [k.split(":", 1)[1] for k in SPECS if SPECS[k].protocol == "adaptive"]
    specs = {s.name: s for s in plan("adaptive", options, names)}
    # honest names: a spec differentiating the smooth score says so, an "exact" one uses the deployed score
    assert all(s.score == "smooth" for n, s in specs.items() if "_smooth_" in n)
    assert all(s.score == "log" and s.gradient == "exact" for n, s in specs.items() if "_exact_" in n)
    assert all(s.gradient == "surrogate" for n, s in specs.items() if "_surrogate_" in n)
    pgd = specs["pgd_smooth_eot"].settings()
    assert pgd["attack"]["steps"] == 7 and pgd["attack"]["restarts"] == 2 and pgd["eot_samples"] == 2
    assert pgd["score"] == "smooth" and specs["pgd_surrogate_eot"].settings()["gradient"] == "surrogate"
    assert specs["square"].settings()["attack"]["queries"] == 11
    assert specs["apgd_dlr_smooth_eot"].attack.loss == "difference_logits_ratio"  # type: ignore[union-attr]
    ladder = convergence_specs(specs["pgd_smooth_eot"], steps=(1, 2), eot=(1, 4))
    assert [(k, b, s.name) for k, b, s in ladder] == [("steps", 1, "pgd_smooth_eot__steps1"),
        ("steps", 2, "pgd_smooth_eot__steps2"), ("eot", 1, "pgd_smooth_eot__eot1"), ("eot", 4, "pgd_smooth_eot__eot4")]  # fmt: skip
    assert ladder[1][2].attack.steps == 2 and ladder[3][2].eot_samples == 4  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="steps"):
        convergence_specs(AttackSpec("clean", None), steps=(1,), eot=())


def _record(protocol: str, attack: str, correct: list[int], model: str = "wnll") -> CellRecord:
    return CellRecord(model=model, defence="tvm", attack=attack, eps=0.02, protocol=protocol,
                      accuracy=sum(correct) / len(correct), n=len(correct), per_image_correct=correct,
                      image_indices=list(range(len(correct))), settings={})  # fmt: skip


def test_registered_checks_flag_the_reference_when_a_challenger_wins() -> None:
    pgd = _record("adaptive", "pgd_smooth_eot", [1, 1, 0, 0])
    square = _record("adaptive", "square", [1, 0, 0, 0])  # gradient-free beats the gradient attack
    transfer = _record("adaptive", "transfer_pgd", [1, 1, 1, 0])  # weaker: no flag
    other = _record("adaptive", "square", [0, 0, 0, 0], model="softmax")  # another victim: never compared
    flags = registry_flags([pgd, square, transfer, other])
    assert list(flags) == [pgd.key] and flags[pgd.key][0].startswith("gradient_free_stronger: square gives 25.0%")
    # a check across protocols: the paper's FGSM against the adaptive exact FGSM
    paper = _record("paper", "fgsm", [0, 0, 0, 0])
    exact = _record("adaptive", "fgsm_exact_eot", [1, 0, 0, 0])
    assert registry_flags([paper, exact])[exact.key][0].startswith("paper_attack_stronger")
    assert registry_flags([paper]) == {}  # nothing to compare against


def test_attacker_scores() -> None:
    u = torch.tensor([[1.0, 0.0, 0.0], [0.7, 0.2, 0.1]], requires_grad=True)
    smooth = torch.tensor([[0.8, 0.15, 0.05], [0.6, 0.3, 0.1]], requires_grad=True)
    log = wnll_scores(u)
    assert torch.allclose(log[0, 0] - log[0, 1], torch.tensor(13.8155), atol=1e-3)  # the cap
    log64 = wnll_scores(u, score="log64")
    assert log64.dtype == u.dtype and float((log64[0, 0] - log64[0, 1]).detach()) > 69
    s = wnll_scores(u, score="smooth", smooth_u=smooth)
    assert torch.equal(s, log)  # the deployed value
    s[:, 1].sum().backward()
    assert u.grad is None or float(u.grad.abs().sum()) == 0  # the gradient is the smooth solve's
    assert smooth.grad is not None and float(smooth.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="smooth_u"):
        wnll_scores(u, score="smooth")
    with pytest.raises(ValueError, match="score"):
        wnll_scores(u, score="nope")  # type: ignore[arg-type]


def test_headline_keeps_training_data_rows_apart() -> None:
    from wnll_art.evaluation.records import CellRecord
    from wnll_art.evaluation.report import headline

    def worst(data: str, acc: float, clean: float) -> CellRecord:
        return CellRecord(model="wnll", defence="tvm", attack="all", eps=0.02, protocol="adaptive", accuracy=acc, n=2,
                          per_image_correct=[1, 0], image_indices=[0, 1], settings={"training_data": data},
                          extra={"component_accuracy": {"paper:clean": clean, "adaptive:pgd": acc}})  # fmt: skip

    lines = headline([worst("original", 0.5, 1.0), worst("tvm", 0.0, 0.5)], what="x")
    rows = [line for line in lines if line.startswith("| original") or line.startswith("| tvm")]
    # one row per training data, in the records' order (a dict keyed by victim alone kept only the last)
    assert rows == ["| original | wnll + tvm | 100.0 | **50.0** (pgd) | clear |",
                    "| tvm | wnll + tvm | 50.0 | **0.0** (pgd) | clear |"]  # fmt: skip
    single = headline([worst("original", 0.5, 1.0)], what="x")
    assert "| wnll + tvm | 100.0 | **50.0** (pgd) | clear |" in single  # no column for a single row
