"""`wnll-art evaluate` with bad options: one line naming the problem and the remedy, exit 2, nothing written
(integration tier: no data needed, but the harness imports ART)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from wnll_art.cli import main

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("option", "match"),
    [
        (["--eot-samples", "0"], "--eot-samples: expected a positive integer"),
        (["--eps", ","], "--eps: expected one or more radii in (0, 1]"),
        (["--eps", "0"], "--eps: expected one or more radii in (0, 1]"),
        (["--template-size", "15"], "--template-size: expected a multiple of 10"),
        (["--cw-steps", "-3"], "--cw-steps: expected a positive integer"),
        (["--n", "0"], "--n/--num-images: expected a positive integer"),
        (["--wnll-batch-size", "x"], "--wnll-batch-size: expected a positive integer"),
        (["--seed", "-1"], "--seed: expected an integer >= 0"),
        (["--tvm-prob", "2"], "--tvm-prob: expected a number in [0, 1]"),
        (["--tvm-lamb", "nan"], "--tvm-lamb: expected a finite positive number"),
        (["--device", "bogus"], "'bogus' is not a torch device (use cpu, cuda or cuda:N)"),
        (["--device", "cuda"], "CUDA is not available on this machine; use --device cpu"),
        (["--models", "wnll,nope"], "unknown model 'nope'; choose from softmax, wnll, fgsmrs-wnll or a trained model"),
        (["--defences", "tvm,jpg"], "unknown defences ['jpg']; choose from none, tvm, art_tvm, jpeg"),
        (["--attacks", "nope"], "main attacks: unknown ['nope'] or none given; choose from fgsm, bim"),
        (["--protocol", "paper", "--attacks", "linf_pgd"], "paper attacks: unknown ['linf_pgd']"),
        (["--protocol", "nope"], "--protocol: invalid choice: 'nope' (choose from 'main', 'paper', 'adaptive', 'authors')"),
        (["--n", "20000"], "start + n <= 10000"),
    ],
)
def test_bad_option_is_one_line_exit_2_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], option: list[str],
    match: str,
) -> None:  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:  # argparse errors exit; later ones return 2
        raise SystemExit(main(["evaluate", "--out", str(out), *option]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wnll-art evaluate: error: ") and match in err, err
    assert not out.exists()


def test_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    out.write_text("mine")
    assert main(["evaluate", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder; choose another --out" in err
    assert out.read_text() == "mine"


def test_out_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # chmod does not stop root (CI runs as root): ask os.access as a non-root user would
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    assert main(["evaluate", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not writable; choose a writable --out" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "target", "expected"),
    [
        (
            ["evaluate", "--no-progress"],
            "wnll_art.evaluation.jobs.main.evaluate",
            "finished cells are kept in",
        ),
        (["train", "--epochs", "1", "--no-progress"], "wnll_art.train.recipe.train", "--resume"),
    ],
)
def test_ctrl_c_is_one_line_and_exit_130(
    command: list[str], target: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    out = tmp_path / "run"
    try:
        code: int | str = main([command[0], "--out", str(out), *command[1:]])
    except KeyboardInterrupt:  # today's behaviour: a traceback (caught here so pytest itself carries on)
        code = "KeyboardInterrupt escaped"
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert (
        len(err) == 1 and err[0].startswith(f"wnll-art {command[0]}: interrupted") and expected in err[0]
    ), err
    assert str(out) in err[0]


def test_a_threat_model_violation_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wnll_art import cli
    from wnll_art.evaluation.engine import ThreatModelError

    def refuse(args: object) -> int:
        raise ThreatModelError("softmax/none/fgsm at eps=0.02, batch 0: max |x_adv - x| = 0.04 exceeds eps = 0.02")

    monkeypatch.setattr(cli, "_run_evaluate", refuse)
    assert cli.main(["evaluate", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exceeds eps" in err[0] and "not written" in err[0]
