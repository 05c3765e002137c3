"""One prepared GPU check (at most ~8 minutes on one H200): every part timed, one PASS/FAIL/SKIP line each.

Parts (each a subprocess with its own time limit, run even after an earlier one failed):

1. ``tests``     the device tests with ``WNLL_ART_TEST_DEVICE=<device>`` (``-m "not slow"``).
2. ``overhead``  WNLLNet predict vs the plain ResNet-56 forward, batch 500 + template 500 (target <= 1.10).
3. ``tvm``       TVM purifier throughput, images/s on tensors already on the device.
4. ``table2``    the paper's Table 2 grid under the paper protocol on all 10,000 test images: ResNet-56 softmax
   and WNLL, with and without TVM, FGSM/IFGSM/C&W, 5 eps (``evaluations/defence_table.py``; it cannot run the
   paper protocol alone, so the cheapest adaptive attack, ``fgsm_exact_eot`` with one EOT draw, comes along).
5. ``train``     one epoch of full training, bf16 autocast and channels-last (CUDA only).
6. ``torchrun``  ``torchrun --nproc_per_node 2`` of ``wnll-art evaluate`` on one GPU (CUDA only): both ranks
   share the GPU and the records list the ranks' devices.

``--quick`` shrinks every part (few images, one eps, tiny subsets); ``--device cpu`` runs it without a GPU (the
CUDA-only parts then say SKIP). Exit status 1 if any part failed. Data: CIFAR-10 through ``WNLL_ART_DATA``,
weights through ``TORCH_HOME``; the WNLL template and training need the training set (all five
``data_batch_*`` files, md5-checked): where it is missing those parts say so and are skipped.

    python benchmarks/gpu_check.py --device cuda --out "$OUT/gpu_check"
    python benchmarks/gpu_check.py --quick --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = ("tests/unit/test_wnll_solver.py", "tests/unit/test_wnll_model.py", "tests/unit/test_defence.py",
              "tests/unit/test_tvm.py", "tests/unit/test_device.py", "tests/integration/test_devices.py",
              "tests/unit/test_train.py")  # fmt: skip
# the tests of test_train.py that take the device (the others train on the CPU whatever the device)
TRAIN_TESTS = "not test_train.py or test_device or wnll_step"
# seconds per part (full run), summing to 8 minutes
LIMITS = {"tests": 90, "overhead": 30, "tvm": 30, "table2": 210, "train": 60, "torchrun": 60}


@dataclass
class Outcome:
    """What a part reports: ``PASS``, ``FAIL`` or ``SKIP``, and one line of detail."""

    status: str
    detail: str


@dataclass
class Check:
    """The run's options and its environment."""

    device: str
    quick: bool
    out: Path
    train_subset: int | None
    deadline: float

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg", **extra}

    def run(
        self, part: str, args: list[str], **env: str
    ) -> tuple[subprocess.CompletedProcess[str] | None, str]:
        """Runs ``python args`` in the repository root under the part's limit; ``(result, tail of output)``
        (``None`` when the limit was reached). The whole output goes to ``out/<part>.log``: a failing part's
        one line does not say which test failed."""
        limit = max(1.0, min(LIMITS[part] * (5 if self.quick else 1), self.deadline - time.monotonic()))
        log = self.out / f"{part}.log"
        try:
            proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env(**env), capture_output=True,
                                  text=True, timeout=limit)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            out = "".join(
                t.decode() if isinstance(t, bytes) else t for t in (exc.stdout or "", exc.stderr or "")
            )
            log.write_text(out)
            return None, f"timed out after {limit:.0f} s; last output: {_tail(out)} (log: {log})"
        out = proc.stdout + proc.stderr
        log.write_text(out)
        return proc, _tail(out)


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _train_set_missing() -> str | None:
    """Why the CIFAR-10 training set cannot be loaded here, or ``None`` when it can."""
    from wnll_art.data import TRAIN_FILES, _check_file, default_data_root

    env = os.environ.get("WNLL_ART_DATA")
    base = Path(env) if env else default_data_root()
    try:
        for name, md5 in TRAIN_FILES.items():
            _check_file(base / "cifar-10-batches-py" / name, md5)
    except (FileNotFoundError, ValueError) as exc:
        return f"the CIFAR-10 training set is missing under WNLL_ART_DATA={base} ({' '.join(str(exc).split())[:160]})"
    return None


