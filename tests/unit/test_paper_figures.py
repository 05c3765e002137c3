"""The paper's figures (issue 19): Fig. 2 and Fig. 5 (``evaluations/paper_figures.py``), Fig. 4
(``evaluations/feature_geometry.py --paper-fig4``), on tiny random-weight models, fake data and stub records."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluations import feature_geometry as fg  # noqa: E402
from evaluations import paper_figures as pf  # noqa: E402
from wnll_art._random import seed_generator  # noqa: E402
from wnll_art.evaluation.protocols import SPECS, PlanOptions  # noqa: E402
from wnll_art.evaluation.records import CellRecord, RunStore  # noqa: E402
from wnll_art.evaluation.victims import predict_labels  # noqa: E402
from wnll_art.tvm.module import TVMPurifier  # noqa: E402
from wnll_art.wnll.model import WNLLNet  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Tiny(nn.Module):
    """A random-weight classifier on 32x32 images with a ``features`` map (a backbone's interface) and batch norm
    (whose train mode would make predictions depend on the batch: the figures must leave it in eval mode)."""

    num_classes = 10

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(3 * 32 * 32, 6)
        self.norm = nn.BatchNorm1d(6)
        self.linear = nn.Linear(6, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(self.body(x.flatten(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=seed_generator(seed))


# ---------------------------------------------------------------------------------------------------- Fig. 2
def test_fig2_conditions_pair_every_condition_with_its_tvm_column() -> None:
    cols = pf.fig2_conditions(("fgsm", "ifgsm", "cw_l2"), (0.02, 0.08))
    assert len(cols) == 14 and cols[:4] == [("clean", 0.0, False), ("clean", 0.0, True), ("fgsm", 0.02, False),
                                            ("fgsm", 0.02, True)]  # fmt: skip
    assert cols[-1] == ("cw_l2", 0.08, True)


def test_fig2_panels_are_the_attacks_and_their_purified_images() -> None:
    model = Tiny().eval()
    x, y = _images(2), torch.tensor([3, 8])
    specs = {a: SPECS[f"paper:{a}"].build(PlanOptions()) for a in ("fgsm", "ifgsm", "cw_l2")}

    def run() -> dict[Any, tuple[torch.Tensor, torch.Tensor]]:
        return pf.fig2_images(
            model, x, y, specs=specs, eps=(0.02, 0.08), purifier=TVMPurifier(seed=5), seed=5
        )

    panels = run()
    assert not any(m.training for m in model.modules())  # predictions in eval mode, not on batch statistics
    assert list(panels) == pf.fig2_conditions(list(specs), (0.02, 0.08))
    assert torch.equal(panels["clean", 0.0, False][0], x)
    for (attack, eps, tvm), (images, predicted) in panels.items():
        assert images.shape == x.shape and torch.equal(predicted, predict_labels(model, images))
        if not tvm:
            assert float((images - x).abs().amax()) <= eps + 1e-6  # in the eps ball (clean: eps 0)
        else:
            assert not torch.equal(images, panels[attack, eps, False][0])  # TVM changed the images
    assert not torch.equal(panels["fgsm", 0.02, False][0], x)  # the attack moved them
    again = run()  # explicit seeds: the same panels
    assert all(torch.equal(panels[c][0], again[c][0]) for c in panels)
    fig = pf.fig2_figure(panels, y, [10, 11])
    assert len(fig.axes) == 2 * 14
    titles = [ax.get_title() for ax in fig.axes]
    p = int(panels["ifgsm", 0.08, True][1][1])
    assert titles[14 * 1 + 11] == f"IFGSM 0.08 +TVM\n-> {pf.CIFAR10_CLASSES[p]}"  # row (image) 1, column 11


# ---------------------------------------------------------------------------------------------------- Fig. 5
def _rec(row_model: str, protocol: str, attack: str, eps: float, acc: float, defence: str = "tvm") -> Any:
    return SimpleNamespace(protocol=protocol, model=row_model, defence=defence, attack=attack, eps=eps,
                           accuracy=acc, n=500)  # fmt: skip


def test_fig5_points_pick_the_row_wnll_tvm_record_of_each_protocol_attack_and_eps() -> None:
    m = pf.WNLL_MODELS["original"]
    records = {
        "original": [
            _rec(m, "authors", "fgsm", 0.02, 0.30),  # the one
            _rec(m, "authors", "fgsm", 0.02, 0.99),  # a later duplicate: the first counts
            _rec(m, "authors", "fgsm", 0.02, 0.91, defence="none"),  # no TVM
            _rec("softmax", "authors", "fgsm", 0.02, 0.92),  # another model
            _rec(pf.WNLL_MODELS["tvm"], "authors", "fgsm", 0.04, 0.93),  # another row's model
            _rec(m, "adaptive", "fgsm", 0.04, 0.94),  # another protocol
            _rec(m, "authors", "worst_case", 0.04, 0.95),
            _rec(m, "authors", "clean", 0.0, 0.80),  # eps 0 of every authors curve
            _rec(m, "paper", "ifgsm", 0.04 + 1e-12, 0.21),  # eps as read back from JSON
        ],
        "tvm": [],
    }
    gpu = {("original", "paper", "wnll", "tvm", "fgsm", 0.02): 29.6, ("original", "authors", "wnll", "tvm", "fgsm", 0.02): 1.0,
           ("original", "paper", "wnll", "none", "fgsm", 0.08): 50.0, ("tvm", "paper", "wnll", "tvm", "clean", 0.0): 78.0}  # fmt: skip
    points, missing = pf.fig5_points(records, gpu)
    assert points["original", "authors", "fgsm", 0.02] == pf.Point(
        30.0, "cpu", 500
    )  # the CPU record beats the archive
    assert all(points["original", "authors", a, 0.0].accuracy == 80.0 for a in ("fgsm", "ifgsm", "cw_l2"))
    assert points["original", "paper", "fgsm", 0.02] == pf.Point(29.6, "gpu", None)
    assert points["original", "paper", "ifgsm", 0.04].accuracy == pytest.approx(21.0)
    assert points["tvm", "paper", "cw_l2", 0.0] == pf.Point(78.0, "gpu", None)
    assert len(points) == 1 + 3 + 1 + 1 + 3 and len(points) + len(missing) == 2 * 2 * 3 * len(pf.FIG5_EPS)
    assert ("original", "authors", "fgsm", 0.04) in missing and ("original", "paper", "fgsm", 0.08) in missing
    assert ("original", "authors", "ifgsm", 0.02) in missing and set(points).isdisjoint(missing)


def test_fig5_missing_points_break_the_line_and_are_named() -> None:
    m = pf.WNLL_MODELS["original"]
    records: dict[str, list[Any]] = {row: [] for row in pf.ROWS}
    records["original"] = [_rec(m, "authors", "fgsm", e, 0.5 - e) for e in (0.02, 0.06, 0.08, 0.1)]
    points, missing = pf.fig5_points(records, {})
    text = pf._missing_text(missing)
    assert "authors protocol, rows original: FGSM at eps 0, 0.04" in text
    every = "at eps 0, 0.02, 0.04, 0.06, 0.08, 0.1"
    assert f"authors protocol, rows tvm, original+tvm: FGSM {every}" in text
    assert f"authors protocol, rows original, tvm, original+tvm: IFGSM, C&W {every}" in text
    assert f"paper protocol, rows original, tvm, original+tvm: FGSM, IFGSM, C&W {every}" in text
    fig = pf.fig5_figure(points, missing)
    ys = [float(v) for v in fig.axes[0].lines[0].get_ydata()]  # type: ignore[union-attr, arg-type]  # FGSM, original, authors
    assert [math.isnan(v) for v in ys] == [True, False, True, False, False, False]
    assert ys[1] == pytest.approx(48.0)
    assert "Missing, not drawn" in fig.texts[0].get_text()


def test_paper_fig5_reads_the_job_folders_of_each_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = pf.WNLL_MODELS["original+tvm"]

    def put(folder: str, model: str, attack: str, eps: float, correct: list[int]) -> None:
        RunStore(tmp_path / "original+tvm" / folder, {}).put(CellRecord(
            model=model, defence="tvm", attack=attack, eps=eps, protocol=folder.split("_")[0],
            accuracy=sum(correct) / len(correct), n=len(correct), per_image_correct=correct,
            image_indices=list(range(len(correct))), settings={}))  # fmt: skip

    put("authors_wnll", m, "ifgsm", 0.08, [1, 0, 0, 0])
    put("paper_wnll", m, "cw_l2", 0.1, [1, 1, 1, 0])
    put("paper_softmax_tvm", pf.ROWS["original+tvm"], "cw_l2", 0.06, [1, 1, 1, 1])  # not a WNLL victim
    monkeypatch.setattr(pf, "_gpu_records", lambda: {})
    summary = pf.paper_fig5(out_dir=tmp_path / "out", records_root=tmp_path)
    got = {(p["row"], p["protocol"], p["attack"], p["eps"]): p["accuracy"] for p in summary["points"]}
    assert got == {
        ("original+tvm", "authors", "ifgsm", 0.08): 25.0,
        ("original+tvm", "paper", "cw_l2", 0.1): 75.0,
    }
    assert (tmp_path / "out" / "paper_fig5.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((tmp_path / "out" / "paper_fig5.json").read_text())["missing"]) == 3 * 2 * 3 * 6 - 2


# ---------------------------------------------------------------------------------------------------- Fig. 4
def test_projection_on_training_pcs_of_known_points() -> None:
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    train = mean + torch.tensor([[3.0, 0, 0], [-3, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=torch.float64)
    test = mean + torch.tensor(
        [[2.0, -0.5, 7.0]], dtype=torch.float64
    )  # the third axis has no training variance
    proj, ratio = fg.project_on_pcs({"train": train, "fgsm": test}, fit_on="train")
    assert torch.allclose(proj["fgsm"], torch.tensor([[2.0, -0.5]], dtype=torch.float64))
    assert torch.allclose(
        proj["train"], torch.tensor([[3.0, 0], [-3, 0], [0, 1], [0, -1]], dtype=torch.float64)
    )
    assert ratio.tolist() == pytest.approx([0.9, 0.1])


def test_class_draw_is_balanced_seeded_and_keeps_to_the_classes() -> None:
    labels = torch.arange(60) % 10
    idx = fg.class_draw(labels, (1, 0), 4, generator=seed_generator(3))
    assert labels[idx].tolist() == [1] * 4 + [0] * 4 and len(set(idx.tolist())) == 8
    assert torch.equal(idx, fg.class_draw(labels, (1, 0), 4, generator=seed_generator(3)))


def test_fig4_summary_separation_and_accuracy() -> None:
    y = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[0.0, 0], [0, 1], [10, 0], [10, 1]], dtype=torch.float64)
    mixed = torch.tensor([[0.0, 0], [10, 1], [10, 0], [0, 1]], dtype=torch.float64)
    summary, proj = fg.fig4_summary({"train": apart, "fgsm": mixed}, {"train": y, "fgsm": torch.tensor([0, 1, 1, 1])},
                                    {"train": y, "fgsm": y})  # fmt: skip
    train, fgsm = summary["conditions"]["train"], summary["conditions"]["fgsm"]
    assert train["accuracy"] == 1.0 and fgsm["accuracy"] == 0.75
    assert train["separation_ratio"] == pytest.approx(10 / 0.5) and fgsm["separation_ratio"] < 1
    assert summary["feature_dim"] == 2 and set(proj) == {"train", "fgsm"}


def test_paper_fig4_end_to_end_on_tiny_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wnll_art.data
    import wnll_art.defence

    data = {"train": ((_images(40, 1) * 255).to(torch.uint8), torch.arange(40) % 10),
            "test": ((_images(20, 2) * 255).to(torch.uint8), torch.arange(20) % 10)}  # fmt: skip
    t_images, t_labels = _images(20, 3), torch.arange(20) % 10

    made: list[nn.Module] = []

    def classifier(name: str, *, head: str | None = None, **_: Any) -> nn.Module:
        clf = (
            Tiny(0)
            if name == "resnet56"
            else WNLLNet(Tiny(1), t_images, t_labels, buffer_dim=4, k=5, sigma_neighbor=2)
        )
        made.append(clf.eval())
        return clf

    monkeypatch.setattr(wnll_art.data, "load_cifar10", lambda root, split: data[split])
    monkeypatch.setattr(wnll_art.defence, "load_classifier", classifier)
    summary = fg.paper_fig4(out_dir=tmp_path, n_train=8, n_test=4, eps=0.05)
    assert len(made) == 2 and not any(m.training for clf in made for m in clf.modules())
    assert set(summary["models"]) == {"softmax", "resnet56-wnll"} and summary["classes"] == [
        "airplane",
        "automobile",
    ]
    dims = {"softmax": 6, "resnet56-wnll": 4}  # backbone features vs the WNLL buffer block
    for model, ms in summary["models"].items():
        assert ms["feature_dim"] == dims[model] and list(ms["conditions"]) == ["train", "clean", "fgsm"]
        assert [ms["conditions"][c]["n"] for c in ("train", "clean", "fgsm")] == [8, 4, 4]
    assert all(data["test"][1][i] in (0, 1) for i in summary["test_indices"])
    assert json.loads((tmp_path / "paper_fig4.json").read_text()) == json.loads(json.dumps(summary))
    assert (tmp_path / "paper_fig4.png").read_bytes()[:4] == b"\x89PNG"
