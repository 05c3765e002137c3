"""Training a WNLL ResNet, whole (``TrainConfig``) or its buffer block and heads only (``HeadConfig``).

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).

:func:`train` = :func:`wnll_art.train.modes.prepare` (model, data, caches; every input check) ->
:func:`wnll_art.train.loop.fit` (the one loop) -> the final model, its measured WNLL accuracy and its
model-zoo record.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wnll_art._checks import check_positive_int
from wnll_art._device import device_facts
from wnll_art.train.caches import TVMFunction
from wnll_art.train.checkpoint import atomic_save, write_zoo_record
from wnll_art.train.config import LoopConfig
from wnll_art.train.loop import check_resumable, evaluate, fit
from wnll_art.train.modes import Setup, prepare
from wnll_art.wnll.model import WNLLNet

__all__ = ["TrainResult", "train"]

NOTES = {
    "full": "trained with wnll_art.train (alternating linear / WNLL steps)",
    "head": "public ResNet-56 (frozen) + buffer block and heads trained by wnll_art.train (head mode)",
}


@dataclass
class TrainResult:
    """What :func:`train` returns (accuracies are fractions in [0, 1]).

    Attributes:
        model: The trained :class:`WNLLNet` (CPU, eval mode once finished; else on the training device).
        epochs_done: Epochs completed so far (``config.epochs`` when finished).
        checkpoint: The last checkpoint (``out_dir/last.pt``).
        final_weights: ``out_dir/final.pt`` (bare state dict), once training has finished.
        zoo_record: ``out_dir/final.json`` (sha256, reference accuracy), once training has finished.
        test_accuracy: WNLL top-1 accuracy of the final model on the test images, if measured.
        linear_accuracy: Top-1 accuracy of its linear head, if measured.
        metrics: Records written to ``out_dir/metrics.jsonl`` by this call.
        wall_s: Wall time of the call (s), data and caches included.
    """

    model: WNLLNet
    epochs_done: int
    checkpoint: Path
    final_weights: Path | None = None
    zoo_record: Path | None = None
    test_accuracy: float | None = None
    linear_accuracy: float | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


def train(
    config: LoopConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    stop_after_epoch: int | None = None,
    tvm_fn: TVMFunction | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains a WNLL ResNet; nothing is written before the model, weights and data have been checked.

    Writes ``out_dir/last.pt`` every epoch (model, optimiser, scheduler, generator states, epoch),
    ``out_dir/metrics.jsonl`` (see :func:`wnll_art.train.loop.fit`), and at the end ``final.pt`` (the
    :class:`WNLLNet` state dict, template included) + ``final.json`` (zoo record: sha256, measured WNLL
    accuracy as a fraction, the config with its TVM settings whole, the training device's
    :func:`~wnll_art._device.device_facts`).

    Args:
        config: :class:`TrainConfig` (the whole network; documents the schedule) or :class:`HeadConfig`
            (buffer block and heads on frozen pretrained features).
        out_dir: Output directory (created when the first file is written).
        data_root: CIFAR-10 root (default :func:`wnll_art.data.default_data_root`).
        weights: Backbone weights: full mode's initialisation (default random), head mode's frozen
            ResNet-56 (sha256-checked against the zoo; default the hub cache).
        device: Training device (and of the evaluations); CUDA enables the ``bf16`` /
            ``channels_last`` / ``data_on_device`` flags of :class:`TrainConfig`.
        resume: Continue from ``out_dir/last.pt`` if it exists (the config must be equal, checked before
            anything is computed or written; the device may differ). On CPU, stopping after ``k`` epochs and resuming gives bit-identical weights.
        cache_dir: Directory of the TVM image and feature caches; default ``out_dir/cache``.
        stop_after_epoch: Return after this epoch (checkpointed) without finishing (interrupted runs).
        tvm_fn: TVM function (default :func:`wnll_art.tvm.algorithm.total_variation_minimize`).
        progress: Show tqdm progress bars.

    Returns:
        A :class:`TrainResult`; ``final_weights`` is ``None`` if stopped before ``config.epochs``.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    dev = torch.device(device)
    if stop_after_epoch is not None:
        check_positive_int(stop_after_epoch, "stop_after_epoch")
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    if resume and (out / "last.pt").is_file():  # a config that cannot resume is refused before any cache
        check_resumable(out / "last.pt", config)
    setup = prepare(config, data_root=data_root, weights=weights, cache_dir=cache, device=dev, tvm_fn=tvm_fn,
                    progress=progress)  # fmt: skip
    stop = config.epochs if stop_after_epoch is None else min(stop_after_epoch, config.epochs)
    done, records = fit(setup, config, out_dir=out, resume=resume, stop=stop, progress=progress)
    if done < config.epochs:
        return TrainResult(setup.net.eval(), done, out / "last.pt", metrics=records,
                           wall_s=time.perf_counter() - t_start)  # fmt: skip
    return _finish(setup, config, out, records, t_start)


def _finish(
    setup: Setup, config: LoopConfig, out: Path, records: list[dict[str, Any]], t_start: float
) -> TrainResult:
    """Measures the final model on the training device, then writes it (CPU) and its zoo record."""
    last = records[-1] if records and records[-1]["epoch"] == config.epochs else {}
    accuracies = last if "test_acc_wnll" in last else (evaluate(setup) if config.final_eval else {})
    net = setup.net.to("cpu", memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    net.backbone.check_inputs = True  # off during full-mode training, on for users of the model
    final = out / "final.pt"
    atomic_save(net.state_dict(), final)
    wall_s = time.perf_counter() - t_start
    record = write_zoo_record(
        final, model=net, reference_accuracy=accuracies.get("test_acc_wnll"), notes=NOTES[config.mode],
        extra={"config": config.to_dict(), "test_images": int(setup.test_labels.shape[0]),
               "wall_s": round(wall_s, 1), "device_facts": device_facts(setup.device)},
    )  # fmt: skip
    return TrainResult(net, config.epochs, out / "last.pt", final, record, accuracies.get("test_acc_wnll"),
                       accuracies.get("test_acc_linear"), records, wall_s)  # fmt: skip
