"""The paper's six networks trained whole, and an FGSM-trained baseline, side by side on one GPU in one call.

B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516 (2018), Tables 1-2: ResNet-56 with a softmax or a WNLL output, trained on
original, TVM-purified, or original + TVM images. E. Wong, L. Rice, J. Z. Kolter, "Fast is better than free",
ICLR 2020: FGSM training with a random start (eps 8/255, step 10/255), the adversarially trained baseline
the paper's Section 7 refers to.

Recipe (:mod:`wnll_art.train.budget`): the package's whole-network recipe (buffer block, parallel linear and
WNLL heads, alternating linear / WNLL steps, WNLL loss passed back straight through the linear head), with
the authors' optimiser (SGD, momentum 0.9, weight decay 5e-4; ``TrainWNLLDNN.py``) but a one-cycle learning
rate (peak 0.4 at batch 512, their 0.1 at 128 scaled linearly; Nesterov; 2 epochs of warm-up) over as many epochs as the device time allows, instead of their two
loops of 200 epochs. Every run measures its own speed while all seven run side by side; one common epoch
count is then chosen for all of them (:func:`wnll_art.train.budget.plan_epochs`), so the six paper networks
have the same schedule, and a hard budget stops every run in time whatever happens.

Verbs:
    prepare   CIFAR-10 (or random images with ``--fake``), the TVM copies of the training images (the
              training data of the TVM rows, Guo et al.'s settings, seed 0) and of the test images (the
              defence's purifier, seed 0, batches of 500: what ``load_defence(name, tvm=True)`` applies).
    worker    trains one model, measures it on the device from the file it ships, writes the file.
    all       prepare, then every worker as its own process, then a summary and ``records.tgz``.
    measure   steps/s of N copies of one run side by side (do parallel processes raise throughput?).
    ship      (here, after the call) copies the files into ``wnll_art/zoo_weights`` and writes their rows
              (with the measuring: :mod:`gpu_zoo_measure`).

A CPU dry run of the whole path (tiny network, random images, seconds)::

    python evaluations/gpu_train_zoo.py all --fake --device cpu --num-blocks 1 --n-train 2000 --n-test 500 \\
        --budget 20 --calib 4,8 --work /tmp/gz --out /tmp/gz_out
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gpu_zoo_measure import PGD, measure_shipped, ship  # noqa: I001 - the sibling script (evaluations/)

PROG = "gpu_train_zoo"
SEED = 0


@dataclass(frozen=True)
class Spec:
    """One model: its training data, output, WNLL loss weight and adversary."""

    data: str
    output: str
    wnll_weight: float
    adversarial: str = "none"

    @property
    def family(self) -> str:
        return "adversarial" if self.adversarial != "none" else "full"


SPECS: dict[str, Spec] = {
    "resnet56-full-softmax": Spec("original", "softmax", 0.0),
    "resnet56-full-wnll": Spec("original", "wnll", 1.0),
    "resnet56-full-softmax-tvm": Spec("tvm", "softmax", 0.0),
    "resnet56-full-wnll-tvm": Spec("tvm", "wnll", 1.0),
    "resnet56-full-softmax-tvmaug": Spec("original+tvm", "softmax", 0.0),
    "resnet56-full-wnll-tvmaug": Spec("original+tvm", "wnll", 1.0),
    "resnet56-fgsmrs": Spec("original", "softmax", 0.0, adversarial="fgsm-rs"),
}
HYPER: dict[str, Any] = {"batch_size": 512, "lr": 0.4, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True,
         "wnll_every": 1, "train_template_size": 500, "eval_template_size": 500, "wnll_batch_size": 500}  # fmt: skip


def budget_config(spec: Spec, *, num_blocks: int, budget: float, device: torch.device, gradient: str = "surrogate") -> Any:
    from wnll_art.train.budget import BudgetConfig
    from wnll_art.train.config import TrainConfig

    cuda = device.type == "cuda"
    options: dict[str, Any] = {"data": spec.data, "gradient": gradient, **HYPER}  # checked by TrainConfig
    train = TrainConfig(wnll_weight=spec.wnll_weight, num_blocks=num_blocks, seed=SEED, bf16=cuda, channels_last=cuda,
                        epochs=1, **options)  # fmt: skip
    return BudgetConfig(train=train, time_budget_s=budget, adversarial=spec.adversarial)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- prepare
def _splits(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if args.fake:  # random images, balanced labels: the speed and the code path, not the numbers
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 256, (args.n_train, 3, 32, 32), generator=g, dtype=torch.uint8)
        xt = torch.randint(0, 256, (args.n_test, 3, 32, 32), generator=g, dtype=torch.uint8)
        return x, torch.arange(args.n_train) % 10, xt, torch.arange(args.n_test) % 10
    from wnll_art.train.data import load_splits

    return load_splits(args.data_root, train_subset=args.n_train, test_subset=args.n_test)


def prepare(args: argparse.Namespace) -> None:
    """Writes ``work/data.pt``: uint8 train / TVM-train / test images, labels, float TVM test images."""
    from wnll_art.train.caches import tvm_images
    from wnll_art.tvm.module import TVMPurifier
    from wnll_art.tvm.settings import TVMSettings

    t0 = time.perf_counter()
    dev = torch.device(args.device)
    x, y, xt, yt = _splits(args)
    x_tvm = tvm_images(x, settings=TVMSettings(), seed=SEED, cache_dir=args.work / "cache", device=dev,
                       progress=False)  # fmt: skip
    purifier = TVMPurifier(TVMSettings(), seed=SEED)
    with torch.no_grad():
        xt_tvm = torch.cat([purifier((xt[i : i + 500].float() / 255).to(dev)).cpu() for i in range(0, len(xt), 500)])
    torch.save({"train": x, "train_tvm": x_tvm, "labels": y, "test": xt, "test_tvm": xt_tvm, "test_labels": yt,
                "fake": bool(args.fake)}, args.work / "data.pt")  # fmt: skip
    print(f"[prepare] {len(x)} training and {len(xt)} test images, TVM copies on {dev}: "
          f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip


# ------------------------------------------------------------------------------------------------ worker
def _build(spec: Spec, cfg: Any, images: torch.Tensor, labels: torch.Tensor) -> Any:
    """The seeded network, its template drawn from the pool with ``SEED`` (as ``wnll-art train`` does)."""
    from wnll_art.models.resnet import CifarResNet
    from wnll_art.train.checkpoint import with_placeholder_template
    from wnll_art.train.steps import draw_template_indices

    t = cfg.train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        backbone = CifarResNet(t.num_blocks, 10, check_inputs=False)
        net = with_placeholder_template(backbone, template_size=t.eval_template_size, buffer_dim=t.buffer_dim,
                                        gradient=t.gradient, wnll_batch_size=t.wnll_batch_size, k=t.k,
                                        sigma_neighbor=t.sigma_neighbor, kernel=t.kernel)  # fmt: skip
    t_idx = draw_template_indices(labels, t.eval_template_size // 10, generator=torch.Generator().manual_seed(t.seed),
                                  num_classes=10)  # fmt: skip
    with torch.no_grad():
        net.template_images.copy_(images[t_idx].float() / 255)
        net.template_labels.copy_(labels[t_idx])
    return net


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _calibrate(tr: Any, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Measures this run's speed in the common window, waits for the others', fixes the common plan."""
    from wnll_art.train.budget import plan_epochs

    start, end = args.calib
    tr.run(until=start)
    _sync(tr.device)
    s0, t0 = tr.step_count, tr.elapsed()
    tr.run(until=end)
    _sync(tr.device)
    rate = (tr.step_count - s0) / max(tr.elapsed() - t0, 1e-9)
    mine = {"seconds_per_epoch": tr.steps_per_epoch / max(rate, 1e-9), "steps_per_s": rate}
    (args.work / "rates").mkdir(exist_ok=True)
    (args.work / "rates" / f"{name}.json").write_text(json.dumps(mine))
    deadline = time.time() + 15
    while time.time() < deadline and len(list((args.work / "rates").glob("*.json"))) < args.runs:
        time.sleep(0.2)
    rates = {p.stem: json.loads(p.read_text()) for p in (args.work / "rates").glob("*.json")}
    # every run started at the same time, so the common plan is over the whole budget (the runs' progress
    # so far differs with their speed; adding it to a common remainder gave the 2026-12-04 runs 28-34 epochs)
    epochs = plan_epochs({k: v["seconds_per_epoch"] for k, v in rates.items()}, seconds=tr.config.time_budget_s,
                         runs_sharing=len(rates))  # fmt: skip
    tr.plan(epochs)
    return {"calibration": mine, "rates_seen": rates, "planned_epochs": epochs, "runs_sharing": len(rates)}