# ------------------------------------------------------------------------------------------------ parts
def part_tests(c: Check) -> Outcome:
    args = ["-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider", *TEST_FILES, "-k", TRAIN_TESTS]
    if c.quick:  # the tests that take the device fixture, and the host-read count
        args[-1] = "device or host_reads or csr or wnll_step"
    proc, tail = c.run("tests", args, WNLL_ART_TEST_DEVICE=c.device)
    if proc is None:
        return Outcome("FAIL", tail)
    summary = next((ln for ln in reversed(proc.stdout.splitlines()) if " in " in ln and "passed" in ln), tail)
    return Outcome("PASS" if proc.returncode == 0 else "FAIL", summary.strip("= "))


def part_overhead(c: Check) -> Outcome:
    n, repeats = (20, 1) if c.quick else (500, 5)
    proc, tail = c.run("overhead", ["benchmarks/bench_wnll_predict.py", "--device", c.device, "--n", str(n),
                                    "--template-size", str(n), "--repeats", str(repeats)])  # fmt: skip
    match = re.search(r"ratio wnll / resnet56 = ([0-9.]+)", tail)
    if proc is None or proc.returncode != 0 or match is None:
        return Outcome("FAIL", tail)
    ratio = float(match.group(1))
    if c.quick:
        return Outcome(
            "PASS", f"ratio {ratio:.3f} at batch {n} + template {n} (target 1.10 checked on full runs)"
        )
    return Outcome(
        "PASS" if ratio <= 1.10 else "FAIL", f"ratio {ratio:.3f} at batch 500 + template 500 (target <= 1.10)"
    )


def part_tvm(c: Check) -> Outcome:
    n, repeats = (20, 1) if c.quick else (2000, 3)
    proc, tail = c.run("tvm", ["benchmarks/bench_tvm.py", "--device", c.device, "--no-art", "--no-compile",
                               "--n-images", str(n), "--repeats", str(repeats)])  # fmt: skip
    if proc is None or proc.returncode != 0:
        return Outcome("FAIL", tail)
    rates = re.findall(r"ours (\S+)\s+(\w+)\s+([0-9.]+) images/s", proc.stdout)
    return Outcome("PASS", "; ".join(f"{p} {kind}: {float(r):.0f} images/s" for p, kind, r in rates) or tail)


def part_table2(c: Check) -> Outcome:
    why = _train_set_missing()
    if why:
        return Outcome("SKIP", f"the WNLL template is drawn from the training set: {why}")
    out = c.out / "table2"
    args = ["evaluations/defence_table.py", "--device", c.device, "--out", str(out),
            "--adaptive-attacks", "fgsm_exact_eot", "--eot-samples", "1"]  # fmt: skip
    if c.quick:
        args += ["--n", "20", "--wnll-batch-size", "10", "--template-size", "20", "--eps", "0.02",
                 "--steps", "2", "--tvm-iterations", "3"]  # fmt: skip
    else:
        args += ["--n", "10000"]
    proc, tail = c.run("table2", args)
    if proc is None or proc.returncode != 0:
        return Outcome("FAIL", tail)
    cells = list(out.rglob("cells/*.json"))
    return Outcome("PASS", f"{len(cells)} cells; table: {out / 'defence_table.md'}")


