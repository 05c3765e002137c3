"""Checkpoints with exact resume, a JSON-lines metrics log, and model-zoo records of trained WNLL models.

Training recipe of B. Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total
Variation Minimization", arXiv:1809.08516 (2018). A checkpoint holds everything the next epoch depends
on (model, optimiser, scheduler, the state of every generator, the epoch), so that training ``N`` epochs
straight and training ``k``, then resuming to ``N``, give bit-identical weights on CPU.
"""

from __future__ import annotations

import datetime as _dt
import functools
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wnll_art._files import atomic_write
from wnll_art.models.resnet import CifarResNet
from wnll_art.wnll.model import BUILD_KEYS, WNLLNet
from wnll_art.zoo import ZooEntry, sha256_file

__all__ = [
    "MetricsLog",
    "atomic_save",
    "build_wnll_resnet",
    "generator_states",
    "load_checkpoint",
    "restore_generators",
    "with_placeholder_template",
    "write_zoo_record",
    "zoo_entry_from_record",
]

# WNLLNet constructor options recorded with trained weights (defined with the model, re-exported here)
WNLL_BUILD_KEYS = BUILD_KEYS


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` to ``path`` through :func:`~wnll_art._files.atomic_write` (no torn checkpoints; a failed
    write leaves the earlier file whole)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Reads a checkpoint written by :func:`atomic_save` (``weights_only=True``, on CPU).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it is not a readable checkpoint dictionary.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types on garbage
        raise ValueError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a checkpoint dict")
    return obj


def generator_states(generators: Mapping[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """The state (a CPU uint8 tensor) of every named CPU generator.

    Training keeps its generators on the CPU (augmentation draws are moved to the device), so a state
    saved on a CUDA machine resumes on a CPU-only one and the reverse.

    Raises:
        ValueError: If a generator is not a CPU generator (its state would not load on another device).
    """
    not_cpu = sorted(name for name, gen in generators.items() if gen.device.type != "cpu")
    if not_cpu:
        raise ValueError(
            f"generator(s) {not_cpu} are not CPU generators; their states do not move across devices"
        )
    return {name: gen.get_state() for name, gen in generators.items()}


def restore_generators(generators: Mapping[str, torch.Generator], states: Mapping[str, torch.Tensor]) -> None:
    """Sets every named CPU generator to its saved state.

    Raises:
        ValueError: If a generator has no saved state, or one that is not a CPU generator's.
    """
    missing = sorted(set(generators) - set(states))
    if missing:
        raise ValueError(f"the checkpoint has no state for generator(s) {missing}")
    for name, gen in generators.items():
        state = states[name]
        if state.dtype != torch.uint8 or state.shape != gen.get_state().shape:
            raise ValueError(f"the checkpoint's state of generator {name!r} is not a CPU generator state")
        gen.set_state(state.cpu())


class MetricsLog:
    """Appends one JSON object per line to ``path`` (flushed at once, so a crash loses nothing).

    Args:
        path: The ``.jsonl`` file; created with its parent directory if missing, appended to otherwise.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: Mapping[str, object]) -> None:
        """Writes ``record`` (JSON-serialisable values) as one line."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record), sort_keys=True) + "\n")


def build_wnll_resnet(
    *, num_blocks: int = 9, num_classes: int = 10, template_size: int = 500, **wnll_options: Any
) -> WNLLNet:
    """An untrained :class:`WNLLNet` over a CIFAR ResNet with a placeholder template (the zoo builder).

    The template buffers (see :func:`with_placeholder_template`) are overwritten by the trained state
    dict, exactly as the random weights are.

    Args:
        num_blocks: BasicBlocks per stage of the backbone (9: ResNet-56).
        num_classes: Classes ``C``.
        template_size: Rows ``M`` of the template buffers (``>= C``).
        **wnll_options: :class:`WNLLNet` options (``buffer_dim``, ``k``, ``kernel``, ...).

    Returns:
        The model on CPU, in eval mode.
    """
    backbone = CifarResNet(num_blocks, num_classes)
    return with_placeholder_template(backbone, template_size=template_size, **wnll_options).eval()


def with_placeholder_template(backbone: nn.Module, *, template_size: int, **wnll_options: Any) -> WNLLNet:
    """A :class:`WNLLNet` over ``backbone`` whose template buffers are placeholders to be overwritten.

    The placeholders are ``template_size`` black 32 x 32 images labelled ``arange(M) % C`` (every class
    present), ``C`` the class count of ``backbone.linear``; copy the real template into
    ``net.template_images`` / ``net.template_labels`` (or load a state dict) before use.

    Args:
        backbone: CIFAR backbone with ``features`` and ``linear`` (see :class:`WNLLNet`).
        template_size: Rows ``M`` of the template buffers (``>= C``).
        **wnll_options: :class:`WNLLNet` options.
    """
    num_classes = int(backbone.linear.out_features)  # type: ignore[union-attr, arg-type]
    images = torch.zeros(template_size, 3, 32, 32)
    labels = torch.arange(template_size) % num_classes
    return WNLLNet(backbone, images, labels, **wnll_options)


def write_zoo_record(
    weights: Path,
    *,
    model: WNLLNet,
    reference_accuracy: float | None,
    notes: str = "",
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Writes ``<weights stem>.json`` next to a bare state-dict file: sha256, accuracy and build settings.

    Args:
        weights: The ``torch.save``-d ``model.state_dict()``.
        model: The model the weights belong to, over a :class:`CifarResNet` (its depth, class count,
            template size and WNLL settings are recorded).
        reference_accuracy: WNLL top-1 accuracy on the CIFAR-10 test images, as measured: a fraction
            in [0, 1]; ``None`` if not measured (written as ``null``).
        notes: Provenance text.
        extra: Further JSON-serialisable facts (training config, timings).

    Returns:
        The path of the JSON record.
    """
    settings = model.settings()
    if not isinstance(model.backbone, CifarResNet):
        raise TypeError(f"model.backbone must be a CifarResNet, got {type(model.backbone).__name__}")
    record = {
        "file": weights.name,
        "sha256": sha256_file(weights),
        "reference_accuracy": None if reference_accuracy is None else float(reference_accuracy),
        "arch": {
            "num_blocks": len(model.backbone.layer1),
            "num_classes": model.num_classes,
            "template_size": int(model.template_images.shape[0]),
        },  # fmt: skip
        "wnll": {k: settings[k] for k in WNLL_BUILD_KEYS},
        "notes": notes,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }
    path = weights.with_suffix(".json")
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def zoo_entry_from_record(record: Path, *, url: str | None = None, license: str = "") -> ZooEntry:
    """A :class:`wnll_art.zoo.ZooEntry` for weights described by :func:`write_zoo_record`.

    Register it (``ZOO["my_wnll"] = entry``) and ``load_pretrained("my_wnll", weights=path)`` verifies the
    sha256 and returns the trained :class:`WNLLNet`. The record's accuracy (a fraction) becomes the entry's
    ``reference_accuracy`` in percent, the unit of :class:`ZooEntry` (``nan`` if it was not measured).

    Args:
        record: The JSON record.
        url: Where the weights are published; default the ``file://`` URI of the local file.
        license: Licence of the weights.

    Raises:
        ValueError: If the record lacks a field.
    """
    data = json.loads(record.read_text(encoding="utf-8"))
    try:
        arch, wnll = data["arch"], data["wnll"]
        builder = functools.partial(build_wnll_resnet, **arch, **wnll)
        entry = ZooEntry(
            url=url or (record.parent / data["file"]).resolve().as_uri(),
            sha256=data["sha256"],
            reference_accuracy=_percent(data["reference_accuracy"]),
            builder=builder,
            license=license,
            notes=data.get("notes", ""),
            extra=data.get("extra", {}),
        )
    except KeyError as exc:
        raise ValueError(f"{record} is not a zoo record: missing field {exc}") from exc
    return entry


def _percent(fraction: float | None) -> float:
    return float("nan") if fraction is None else 100.0 * float(fraction)
