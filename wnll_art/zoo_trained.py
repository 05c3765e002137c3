"""Our trained models, shipped with the package: head fine-tunes on the frozen public ResNet-56, and whole networks.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018), Tables 1-2:
softmax and WNLL models trained on original, TVM and original + TVM images.

Each model is ``wnll-art train --mode head`` on the public ResNet-56 (zoo ``"resnet56"``, BSD-2-Clause):
the backbone is frozen, so a shipped file holds only what training changed (the FC+ReLU buffer block, the
linear head) and the WNLL template (uint8 images + labels), a few MB. Loading builds the backbone from the
base zoo entry (sha256-checked, hub cache or ``weights=``) and the head from the package file (sha256
checked against ``zoo_weights/index.json``, ``weights_only=True``). No download of our own files.

Whole networks (``family`` ``"full"``: the paper's six networks trained from scratch; ``"adversarial"``: the
FGSM-trained baseline of Wong et al. 2020) ship every weight in their file (format ``trained-full/v1``: the
:class:`WNLLNet` state dict over a CIFAR ResNet, the uint8 template), so they need no base backbone.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from wnll_art.wnll.model import BUILD_KEYS, WNLLNet
from wnll_art.zoo import load_pretrained, sha256_file

__all__ = ["FULL_FORMAT", "TRAINED_DIR", "LinearHead", "TrainedEntry", "base_measurements", "full_blob",
           "full_from_blob", "load_trained", "trained_models", "training_rows", "write_index_row",
           "write_trained"]  # fmt: skip

TRAINED_DIR = Path(__file__).resolve().parent / "zoo_weights"
FORMAT = "wnll-art/trained-head/v1"
FULL_FORMAT = "wnll-art/trained-full/v1"
FAMILIES = ("head", "full", "adversarial")
Output = Literal["wnll", "softmax"]


@dataclass(frozen=True)
class TrainedEntry:
    """One shipped model (a row of ``zoo_weights/index.json``).

    Attributes:
        name: Zoo name, e.g. ``"resnet56-wnll-tvmaug"``.
        file: File name under :data:`TRAINED_DIR`.
        sha256: Hex digest of that file.
        base: Zoo name of the frozen backbone (``None`` for a whole network).
        output: The model's trained output: ``"wnll"`` (WNLL head) or ``"softmax"`` (linear head).
        training_data: ``"original"``, ``"tvm"`` or ``"original+tvm"``.
        record: Provenance and measurements (command, seed, epochs, wall time, device, accuracies as
            fractions on the 10,000 test images, plain and under TVM).
        family: ``"head"`` (head fine-tune on ``base``), ``"full"`` (the paper's whole network) or
            ``"adversarial"`` (a whole network trained on adversarial images).
    """

    name: str
    file: str
    sha256: str
    base: str | None
    output: Output
    training_data: str
    record: Mapping[str, Any]
    family: str = "head"


class LinearHead(nn.Module):
    """The softmax model of a trained :class:`WNLLNet`: backbone -> buffer block -> linear head (logits).

    Args:
        net: The trained network (shared, not copied).

    Shapes:
        ``(N, 3, H, W)`` float in [0, 1] -> ``(N, C)`` logits.
    """

    def __init__(self, net: WNLLNet) -> None:
        super().__init__()
        self.net = net
        self.num_classes = net.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.linear_logits(self.net.check_input(x))


@functools.lru_cache(maxsize=4)
def _index(directory: Path) -> dict[str, TrainedEntry]:
    path = directory / "index.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text(encoding="utf-8"))
    return {name: TrainedEntry(name=name, **row) for name, row in rows.items()}


def trained_models(directory: Path = TRAINED_DIR) -> dict[str, TrainedEntry]:
    """The shipped models by name (read once from ``index.json``)."""
    return dict(_index(Path(directory)))


def training_rows(directory: Path = TRAINED_DIR, *, family: str = "head") -> dict[str, dict[str, str]]:
    """The paper's training-data rows as shipped: ``{training data: {"softmax": name, "wnll": name}}``.

    ``family="head"``: ``"original"``'s softmax model is the public ``"resnet56"``; every other name is a
    shipped head fine-tune whose ``training_data`` and ``output`` place it. ``family="full"``: the whole
    networks. Rows missing a model are left out.
    """
    if family not in ("head", "full"):
        raise ValueError(f"family must be 'head' or 'full', got {family!r}")
    rows: dict[str, dict[str, str]] = {"original": {"softmax": "resnet56"}} if family == "head" else {}
    for name, entry in sorted(trained_models(directory).items()):
        if entry.family == family:
            rows.setdefault(entry.training_data, {}).setdefault(entry.output, name)
    return {data: row for data, row in rows.items() if set(row) == {"softmax", "wnll"}}


def base_measurements(directory: Path = TRAINED_DIR) -> dict[str, dict[str, Any]]:
    """Measured accuracies of the public zoo models (softmax, and with a post-hoc WNLL head), if shipped."""
    path = Path(directory) / "base_measurements.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_trained(
    name: str,
    *,
    output: Output | None = None,
    weights: str | os.PathLike[str] | None = None,
    directory: Path = TRAINED_DIR,
    **wnll_options: Any,
) -> nn.Module:
    """A shipped model, in eval mode on the CPU.

    Args:
        name: A key of :func:`trained_models`.
        output: ``"wnll"`` (a :class:`WNLLNet`) or ``"softmax"`` (its :class:`LinearHead`); default the
            output the model was trained for.
        weights: The base backbone's weights file (default: the hub cache), sha256-checked.
        directory: Where the shipped files are.
        **wnll_options: :class:`WNLLNet` settings to override (``coupling``, ``gradient``, ...).

    Raises:
        KeyError: Unknown name. ValueError: A file whose sha256 or format does not match.
    """
    models = trained_models(directory)
    if name not in models:
        raise KeyError(f"unknown trained model {name!r}; shipped: {sorted(models)}")
    entry = models[name]
    path = Path(directory) / entry.file
    if sha256_file(path) != entry.sha256:
        raise ValueError(f"sha256 mismatch for {path}: the shipped file is damaged; reinstall wnll-art")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and blob.get("format") == FULL_FORMAT:
        net = full_from_blob(blob, **wnll_options)
    elif isinstance(blob, dict) and blob.get("format") == FORMAT and entry.base is not None:
        backbone = load_pretrained(entry.base, weights=weights)
        options = {**blob["wnll"], **wnll_options}
        net = WNLLNet(backbone, blob["template_images"], blob["template_labels"], **options)
        missing, unexpected = net.load_state_dict(blob["head"], strict=False)
        if unexpected or any(not k.startswith(("backbone.", "template_")) for k in missing):
            raise ValueError(f"{path} does not fit {name}: unexpected {unexpected}, missing {missing}")
    else:
        raise ValueError(f"{path} is neither a {FORMAT} nor a {FULL_FORMAT} file")
    net = net.eval()
    chosen = output or entry.output
    if chosen not in ("wnll", "softmax"):
        raise ValueError(f"output must be 'wnll' or 'softmax', got {chosen!r}")
    return net if chosen == "wnll" else LinearHead(net).eval()


def full_blob(net: WNLLNet) -> dict[str, Any]:
    """The ``trained-full/v1`` content of a whole trained network: every weight (CPU; convolution and linear
    weight matrices stored as float16, which halves the file, everything else as float32), its WNLL build
    settings and its template as uint8 images. :func:`full_from_blob` loads the weights into a float32
    model; measure a shipped model from its file, as users get it.

    Raises:
        TypeError: If the backbone is not a :class:`~wnll_art.models.resnet.CifarResNet`.
        ValueError: A template that is not on the 8-bit grid (it could not be shipped losslessly).
    """
    from wnll_art.models.resnet import CifarResNet

    if not isinstance(net.backbone, CifarResNet):
        raise TypeError(f"net.backbone must be a CifarResNet, got {type(net.backbone).__name__}")
    uint8 = _template_uint8(net.template_images)
    settings = net.settings()
    state = {k: _compact(v) for k, v in net.state_dict().items() if not k.startswith("template_")}
    return {"format": FULL_FORMAT, "arch": {"num_blocks": len(net.backbone.layer1), "num_classes": net.num_classes},
            "state": state, "wnll": {k: settings[k] for k in BUILD_KEYS},
            "template_images": uint8, "template_labels": net.template_labels.detach().cpu().long()}  # fmt: skip


def _template_uint8(images: torch.Tensor) -> torch.Tensor:
    """A template in [0, 1] as uint8 CPU images; ``ValueError`` if it is not on the 8-bit grid (it could not be
    shipped losslessly)."""
    images = images.detach().float().cpu()
    uint8 = (images * 255).round().clamp(0, 255).to(torch.uint8)
    if not torch.equal(uint8.float() / 255, images):
        raise ValueError("the template is not 8-bit images; it cannot be shipped losslessly as uint8")
    return uint8


def _compact(value: torch.Tensor) -> torch.Tensor:
    value = value.detach().cpu().contiguous()
    return value.half() if value.is_floating_point() and value.ndim >= 2 else value.clone()


def full_from_blob(blob: Mapping[str, Any], **wnll_options: Any) -> WNLLNet:
    """The :class:`WNLLNet` of a ``trained-full/v1`` blob (see :func:`full_blob`), in eval mode on the CPU.

    Raises:
        ValueError: A blob of another format, or weights that do not fit its architecture.
    """
    from wnll_art.models.resnet import CifarResNet

    if blob.get("format") != FULL_FORMAT:
        raise ValueError(f"not a {FULL_FORMAT} blob: format {blob.get('format')!r}")
    arch = blob["arch"]
    backbone = CifarResNet(int(arch["num_blocks"]), int(arch["num_classes"]))
    net = WNLLNet(backbone, blob["template_images"], blob["template_labels"], **{**blob["wnll"], **wnll_options})
    missing, unexpected = net.load_state_dict(blob["state"], strict=False)
    if unexpected or any(not k.startswith("template_") for k in missing):
        raise ValueError(f"the weights do not fit the architecture {dict(arch)}: unexpected {unexpected}, "
                         f"missing {missing}")  # fmt: skip
    return net.eval()


def write_index_row(name: str, row: Mapping[str, Any], *, directory: Path = TRAINED_DIR) -> TrainedEntry:
    """Adds (or replaces) ``name``'s row of ``directory/index.json`` after checking its file's sha256."""
    path = Path(directory) / row["file"]
    if sha256_file(path) != row["sha256"]:
        raise ValueError(f"{path}: sha256 differs from the row's {row['sha256']}")
    if row.get("family", "head") not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {row.get('family')!r}")
    index_path = Path(directory) / "index.json"
    rows = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else {}
    rows[name] = dict(row)
    index_path.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _index.cache_clear()
    return TrainedEntry(name=name, **row)


def write_trained(
    state: Mapping[str, torch.Tensor],
    *,
    name: str,
    wnll: Mapping[str, Any],
    output: Output,
    training_data: str,
    record: Mapping[str, Any],
    base: str = "resnet56",
    directory: Path = TRAINED_DIR,
) -> TrainedEntry:
    """Writes a trained head (from ``wnll-art train --mode head``'s ``final.pt``) as a shipped model.

    Args:
        state: The trained :class:`WNLLNet` state dict (backbone entries are dropped: it is frozen).
        name: Zoo name.
        wnll: The :class:`WNLLNet` build settings (``buffer_dim``, ``k``, ...).
        output: The trained output.
        training_data: Training data mode.
        record: Provenance and measurements (JSON-serialisable).
        base: Zoo name of the frozen backbone.
        directory: Output folder (``index.json`` there is updated).

    Returns:
        The new entry.
    """
    uint8 = _template_uint8(state["template_images"])
    head = {
        k: v.detach().cpu().clone() for k, v in state.items() if not k.startswith(("backbone.", "template_"))
    }
    blob = {"format": FORMAT, "base": base, "head": head, "wnll": dict(wnll),
            "template_images": uint8, "template_labels": state["template_labels"].cpu().long()}  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pt"
    torch.save(blob, path)
    row: dict[str, Any] = {"file": path.name, "sha256": sha256_file(path), "base": base, "output": output,
                           "training_data": training_data, "record": dict(record)}  # fmt: skip
    index_path = directory / "index.json"
    rows = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else {}
    rows[name] = row
    index_path.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _index.cache_clear()
    return TrainedEntry(name=name, **row)