def part_train(c: Check) -> Outcome:
    if not c.cuda:
        return Outcome("SKIP", "needs CUDA (bf16 autocast and channels-last are CUDA-only options)")
    why = _train_set_missing()
    if why:
        return Outcome("SKIP", f"training needs the training set: {why}")
    out = c.out / "train"  # a re-run of the check replaces its run (--overwrite)
    args = ["-m", "wnll_art.cli", "train", "--mode", "full", "--epochs", "1", "--bf16", "--channels-last",
            "--device", c.device, "--out", str(out), "--overwrite", "--no-progress"]  # fmt: skip
    subset = 2000 if c.quick and c.train_subset is None else c.train_subset
    if subset is not None:
        args += ["--train-subset", str(subset)]
    if c.quick:
        args += ["--test-subset", "500"]
    proc, tail = c.run("train", args)
    if proc is None or proc.returncode != 0:
        return Outcome("FAIL", tail)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = metrics[-1]
    return Outcome("PASS", f"{last.get('images_per_s')} images/s, epoch {last.get('epoch_time_s')} s, "
                           f"WNLL test accuracy {last.get('test_acc_wnll')}")  # fmt: skip


def part_torchrun(c: Check) -> Outcome:
    if not c.cuda:
        return Outcome("SKIP", "needs CUDA (two processes sharing one GPU)")
    out = c.out / "torchrun"
    models = "softmax" if _train_set_missing() else "softmax,wnll"  # WNLL's template needs the training set
    n = "8" if c.quick else "200"
    args = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "wnll_art.cli",
            "evaluate", "--device", c.device, "--num-images", n, "--wnll-batch-size", "50" if not c.quick else "4",
            "--template-size", "100", "--eps", "0.08", "--attacks", "fgsm,bim", "--models", models,
            "--no-progress", "--out", str(out)]  # fmt: skip
    proc, tail = c.run("torchrun", args)
    if proc is None or proc.returncode != 0:
        return Outcome("FAIL", tail)
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    devices = {tuple(r["settings"]["device_facts"].get("rank_devices", ())) for r in cells}
    # one GPU: both ranks on cuda:0; more GPUs: rank r on cuda:r
    expected = {tuple(f"cuda:{r % _cuda_count()}" for r in range(2))}
    ok = bool(cells) and (devices == expected or c.device != "cuda")
    return Outcome("PASS" if ok else "FAIL", f"{len(cells)} cells ({models}); rank devices {sorted(devices)}")


def _cuda_count() -> int:
    import torch

    return max(torch.cuda.device_count(), 1)


PARTS: dict[str, Callable[[Check], Outcome]] = {
    "tests": part_tests, "overhead": part_overhead, "tvm": part_tvm, "table2": part_table2,
    "train": part_train, "torchrun": part_torchrun,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Runs the chosen parts in order; returns 1 if any failed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    p.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N [cuda]")
    p.add_argument(
        "--quick", action="store_true", help="shrink every part (few images, one eps, tiny subsets)"
    )
    p.add_argument("--out", default=None, help="results folder [a new temporary folder]")
    p.add_argument(
        "--train-subset", type=int, default=None, help="train on the first N training images [all]"
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-time budget of all parts; a part gets at most what is left [480; --quick: 1800]")  # fmt: skip
    args = p.parse_args(argv)
    from wnll_art._argparse import device

    try:
        device(args.device)
    except argparse.ArgumentTypeError as exc:
        p.error(f"--device {exc}")
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"--parts: unknown {sorted(unknown)}; choose among {','.join(PARTS)}")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget_s if args.budget_s is not None else (1800.0 if args.quick else 480.0)
    check = Check(args.device, args.quick, out, args.train_subset, time.monotonic() + budget)
    print(f"gpu_check: device {args.device}{' (quick)' if args.quick else ''}, results in {out}", flush=True)
    failed = 0
    for name in args.parts.split(","):
        start = time.monotonic()
        try:
            outcome = PARTS[name](check)
        except Exception as exc:  # a broken part must not stop the others
            outcome = Outcome("FAIL", f"{type(exc).__name__}: {exc}")
        failed += outcome.status == "FAIL"
        print(
            f"{outcome.status:4s} {name:9s} {time.monotonic() - start:7.1f} s  {outcome.detail}", flush=True
        )
    print(f"gpu_check: {'FAILED' if failed else 'ok'} ({failed} part(s) failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