def worker(args: argparse.Namespace) -> None:
    """Trains ``args.name`` from the shared start time ``args.go``, then measures and writes it."""
    from wnll_art.train.budget import BudgetTrainer

    spec, dev = SPECS[args.name], torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    data = torch.load(args.work / "data.pt", weights_only=True)
    from wnll_art.train.data import training_pool

    images, labels, source = training_pool(spec.data, data["train"], data["train_tvm"], data["labels"])
    cfg = budget_config(spec, num_blocks=args.num_blocks, budget=args.budget, device=dev, gradient=args.wnll_gradient)
    net = _build(spec, cfg, images, labels).to(dev)
    if cfg.train.channels_last and dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    time.sleep(max(0.0, args.go - time.time()))
    tr = BudgetTrainer(net, images.to(dev), labels.to(dev), source.to(dev), cfg, dev)
    tr.t0 -= time.time() - args.go  # every run's budget counts from the common start
    plan = _calibrate(tr, args, args.name)
    tr.run()
    _sync(dev)
    train_s = tr.elapsed()
    print(f"[{args.name}] {tr.step_count} steps = {tr.step_count / tr.steps_per_epoch:.2f} epochs of "
          f"{plan['planned_epochs']} planned in {train_s:.1f} s", flush=True)  # fmt: skip
    record = {"name": args.name, "spec": spec.__dict__, "family": spec.family, "config": cfg.to_dict(),
              "steps": tr.step_count, "steps_per_epoch": tr.steps_per_epoch,
              "epochs_done": round(tr.step_count / tr.steps_per_epoch, 3), "train_s": round(train_s, 1),
              "epochs": tr.epoch_records, **plan}  # fmt: skip
    try:
        record.update(measure_shipped(net, spec, data, args))
    except Exception as exc:  # the model file is written first; a failed measurement is recorded, not fatal
        import traceback

        traceback.print_exc()
        record["measure_error"] = repr(exc)
    (args.work / "records").mkdir(exist_ok=True)
    (args.work / "records" / f"{args.name}.json").write_text(json.dumps(record, indent=1))


