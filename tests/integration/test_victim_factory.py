"""Every job's victims are what the public loader returns for the same name and settings (issue 24).

Each job is run until its victims are built (the factory is wrapped to record them, then to stop the job), and
every victim is compared, parameter for parameter and setting for setting, with ``wnll_art.load_defence``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import wnll_art
from wnll_art.evaluation import setup
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.victims import Victim

pytestmark = pytest.mark.integration


class _Built(Exception):
    """Raised by the wrapped factory once a job's victims exist."""


def _expected(
    v: Victim, cfg: EvalConfig, models: dict[str, tuple[str, str]], weights: Path
) -> torch.nn.Module:
    name, head = models[v.model]
    wnll = (
        {"coupling": cfg.coupling, "wnll_batch_size": cfg.wnll_batch_size, "kernel": cfg.kernel}
        if head == "wnll"
        else {}
    )
    if head == "wnll" and name == "resnet56":
        wnll["template_size"] = cfg.template_size
    tvm = cfg.tvm if v.defence == "tvm" else False
    return wnll_art.load_defence(name, head=head, tvm=tvm, seed=cfg.seed, weights=weights, **wnll)  # type: ignore[arg-type]


def _same(a: torch.nn.Module, b: torch.nn.Module, defence: str) -> None:
    if defence not in (
        "none",
        "tvm",
    ):  # an ART preprocessor (load_defence knows TVM only): the same classifier
        from wnll_art.adapters.art_preprocessors import ArtPreprocessor

        assert isinstance(a.purifier, ArtPreprocessor) and a.purifier.name == defence  # type: ignore[union-attr]
        a, b = a.classifier, b.classifier  # type: ignore[assignment]
        assert a.settings() == b.settings() if hasattr(a, "settings") else True  # type: ignore[operator]
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    if defence in ("none", "tvm"):
        assert a.settings() == b.settings()  # type: ignore[operator]
        assert type(a.purifier) is type(b.purifier)  # type: ignore[union-attr]
        if a.purifier is not None:  # type: ignore[union-attr]
            assert a.purifier.settings() == b.purifier.settings()  # type: ignore[union-attr, operator]


def _jobs(out: Path, root: Path, weights: Path) -> dict[str, Any]:
    import sys

    from wnll_art.evaluation.jobs.defence_table import defence_table
    from wnll_art.evaluation.jobs.main import evaluate

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from evaluations.feature_geometry import feature_geometry
    from wnll_art.evaluation.jobs.transfer_table import transfer_table

    common = {"data_root": root, "weights": weights}
    return {
        "main": lambda cfg: evaluate(cfg, out_dir=out / "main", **common),
        "defence_table": lambda cfg: defence_table(cfg, out_dir=out / "table", **common),
        "defence_table_trained": lambda cfg: defence_table(
            cfg, out_dir=out / "trained", trained=["original+tvm"], **common
        ),
        "transfer_table": lambda cfg: transfer_table(cfg, out_dir=out / "transfer", **common),
        "compare": lambda cfg: evaluate(
            EvalConfig(**{**cfg.to_dict(), "tvm": cfg.tvm, "defences": ("none", "tvm", "jpeg")}),
            out_dir=out / "compare",
            protocol="adaptive",
            **common,
        ),
        "geometry": lambda cfg: feature_geometry(
            EvalConfig(**{**cfg.to_dict(), "tvm": cfg.tvm, "eps": (0.02,)}),
            out_dir=out / "geometry",
            **common,
        ),
    }


@pytest.mark.parametrize("job", ["main", "defence_table", "defence_table_trained", "transfer_table", "compare",
                                 "geometry"])  # fmt: skip
def test_each_jobs_victims_are_load_defences(
    job: str, tmp_path: Path, cifar_root: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = hub_dir / "hub" / "checkpoints" / "resnet56-4bfd9763.th"
    cfg = EvalConfig(n=2, eps=(0.02,), wnll_batch_size=2, template_size=20, seed=3, kernel="quartic")
    built: list[Victim] = []
    real = setup.build_victims

    def recording(*args: Any, **kwargs: Any) -> list[Victim]:
        built.extend(real(*args, **kwargs))
        raise _Built

    monkeypatch.setattr(setup, "build_victims", recording)
    with pytest.raises(_Built):
        _jobs(tmp_path, cifar_root, weights)[job](cfg)
    assert built
    models = {"softmax": ("resnet56", "softmax"), "wnll": ("resnet56", "wnll")}
    if job == "defence_table_trained":
        from wnll_art.zoo_trained import training_rows

        pair = training_rows()["original+tvm"]
        models = {"softmax": (pair["softmax"], "softmax"), "wnll": (pair["wnll"], "wnll")}
    for v in built:
        _same(v.module, _expected(v, cfg, models, weights), v.defence)
