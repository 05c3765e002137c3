"""A classifier's module and settings as a folder, and the module built back from it
(:meth:`wnll_art.WNLLClassifier.save` / :meth:`~wnll_art.WNLLClassifier.load`).

Format ``wnll-art/classifier/v1``, a folder of two files:

- ``classifier.json``: the format, the wnll-art version, the module as a tree of its architecture and settings
  (``Defence`` -> ``TVMPurifier`` settings and seed, ``WNLLNet`` options, ``CifarResNet`` blocks, classes,
  normalisation; ``LinearHead``), its dtype, the estimator's settings, and the sha256 of ``weights.pt``;
- ``weights.pt``: the module's whole state dict as held (no float16 compaction, unlike the zoo's
  ``trained-full/v1``), loaded with ``weights_only=True`` after its sha256 is checked.

Loading builds the module skeleton from the tree and loads every tensor strictly, so the module computes what
the saved one did (a TVM purifier's mask generator restarts from its seed). Other modules are refused when
saving (``TypeError`` naming the supported ones) rather than written in a form nothing loads back.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wnll_art._files import atomic_write
from wnll_art.defence import Defence
from wnll_art.models.resnet import CifarResNet
from wnll_art.tvm.module import TVMPurifier
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import BUILD_KEYS, WNLLNet
from wnll_art.zoo import sha256_file
from wnll_art.zoo_trained import LinearHead

__all__ = ["FORMAT", "SETTINGS_FILE", "WEIGHTS_FILE", "estimator_settings", "module_spec", "read_saved",
           "write_saved"]  # fmt: skip

FORMAT = "wnll-art/classifier/v1"
SETTINGS_FILE = "classifier.json"
WEIGHTS_FILE = "weights.pt"
SUPPORTED = "Defence (TVM or no purifier), WNLLNet, CifarResNet, LinearHead"


def module_spec(model: nn.Module) -> dict[str, Any]:
    """The architecture and settings of ``model`` as JSON-ready data (everything but its tensors).

    Raises:
        TypeError: A module (or sub-module: backbone, purifier) of a type not in :data:`SUPPORTED`.
    """
    if isinstance(model, Defence):
        return {"type": "Defence", "classifier": module_spec(model.classifier),
                "purifier": _purifier_spec(model.purifier), "eot_samples": model.eot_samples,
                "oblivious": model.oblivious}  # fmt: skip
    if isinstance(model, WNLLNet):
        settings = model.settings()
        options = {k: settings[k] for k in BUILD_KEYS}
        return {"type": "WNLLNet", "backbone": module_spec(model.backbone),
                "options": {**options, "score": model.score, "smooth_k": model.smooth_k}}  # fmt: skip
    if isinstance(model, CifarResNet):
        return {"type": "CifarResNet", "num_blocks": len(model.layer1), "num_classes": model.num_classes,
                "mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist(),
                "check_inputs": model.check_inputs}  # fmt: skip
    if isinstance(model, LinearHead):
        return {"type": "LinearHead", "net": module_spec(model.net)}
    raise TypeError(f"cannot save a {type(model).__name__}: supported modules are {SUPPORTED}")


def estimator_settings(estimator: Any, *, warn_small_batches: bool) -> dict[str, Any]:
    """The settings of an ART ``PyTorchClassifier`` that :func:`write_saved` keeps (JSON-ready): ``clip_values``,
    ``channels_first``, ``input_shape``, ``nb_classes`` and ``warn_small_batches``.

    Raises:
        ValueError: Settings that would be lost: a loss other than the default cross-entropy, ``preprocessing``
            other than the identity, pre- or postprocessing defences.
    """
    loss = estimator._loss
    default_loss = (type(loss) is nn.CrossEntropyLoss and loss.weight is None and loss.reduction == "mean"
                    and loss.ignore_index == -100 and loss.label_smoothing == 0.0)  # fmt: skip
    lost = [] if default_loss else [f"loss={type(loss).__name__}"]
    if estimator.preprocessing_defences or estimator.postprocessing_defences:
        lost.append("pre-/postprocessing defences")
    for op in estimator.preprocessing_operations or []:
        mean, std = getattr(op, "mean", None), getattr(op, "std", None)
        if mean is None or std is None or np.any(np.asarray(mean) != 0) or np.any(np.asarray(std) != 1):
            lost.append(f"preprocessing {type(op).__name__}")
    if lost:
        raise ValueError(f"save keeps the module and the estimator's shapes and clip values, not {', '.join(lost)}; "
                         "save an estimator without them and pass them to WNLLClassifier.load(..., loss=..., "
                         "preprocessing_defences=...)")  # fmt: skip
    clip = estimator.clip_values
    return {"clip_values": None if clip is None else np.asarray(clip).tolist(),
            "channels_first": bool(estimator.channels_first), "input_shape": list(estimator.input_shape),
            "nb_classes": int(estimator.nb_classes), "warn_small_batches": bool(warn_small_batches)}  # fmt: skip


def _estimator_options(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The estimator keyword arguments of saved :func:`estimator_settings`."""
    clip = saved["clip_values"]
    return {"clip_values": None if clip is None else tuple(clip), "channels_first": bool(saved["channels_first"]),
            "input_shape": tuple(saved["input_shape"]), "nb_classes": int(saved["nb_classes"]),
            "warn_small_batches": bool(saved["warn_small_batches"])}  # fmt: skip