# ------------------------------------------------------------------------------------------ orchestration
def _common(args: argparse.Namespace) -> list[str]:
    calib = ",".join(str(c) for c in args.calib)
    return ["--work", str(args.work), "--out", str(args.out), "--device", args.device, "--num-blocks",
            str(args.num_blocks), "--budget", str(args.budget), "--calib", calib,
            "--wnll-gradient", args.wnll_gradient]  # fmt: skip


def run_all(args: argparse.Namespace) -> int:
    """prepare, then one process per model from a common start, then the summary and the records archive."""
    from wnll_art._device import device_facts

    t0 = time.time()
    names = list(SPECS) if not args.names else args.names.split(",")
    prepare(args)
    (args.work / "logs").mkdir(exist_ok=True)
    for stale in [*(args.work / "rates").glob("*.json"), *(args.work / "records").glob("*.json")]:
        stale.unlink()
    go = time.time() + args.start_delay
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    procs = {}
    for name in names:
        cmd = [sys.executable, __file__, "worker", "--name", name, "--go", str(go), "--runs", str(len(names)),
               *_common(args)]  # fmt: skip
        procs[name] = subprocess.Popen(cmd, stdout=(args.work / "logs" / f"{name}.log").open("w"),
                                       stderr=subprocess.STDOUT, env=env)  # fmt: skip
    facts = device_facts(torch.device(args.device))
    failed: list[str] = []
    running = dict(procs)
    while running:  # the archive is rewritten as each run ends, so a call cut short keeps what finished
        time.sleep(1.0)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                failed += [name] if proc.returncode != 0 else []
                records = _archive(args, t0, facts, failed)
                print(f"[all] {name} ended (exit {proc.returncode}) at {time.time() - t0:.0f} s", flush=True)
    records = _archive(args, t0, facts, failed)
    _print_summary(records, failed)
    for name in failed:
        print(f"--- {name} (failed) log tail:\n" + (args.work / "logs" / f"{name}.log").read_text()[-3000:])
    print(f"[all] {len(records)} models, {len(failed)} failed, {time.time() - t0:.1f} s", flush=True)
    return 1 if failed else 0


