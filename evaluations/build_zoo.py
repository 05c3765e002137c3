"""Ships trained heads as zoo models: measures each on the 10,000 test images (plain and under TVM) and writes it.

For each ``RUNS/<name>/`` made by ``wnll-art train --mode head --out RUNS/<name> ...`` (``final.pt``,
``final.json``, ``metrics.jsonl``), this writes ``wnll_art/zoo_weights/<name>.pt`` (buffer block, heads,
uint8 template; the frozen public backbone is not copied) and its row of ``zoo_weights/index.json`` with
the provenance (command, seed, epochs, wall time, device) and the accuracies measured with the shipped
file: clean, and under TVM with Guo et al.'s settings (seed 0, one draw per image, batches of 500 = the
transductive WNLL batch), as :func:`wnll_art.load_defence` computes them. The frozen backbone's features
are computed once and shared by all models; ``tests/slow/test_zoo_trained_real.py`` checks the full defence
module reproduces these numbers. Accuracies are fractions.

Run ``python evaluations/build_zoo.py --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

PROG = "build_zoo"
BATCH = 500  # the transductive WNLL batch of the shipped models
FIRST = 500  # the slow test reproduces the first 500 test images through the full defence module
NAMES = ("resnet56-softmax-tvm", "resnet56-softmax-tvmaug", "resnet56-wnll", "resnet56-wnll-tvm",
         "resnet56-wnll-tvmaug")  # fmt: skip


def _measure_inputs(n: int, data_root: str | None, weights: str | None) -> tuple[Any, Any, Any]:
    """Backbone features of the first ``n`` test images, plain and purified by the defence's TVM.

    The TVM is the one :func:`wnll_art.load_defence` (``tvm=True``, seed 0) applies, batch after batch of
    500 in order, so its masks are the ones a user of the shipped model gets on the same batches. The
    frozen public backbone is shared by every model, so its features are computed once.
    """
    import torch

    import wnll_art
    from wnll_art.tvm.module import TVMPurifier

    x, y = wnll_art.load_cifar10(data_root, split="test")
    x, y = x[:n].float() / 255, y[:n]
    backbone: Any = wnll_art.load_pretrained("resnet56", weights=weights)
    purifier = TVMPurifier(wnll_art.TVMSettings(), seed=0)
    plain, tvm = [], []
    with torch.no_grad():
        for i in range(0, n, BATCH):
            plain.append(backbone.features(x[i : i + BATCH]))
            tvm.append(backbone.features(purifier(x[i : i + BATCH])))
    return torch.cat(plain), torch.cat(tvm), y


def _accuracy(net: Any, output: str, feats: Any, y: Any) -> float:
    """Accuracy of a :class:`WNLLNet`'s WNLL or linear output from backbone features (batches of 500)."""
    import torch

    correct = 0
    with torch.no_grad():
        template = net.template_features()
        for i in range(0, feats.shape[0], BATCH):
            z = net.buffer(feats[i : i + BATCH]) if net.buffer is not None else feats[i : i + BATCH]
            scores = net.interpolate(z, template) if output == "wnll" else net.linear_head(z)
            correct += int((scores.argmax(1) == y[i : i + BATCH]).sum())
    return correct / int(feats.shape[0])


def _measured(net: Any, output: str, inputs: tuple[Any, Any, Any]) -> dict[str, Any]:
    plain, tvm, y = inputs
    first = slice(0, FIRST)
    return {"test_accuracy": _accuracy(net, output, plain, y), "test_accuracy_tvm": _accuracy(net, output, tvm, y),
            "test_accuracy_first500": _accuracy(net, output, plain[first], y[first]),
            "test_accuracy_tvm_first500": _accuracy(net, output, tvm[first], y[first]),
            "test_images": int(y.shape[0]), "tvm_settings": "TVMSettings() (Guo et al.), seed 0, batches of 500"}  # fmt: skip


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
    """Writes every named run under ``runs`` as a shipped model with its measured accuracies."""
    import torch

    import wnll_art
    from wnll_art.train.checkpoint import WNLL_BUILD_KEYS
    from wnll_art.zoo_trained import TRAINED_DIR, load_trained, write_trained

    inputs = _measure_inputs(n, data_root, weights)
    base = wnll_art.WNLLNet.from_pretrained("resnet56", template_size=500, seed=0, data_root=data_root,
                                            weights=weights)  # fmt: skip
    rows = {"resnet56": _measured(base, "softmax", inputs), "resnet56+wnll": _measured(base, "wnll", inputs)}
    (TRAINED_DIR / "base_measurements.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    for key, row in rows.items():
        print(f"{key}: clean {row['test_accuracy']:.2%}, under TVM {row['test_accuracy_tvm']:.2%}", flush=True)
    for name in names:
        run = runs / name
        state = torch.load(run / "final.pt", map_location="cpu", weights_only=True)
        record = json.loads((run / "final.json").read_text())
        output: Literal["wnll", "softmax"] = "softmax" if name.startswith("resnet56-softmax") else "wnll"
        data = "original+tvm" if name.endswith("tvmaug") else ("tvm" if name.endswith("-tvm") else "original")
        wnll = {k: v for k, v in record["wnll"].items() if k in WNLL_BUILD_KEYS}
        write_trained(state, name=name, wnll=wnll, output=output, training_data=data, record=_provenance(run))
        net = load_trained(name, output="wnll", weights=weights)  # from the shipped file, as users get it
        measured = _measured(net, output, inputs)
        write_trained(state, name=name, wnll=wnll, output=output, training_data=data,
                      record={**_provenance(run), **measured})  # fmt: skip
        print(f"{name}: clean {measured['test_accuracy']:.2%}, under TVM {measured['test_accuracy_tvm']:.2%} "
              f"({n} test images)", flush=True)  # fmt: skip


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