def _purifier_spec(purifier: nn.Module | None) -> dict[str, Any] | None:
    if purifier is None:
        return None
    if not isinstance(purifier, TVMPurifier):
        raise TypeError(f"cannot save a Defence with a {type(purifier).__name__} purifier: supported modules are "
                        f"{SUPPORTED}")  # fmt: skip
    return {"type": "TVMPurifier", "settings": purifier.tvm.to_dict(), "seed": int(purifier.seed),
            "fixed_masks": bool(getattr(purifier, "fixed_masks", False))}  # fmt: skip


def _build(spec: Mapping[str, Any], state: Mapping[str, torch.Tensor], prefix: str) -> nn.Module:
    """The module skeleton of ``spec`` (weights still to be loaded); ``ValueError`` for an unknown type."""
    kind = spec.get("type")
    if kind == "Defence":
        classifier = _build(spec["classifier"], state, prefix + "classifier.")
        purifier = spec.get("purifier")
        tvm = None
        if purifier is not None:
            extra = {"fixed_masks": True} if purifier.get("fixed_masks") else {}
            tvm = TVMPurifier(
                TVMSettings.from_dict(purifier["settings"]), seed=int(purifier["seed"]), **extra
            )
        return Defence(
            classifier, tvm=tvm, eot_samples=int(spec["eot_samples"]), oblivious=bool(spec["oblivious"])
        )
    if kind == "WNLLNet":
        backbone = _build(spec["backbone"], state, prefix + "backbone.")
        images, labels = state[prefix + "template_images"], state[prefix + "template_labels"]
        return WNLLNet(backbone, images, labels, **spec["options"])
    if kind == "CifarResNet":
        return CifarResNet(int(spec["num_blocks"]), int(spec["num_classes"]), mean=tuple(spec["mean"]),
                           std=tuple(spec["std"]), check_inputs=bool(spec["check_inputs"]))  # fmt: skip
    if kind == "LinearHead":
        return LinearHead(_build(spec["net"], state, prefix + "net."))  # type: ignore[arg-type]
    raise ValueError(f"unknown module type {kind!r} in {SETTINGS_FILE}; this wnll-art reads {SUPPORTED}")


def _dtype(model: nn.Module) -> torch.dtype:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def write_saved(directory: Path, model: nn.Module, estimator: Mapping[str, Any], *, overwrite: bool) -> Path:
    """Writes ``model`` and the estimator settings as a ``classifier/v1`` folder; returns the folder.

    Raises:
        TypeError: An unsupported module. FileExistsError: ``directory`` holds a saved classifier and
            ``overwrite`` is false, or holds other files, or is a file.
    """
    from wnll_art import __version__

    spec = module_spec(model)  # refuses unsupported modules before anything is written
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file; save needs a folder name")
    if directory.is_dir():
        present = {p.name for p in directory.iterdir()}
        if present - {SETTINGS_FILE, WEIGHTS_FILE}:
            raise FileExistsError(
                f"{directory} holds other files ({sorted(present)[:5]}); save into a new folder"
            )
        if present and not overwrite:
            raise FileExistsError(
                f"{directory} already holds a saved classifier; pass overwrite=True to replace it"
            )
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "state": state}, buffer)
    atomic_write(directory / WEIGHTS_FILE, buffer.getvalue())
    record = {"format": FORMAT, "wnll_art_version": __version__, "dtype": str(_dtype(model)).replace("torch.", ""),
              "module": spec, "estimator": dict(estimator),
              "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(directory / WEIGHTS_FILE)}}  # fmt: skip
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic_write(directory / SETTINGS_FILE, text)
    return directory


def read_saved(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The module of a ``classifier/v1`` folder (eval mode, CPU, every tensor loaded strictly) and the estimator's
    keyword arguments (``clip_values``, ``channels_first``, ``input_shape``, ``nb_classes``, ``warn_small_batches``).

    Raises:
        FileNotFoundError: No ``classifier.json`` or ``weights.pt``. ValueError: Another format, a sha256
            mismatch (a damaged or replaced ``weights.pt``), or weights that do not fit the saved architecture.
    """
    settings_path = directory / SETTINGS_FILE
    if not settings_path.is_file():
        raise FileNotFoundError(f"{settings_path} not found: not a folder written by WNLLClassifier.save")
    record = json.loads(settings_path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else None
        raise ValueError(f"{settings_path}: format {got!r}, expected {FORMAT!r}")
    weights = directory / record["weights"]["file"]
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found (named in {settings_path})")
    actual = sha256_file(weights)
    if actual != record["weights"]["sha256"]:
        raise ValueError(f"sha256 mismatch for {weights}: got {actual}, {settings_path} records "
                         f"{record['weights']['sha256']}; the file is damaged or was replaced")  # fmt: skip
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    state = blob.get("state") if isinstance(blob, dict) and blob.get("format") == FORMAT else None
    if not isinstance(state, dict):
        raise ValueError(f"{weights} is not a {FORMAT} weights file")
    model = _build(record["module"], state, "")
    dtype = getattr(torch, str(record.get("dtype", "float32")), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{settings_path}: unknown dtype {record.get('dtype')!r}")
    model = model.to(dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights} does not fit the architecture in {settings_path}: {err}") from err
    return model.eval(), _estimator_options(record["estimator"])
