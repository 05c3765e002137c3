"""``wnll-art train`` on bad input: one line on stderr, exit status 2, nothing written (fast)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from wnll_art import _argparse
from wnll_art.cli import main
from wnll_art.train.cli import add_train_parser, run_train

CUDA = torch.cuda.is_available()
SMALL = ["--train-subset", "200", "--test-subset", "100", "--template-size", "50", "--epochs", "1"]

BAD = {
    "cuda without CUDA": (["--device", "cuda"], "CUDA is not available"),
    "unknown device": (["--device", "bogus"], "not a torch device"),
    "negative subset": (["--train-subset", "-5"], "--train-subset"),
    "subset larger than the data": (["--mode", "full", "--train-subset", "60000"], "train_subset=60000"),
    "nan lr": (["--lr", "nan"], "--lr"),
    "zero epochs": (["--epochs", "0"], "--epochs"),
    "template not a multiple of the classes": (["--mode", "full", "--template-size", "15"], "multiple"),
    "head-mode template too": (["--template-size", "15"], "multiple"),
    "tvm prob above one": (["--tvm-prob", "1.5"], "--tvm-prob"),
    "negative tvm lamb": (["--tvm-lamb", "-1"], "--tvm-lamb"),
    "bf16 in head mode": (["--bf16"], "--mode full"),
    "bf16 without CUDA": (["--mode", "full", "--bf16", *SMALL], "--bf16 needs a CUDA --device"),
    "channels-last without CUDA": (
        ["--mode", "full", "--channels-last", *SMALL],
        "--channels-last needs a CUDA",
    ),
    "subset too small for the training template": ([*SMALL, "--train-subset", "300"], "train_subset=300"),
    "resume and overwrite": (["--resume", "--overwrite"], "not both"),
    "missing weights": (["--weights", "nowhere.th"], "--weights"),
    "batch of one": (["--batch-size", "1"], "batch_size"),
    "negative seed": (["--seed", "-1"], "seed"),
}


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors exit from parse_args
        return int(exc.code or 0)


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(
    case: str, tmp_path: Path, cifar_root: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    if case == "cuda without CUDA" and CUDA:
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    monkeypatch.chdir(tmp_path)
    argv, expected = BAD[case]
    out = tmp_path / "run"
    code = _exit_code(["train", "--out", str(out), "--data-root", str(cifar_root), "--no-progress", *argv])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wnll-art train: error:"), captured.err
    assert expected in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_unusable_out_folder(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "file":
        out = tmp_path / "taken"
        out.write_text("x")
    else:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
        out = parent / "run"
        if os.access(parent, os.W_OK):  # root ignores permissions: make the check see a read-only folder
            monkeypatch.setattr(_argparse.os, "access", lambda *_: False)
    code = _exit_code(["train", "--out", str(out), "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--out" in err[0], err
    assert (out.read_text() == "x") if kind == "file" else not out.exists()


def test_parser_accepts_good_options() -> None:
    parser = argparse.ArgumentParser(prog="wnll-art")
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--out", "x", "--mode", "full", "--data", "original+tvm",
                              "--gradient", "exact", "--epochs", "2", "--tvm-prob", "0.3", "--tvm-lamb", "0.5",
                              "--tvm-iterations", "3", "--lr", "0.05"])  # fmt: skip
    assert (args.mode, args.data, args.gradient, args.epochs, args.func) == (
        "full", "original+tvm", "exact", 2, run_train,
    )  # fmt: skip
    assert (args.tvm_prob, args.tvm_lamb, args.tvm_iterations, args.lr) == (0.3, 0.5, 3, 0.05)


def test_deterministic_is_set_before_training_and_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import types

    from wnll_art.train import recipe

    seen = []

    def fake_train(config: object, **kwargs: object) -> object:
        seen.append(torch.are_deterministic_algorithms_enabled())
        return types.SimpleNamespace(epochs_done=1, test_accuracy=None, linear_accuracy=None, wall_s=0.0,
                                     final_weights=None, zoo_record=None)  # fmt: skip

    monkeypatch.setattr(recipe, "train", fake_train)
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        assert _exit_code(["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--deterministic"]) == 0
        assert _exit_code(["train", "--out", str(tmp_path / "run"), "--epochs", "1"]) == 0
    finally:
        torch.use_deterministic_algorithms(False)
    assert seen == [True, False] and not torch.are_deterministic_algorithms_enabled()
    capsys.readouterr()


def test_a_second_training_into_a_held_folder_exits_2_naming_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two trainings into one --out would overwrite each other's checkpoints: the run folder's lock refuses the
    second (one line, exit 2) and the first keeps it; the lock is gone when the first ends."""
    import types

    from wnll_art._files import LOCK_NAME, results_lock
    from wnll_art.train import recipe

    ran: list[bool] = []
    monkeypatch.setattr(recipe, "train", lambda config, **kw: ran.append(True) or types.SimpleNamespace(
        epochs_done=1, test_accuracy=None, linear_accuracy=None, wall_s=0.0, final_weights=None, zoo_record=None))  # fmt: skip
    out = tmp_path / "run"
    with results_lock(out):  # the first training, still running
        assert _exit_code(["train", "--out", str(out), "--epochs", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by another run" in err[0] and f"pid {os.getpid()}" in err[0], err
    assert ran == [] and not (out / LOCK_NAME).exists()
    assert _exit_code(["train", "--out", str(out), "--epochs", "1"]) == 0 and ran == [True]
    assert not (out / LOCK_NAME).exists()
    capsys.readouterr()


TINY = [*SMALL, "--train-subset", "300", "--no-progress"]  # the last --train-subset wins


def _run_files(out: Path) -> dict[str, bytes | None]:
    """Every path under ``out`` (folders as ``None``) with its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() if p.is_file() else None for p in sorted(out.rglob("*"))}


@pytest.mark.parametrize("kept", ["metrics.jsonl", "last.pt", "final.pt"])
def test_existing_run_needs_resume_or_overwrite(
    kept: str, tmp_path: Path, cifar_root: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A run folder is never replaced without --resume or --overwrite: one line, exit 2, files untouched."""
    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    out = tmp_path / "run"
    out.mkdir()
    (out / kept).write_bytes(b"an earlier run")
    before = _run_files(out)
    code = _exit_code(["train", "--out", str(out), "--data-root", str(cifar_root), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert kept in err[0] and "--resume" in err[0] and "--overwrite" in err[0]
    assert _run_files(out) == before
    # --overwrite passes this check (the next one, the tiny subset's template, still refuses: nothing written)
    code = _exit_code(["train", "--out", str(out), "--data-root", str(cifar_root), "--overwrite", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "train_subset=300" in err[0], err
    assert _run_files(out) == before


def test_resume_with_another_config_is_refused_before_the_tvm_cache(
    tmp_path: Path, cifar_root: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from wnll_art.train import cli as train_cli
    from wnll_art.train.loop import CHECKPOINT_FORMAT

    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    out = tmp_path / "run"
    out.mkdir()
    options = ["--train-subset", "2000", "--test-subset", "100", "--epochs", "2", "--no-progress"]
    parser = argparse.ArgumentParser(prog="wnll-art")
    add_train_parser(parser.add_subparsers(dest="command"))
    config = train_cli._config(parser.parse_args(["train", "--out", str(out), *options]))
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 1, "config": config.to_dict()}, out / "last.pt")
    before = _run_files(out)
    argv = ["train", "--out", str(out), "--data-root", str(cifar_root), "--resume", "--data", "tvm",
            "--tvm-iterations", "1", *options]  # fmt: skip
    code = _exit_code(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'data'" in err[0] and "last.pt" in err[0], err
    assert _run_files(out) == before  # no cache/ folder: the TVM copies were never computed