def _archive(args: argparse.Namespace, t0: float, facts: dict[str, Any], failed: list[str]) -> dict[str, Any]:
    """Writes ``summary.json`` and ``OUT/records.tgz`` (summary, logs, per-model records) from what is done."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted((args.work / "records").glob("*.json"))}
    summary = {"command": " ".join(sys.argv), "wall_s": round(time.time() - t0, 1), "failed": failed,
               "device_facts": facts, "torch": torch.__version__, "fake_data": bool(args.fake), "hyper": HYPER,
               "cuda_mps": os.environ.get("WNLL_MPS", "0") == "1",
               "pgd": PGD, "models": records}  # fmt: skip
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1))
    tmp = args.out / "records.tgz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for sub in ("summary.json", "logs", "records"):
            tar.add(args.work / sub, arcname=sub)
    os.replace(tmp, args.out / "records.tgz")
    return records


def _print_summary(records: dict[str, Any], failed: list[str]) -> None:
    def pct(value: object) -> str:
        return f"{value:.2%}" if isinstance(value, float) else "-"

    print("| model | epochs (planned) | train s | clean | under TVM | wnll / softmax head clean | PGD-20 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in records.items():
        pgd_acc = r.get("pgd20_softmax", {}).get("accuracy")
        print(f"| {name} | {r['epochs_done']} ({r['planned_epochs']}) | {r['train_s']} | {pct(r.get('test_accuracy'))} "
              f"| {pct(r.get('test_accuracy_tvm'))} | {pct(r.get('wnll_clean'))} / {pct(r.get('softmax_clean'))} "
              f"| {pct(pgd_acc)} |", flush=True)  # fmt: skip
    if failed:
        print(f"failed: {failed}")


def measure(args: argparse.Namespace) -> None:
    """Steps/s of ``--copies`` copies of the softmax run side by side on random images (one process each)."""
    from wnll_art.train.budget import BudgetTrainer

    if args.copy is None:  # the parent: start the copies, then add up their rates
        go = time.time() + args.start_delay
        n_train = str(args.n_train or 20000)
        procs = [subprocess.Popen([sys.executable, __file__, "measure", "--copy", str(i), "--go", str(go),
                                   "--n-train", n_train, *_common(args)], stdout=subprocess.PIPE, text=True)  # fmt: skip
                 for i in range(args.copies)]
        outputs = [p.communicate()[0].strip().splitlines() for p in procs]
        if any(p.returncode != 0 or not out for p, out in zip(procs, outputs, strict=True)):
            raise RuntimeError(f"a measuring process failed: {[p.returncode for p in procs]}")
        rates = [float(out[-1]) for out in outputs]
        print(f"[measure] {args.copies} copies side by side: {sum(rates):.1f} steps/s in all "
              f"({', '.join(f'{r:.1f}' for r in rates)})", flush=True)  # fmt: skip
        return
    dev = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    spec = SPECS["resnet56-full-softmax"]
    cfg = budget_config(spec, num_blocks=args.num_blocks, budget=args.budget, device=dev)
    g = torch.Generator().manual_seed(args.copy)
    x = torch.randint(0, 256, (args.n_train, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.arange(args.n_train) % 10
    net = _build(spec, cfg, x, y).to(dev)
    time.sleep(max(0.0, args.go - time.time()))
    tr = BudgetTrainer(net, x.to(dev), y.to(dev), torch.arange(args.n_train, device=dev), cfg, dev)
    tr.run(until=args.calib[0])
    _sync(dev)
    s0, t0 = tr.step_count, tr.elapsed()
    tr.run(until=args.calib[1])
    _sync(dev)
    print((tr.step_count - s0) / (tr.elapsed() - t0), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("verb", choices=("prepare", "worker", "all", "measure", "ship"))
    p.add_argument("fetched", nargs="?", type=Path, help="ship: the folder of the files fetched from the device")
    p.add_argument("--zoo-dir", type=Path, default=None, help="ship: where the zoo files go [wnll_art/zoo_weights]")
    p.add_argument("--work", type=Path, default=Path("/tmp/wnll_gpu_work"), help="scratch folder")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/wnll_gpu_out")), help="model files")
    p.add_argument("--data-root", default=None, help="CIFAR-10 root [$WNLL_ART_DATA]")
    p.add_argument("--device", default="cuda")
    p.add_argument("--fake", action="store_true", help="random images (speed and code path only)")
    p.add_argument("--n-train", type=int, default=None, help="first training images [all]")
    p.add_argument("--n-test", type=int, default=None, help="first test images [all]")
    p.add_argument("--num-blocks", type=int, default=9, help="blocks per stage [9: ResNet-56]")
    p.add_argument("--budget", type=float, default=500.0, help="training seconds of every run [500]")
    p.add_argument("--calib", default="30,50", help="window (s after the start) in which runs measure their speed")
    p.add_argument("--start-delay", type=float, default=20.0, help="seconds for the processes to start [20]")
    p.add_argument("--names", default="", help="comma-separated models [all seven]")
    p.add_argument("--wnll-gradient", choices=("surrogate", "exact"), default="surrogate",
                   help="gradient of the WNLL training step [surrogate: the recipe of the 2026-12-04 run]")
    p.add_argument("--name", default=None)
    p.add_argument("--go", type=float, default=None)
    p.add_argument("--runs", type=int, default=len(SPECS))
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--copy", type=int, default=None)
    args = p.parse_args(argv)
    args.calib = tuple(float(v) for v in args.calib.split(","))
    if args.fake:
        args.n_train, args.n_test = args.n_train or 50000, args.n_test or 10000
    if args.go is None:
        args.go = time.time()
    if args.verb == "ship":
        if args.fetched is None:
            p.error("ship needs the folder of the fetched files")
        if args.zoo_dir is None:
            from wnll_art.zoo_trained import TRAINED_DIR

            args.zoo_dir = TRAINED_DIR
        ship(args, seed=SEED, hyper=HYPER)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.verb == "prepare":
        prepare(args)
    elif args.verb == "worker":
        worker(args)
    elif args.verb == "measure":
        measure(args)
    else:
        return run_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
