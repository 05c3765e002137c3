"""Ships trained heads as zoo models: measures each on the 10,000 test images (plain and under TVM) and writes it.

For each ``RUNS/<name>/`` made by ``wnll-art train --mode head --out RUNS/<name> ...`` (``final.pt``,
``final.json``, ``metrics.jsonl``), this writes ``wnll_art/zoo_weights/<name>.pt`` (buffer block, heads,
uint8 template; the frozen public backbone is not copied) and its row of ``zoo_weights/index.json`` with
the provenance (command, seed, epochs, wall time, device) and the accuracies measured *from the shipped
file* through :func:`wnll_art.load_defence`: clean, and under TVM with Guo et al.'s settings (seed 0,
one draw per image, batches of 500 = the transductive WNLL batch). Accuracies are fractions.

Run ``python evaluations/build_zoo.py --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PROG = "build_zoo"
NAMES = ("resnet56-softmax-tvm", "resnet56-softmax-tvmaug", "resnet56-wnll", "resnet56-wnll-tvm",
         "resnet56-wnll-tvmaug")  # fmt: skip


def _accuracy(defence: object, x: object, y: object, batch: int = 500) -> float:
    import torch

    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):  # type: ignore[attr-defined]
            pred = defence(x[i : i + batch]).argmax(1)  # type: ignore[index, operator]
            correct += int((pred == y[i : i + batch]).sum())  # type: ignore[index]
    return correct / int(x.shape[0])  # type: ignore[attr-defined]


def _provenance(run: Path) -> dict[str, object]:
    record = json.loads((run / "final.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = record.get("extra", {}).get("config", {})
    return {
        "command": (run / "command.txt").read_text().strip() if (run / "command.txt").is_file() else None,
        "seed": config.get("seed"), "epochs": config.get("epochs"), "mode": config.get("mode"),
        "tvm": config.get("tvm"), "wnll_weight": config.get("wnll_weight"),
        "starting_checkpoint": "resnet56 (public, frozen backbone)",
        "train_wall_s": record.get("extra", {}).get("wall_s"),
        "epoch_time_s": [m.get("epoch_time_s") for m in metrics if m.get("epoch", 0) > 0],
        "train_device": "cpu (2 cores, 1 torch thread)", "created": record.get("created"),
        "licence": "BSD-2-Clause (derived from akamaster/pytorch_resnet_cifar10's resnet56)",
    }  # fmt: skip


def build(runs: Path, names: Sequence[str], *, n: int, data_root: str | None, weights: str | None) -> None:
    """Writes and measures every named run under ``runs``."""
    import torch

    import wnll_art
    from wnll_art.train.checkpoint import WNLL_BUILD_KEYS
    from wnll_art.zoo_trained import write_trained

    x, y = wnll_art.load_cifar10(data_root, split="test")
    x, y = x[:n].float() / 255, y[:n]
    for name in names:
        run = runs / name
        state = torch.load(run / "final.pt", map_location="cpu", weights_only=True)
        record = json.loads((run / "final.json").read_text())
        output = "softmax" if name.startswith("resnet56-softmax") else "wnll"
        data = "original+tvm" if name.endswith("tvmaug") else ("tvm" if name.endswith("-tvm") else "original")
        wnll = {k: v for k, v in record["wnll"].items() if k in WNLL_BUILD_KEYS}
        write_trained(state, name=name, wnll=wnll, output=output, training_data=data,
                      record=_provenance(run))  # fmt: skip
        t0 = time.perf_counter()
        plain = _accuracy(wnll_art.load_defence(name, weights=weights), x, y)
        under_tvm = _accuracy(wnll_art.load_defence(name, tvm=True, weights=weights), x, y)
        measured = {"test_accuracy": plain, "test_accuracy_tvm": under_tvm, "test_images": n,
                    "measure_wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        write_trained(state, name=name, wnll=wnll, output=output, training_data=data,
                      record={**_provenance(run), **measured})  # fmt: skip
        print(f"{name}: clean {plain:.2%}, under TVM {under_tvm:.2%} ({n} test images)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("runs", type=Path, help="folder holding one training output folder per model")
    p.add_argument("--names", default=",".join(NAMES), help="comma-separated run names [all five]")
    p.add_argument("--n", type=int, default=10000, help="test images measured [10000]")
    p.add_argument("--data-root", default=None, help="CIFAR-10 root [$WNLL_ART_DATA]")
    p.add_argument("--weights", default=None, help="the public resnet56 weights [hub cache]")
    args = p.parse_args(argv)
    names = [v for v in args.names.split(",") if v]
    missing = [name for name in names if not (args.runs / name / "final.pt").is_file()]
    if missing:
        print(f"{PROG}: error: no finished run (final.pt) for {missing} under {args.runs}", file=sys.stderr)
        return 2
    build(args.runs, names, n=args.n, data_root=args.data_root, weights=args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
