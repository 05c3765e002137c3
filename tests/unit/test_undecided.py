"""Images whose scores are all equal (a WNLL batch with no graph path to the template) count as errors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from wnll_art.evaluation.victims import UNDECIDED, predict_labels
from wnll_art.models.resnet import CifarResNet
from wnll_art.wnll.model import WNLLNet


class _Fixed(nn.Module):
    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores


def test_tied_rows_get_no_class() -> None:
    scores = torch.tensor([[0.1, 0.1, 0.1], [0.0, 2.0, 1.0], [5.0, 5.0, 4.0]])
    labels = predict_labels(_Fixed(scores), torch.zeros(3, 3, 32, 32))
    assert labels.tolist() == [UNDECIDED, 1, 0]  # a partial tie still decides (arg-max's first maximum)
    assert not (labels == torch.tensor([0, 1, 0]))[0]  # the airplane (class 0) is not counted correct


def test_an_all_zero_batch_far_from_the_template_is_undecided_not_class_0() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    template = torch.rand(30, 3, 32, 32, generator=g) * 0.5 + 0.5  # bright images, far from black
    net = WNLLNet(CifarResNet(1, 10), template, torch.arange(30) % 10, k=5, sigma_neighbor=3).eval()
    x = torch.zeros(12, 3, 32, 32)  # 12 identical images: more than k duplicates, no path to the template
    with torch.no_grad():
        scores = net(x)
    assert torch.allclose(scores, scores[:, :1].expand_as(scores))  # uniform: what argmax would call class 0
    assert (predict_labels(net, x) == UNDECIDED).all()


def test_the_engine_counts_undecided_images_as_errors_and_flags_the_cell(tmp_path: Path) -> None:
    """An all-zero batch scored by a WNLL victim: every image is undecided, counted wrong (airplanes too), and the
    cell says so in ``extra["undecided_images"]`` and, once flags are attached, in an ``undecided_images`` flag."""
    from wnll_art.defence import Defence
    from wnll_art.evaluation.engine import Batches, run_cells
    from wnll_art.evaluation.protocols import CLEAN
    from wnll_art.evaluation.records import RunStore
    from wnll_art.evaluation.report import attach_flags
    from wnll_art.evaluation.victims import Victim

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    template = torch.rand(30, 3, 32, 32, generator=g) * 0.5 + 0.5
    net = WNLLNet(CifarResNet(1, 10), template, torch.arange(30) % 10, k=5, sigma_neighbor=3).eval()
    victim = Victim("wnll", "none", Defence(net).eval())
    y = torch.zeros(12, dtype=torch.long)  # all airplanes: class 0 would be "correct"
    batches = Batches(torch.zeros(12, 3, 32, 32), y, list(range(12)), 12)
    store = RunStore(tmp_path / "run", {"run": {}})
    (rec,) = run_cells(victims=[victim], specs=[CLEAN], eps_values=[0.02], batches=batches, store=store,
                       protocol="test", seed=0, run_settings={"run": {}})  # fmt: skip
    assert rec.accuracy == 0.0 and rec.extra["undecided_images"] == 12
    (flagged,) = attach_flags(store, [rec], {})
    assert flagged.flags == ["undecided_images: 12 of 12 images had all scores equal (no graph path to the "
                             "template) and count as errors"]  # fmt: skip
