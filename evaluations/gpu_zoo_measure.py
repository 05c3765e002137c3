"""Measuring the models of :mod:`gpu_train_zoo` from the files they ship, and shipping them into the zoo.

A model is measured after it is written, from the written file (as users load it), in float32 with TF32 off:
clean and TVM accuracy (the defence's purifier, seed 0, batches of 500) of both heads on the test images, and
PGD-20 (A. Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018; eps 8/255,
step 2/255, uniform random start) for the adversarially trained baseline and its softmax counterpart.
``ship`` then copies the fetched files into ``wnll_art/zoo_weights`` with their rows (sha256 checked).
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import time
from typing import Any

import torch

__all__ = ["PGD", "measure_shipped", "pgd", "ship"]

PGD = {"eps": 8 / 255, "step": 2 / 255, "steps": 20, "images": 500}
SEED = 0  # the PGD start; the training seed is gpu_train_zoo's


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dev: torch.device) -> list[bool]:
    """Per-image correctness, in order, batches of 500 (the transductive WNLL batch)."""
    out: list[bool] = []
    with torch.no_grad():
        for i in range(0, len(y), 500):
            xb = x[i : i + 500]
            xb = (xb.float() / 255 if xb.dtype == torch.uint8 else xb).to(dev)
            out += (model(xb).argmax(1).cpu() == y[i : i + 500]).tolist()
    return out


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """L-inf PGD (Madry et al. 2018) with a uniform random start on the cross-entropy of ``model``'s
    scores; ``PGD`` holds eps, step and steps. Images ``(B, 3, H, W)`` in [0, 1] -> adversarial images."""
    eps, step = PGD["eps"], PGD["step"]
    start = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
    adv = (x + start).clamp(0, 1)
    for _ in range(int(PGD["steps"])):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(adv).float(), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.min(torch.max(adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def _pgd_accuracy(model: torch.nn.Module, data: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    n = min(int(PGD["images"]), len(data["test_labels"]))
    x, y = (data["test"][:n].float() / 255).to(dev), data["test_labels"][:n].to(dev)
    gen = torch.Generator(device=dev).manual_seed(SEED)
    adv = pgd(model, x, y, generator=gen)
    linf = float((adv - x).abs().max())
    with torch.no_grad():
        correct = (model(adv).argmax(1) == y).tolist()
    return {"accuracy": sum(correct) / n, "images": n, "max_linf": linf, **{k: v for k, v in PGD.items() if k != "images"}}


def measure_shipped(net: Any, spec: Any, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Writes the shipped file, rebuilds the model from it (as users get it) and measures it in float32."""
    from wnll_art.zoo import sha256_file
    from wnll_art.zoo_trained import LinearHead, full_blob, full_from_blob

    dev = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    net = net.to(memory_format=torch.contiguous_format).float().eval()
    net.backbone.check_inputs = True
    in_memory = _accuracy(net if spec.output == "wnll" else LinearHead(net).eval(), data["test"], data["test_labels"], dev)
    net = net.cpu()
    path = args.out / f"{args.name}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(full_blob(net), tmp)
    os.replace(tmp, path)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    t0 = time.perf_counter()
    measured: dict[str, Any] = {"file": path.name, "sha256": sha256_file(path),
                                "test_accuracy_float32_weights": sum(in_memory) / len(in_memory)}  # fmt: skip
    for output in ("wnll", "softmax"):
        net_out = full_from_blob(blob).to(dev)
        model: torch.nn.Module = net_out if output == "wnll" else LinearHead(net_out).eval()
        for split, key in (("clean", "test"), ("tvm", "test_tvm")):
            ok = _accuracy(model, data[key], data["test_labels"], dev)
            measured[f"{output}_{split}"] = sum(ok) / len(ok)
            measured[f"{output}_{split}_first500"] = sum(ok[:500]) / len(ok[:500])
    out = spec.output
    measured.update(test_accuracy=measured[f"{out}_clean"], test_accuracy_tvm=measured[f"{out}_tvm"],
                    test_accuracy_first500=measured[f"{out}_clean_first500"],
                    test_accuracy_tvm_first500=measured[f"{out}_tvm_first500"], test_images=len(data["test_labels"]))  # fmt: skip
    if spec.adversarial != "none" or args.name == "resnet56-full-softmax":
        measured["pgd20_softmax"] = _pgd_accuracy(LinearHead(full_from_blob(blob).to(dev)).eval(), data, dev)
    measured["measure_s"] = round(time.perf_counter() - t0, 1)
    print(f"[{args.name}] clean {measured['test_accuracy']:.2%}, TVM {measured['test_accuracy_tvm']:.2%} "
          f"(wnll {measured['wnll_clean']:.2%}, softmax {measured['softmax_clean']:.2%})"
          + (f", PGD-20 {measured['pgd20_softmax']['accuracy']:.2%}" if "pgd20_softmax" in measured else ""),
          flush=True)  # fmt: skip
    return measured



def ship(args: argparse.Namespace, *, seed: int, hyper: dict[str, Any]) -> None:
    """Copies each fetched ``<name>.pt`` into ``wnll_art/zoo_weights`` and writes its ``index.json`` row
    with its provenance and the accuracies measured on the device (sha256 checked against the record)."""
    import shutil

    from wnll_art.zoo import sha256_file
    from wnll_art.zoo_trained import write_index_row

    with tarfile.open(args.fetched / "records.tgz") as tar:
        summary = json.loads(tar.extractfile("summary.json").read())  # type: ignore[union-attr]
    if summary["fake_data"]:
        raise ValueError("these models were trained on random images (--fake); they are not shipped")
    wanted = args.names.split(",") if args.names else list(summary["models"])
    for name in wanted:
        rec = summary["models"][name]
        src = args.fetched / rec["file"]
        if sha256_file(src) != rec["sha256"]:
            raise ValueError(f"{src}: sha256 differs from the device's record")
        shutil.copyfile(src, args.zoo_dir / rec["file"])
        keep = ("test_accuracy", "test_accuracy_tvm", "test_accuracy_first500", "test_accuracy_tvm_first500",
                "test_images", "wnll_clean", "wnll_tvm", "softmax_clean", "softmax_tvm", "pgd20_softmax",
                "test_accuracy_float32_weights",
                "epochs_done", "planned_epochs", "steps", "train_s", "calibration")  # fmt: skip
        record = {k: rec[k] for k in keep if k in rec}
        record.update(command=summary["command"], mode="full", seed=seed, hyper=summary["hyper"],
                      schedule=f"one-cycle (linear warm-up {rec['config']['warmup_epochs']} epochs to lr "
                               f"{hyper['lr']}, linear decay to 0) over {rec['planned_epochs']} epochs, "
                               "capped by the time budget",
                      adversarial=rec["spec"]["adversarial"], tvm=rec["config"]["train"]["tvm"],
                      tvm_settings="TVMSettings() (Guo et al.), seed 0, batches of 500",
                      train_device=summary["device_facts"], torch=summary["torch"], cuda_mps=summary["cuda_mps"],
                      licence="BSD-3-Clause (wnll-art)", epoch_log=rec["epochs"])  # fmt: skip
        row = {"file": rec["file"], "sha256": rec["sha256"], "base": None, "output": rec["spec"]["output"],
               "training_data": rec["spec"]["data"], "family": rec["family"], "record": record}  # fmt: skip
        write_index_row(name, row, directory=args.zoo_dir)
        print(f"shipped {name}: clean {rec['test_accuracy']:.2%}, TVM {rec['test_accuracy_tvm']:.2%}")


