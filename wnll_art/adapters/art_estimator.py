"""ART estimator for WNLL-activated (and plain) CIFAR models: a thin ``PyTorchClassifier``.

M.-I. Nicolae et al., "Adversarial Robustness Toolbox v1.0.0", arXiv:1807.01069 (2018).

All defence logic lives in the wrapped ``nn.Module`` (:class:`wnll_art.WNLLNet`), so ART attacks that
rebuild a plain ``PyTorchClassifier`` from ``estimator.model`` (APGD inside AutoAttack) attack the
same function. This class only sets the right defaults and keeps the WNLL batch coupling explicit.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from wnll_art._device import check_device
from wnll_art.adapters._batches import SmallBatchWarner, find_setting
from wnll_art.adapters._saved import estimator_settings, read_saved, write_saved
from wnll_art.defence import score_view
from wnll_art.wnll.score import Score

__all__ = ["WNLLClassifier"]


_find = find_setting


def _model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model without tensors)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first floating parameter or buffer (float32 for a model without)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _num_classes(model: nn.Module) -> int:
    n = _find(model, "num_classes")
    if isinstance(n, int) and n > 0:
        return n
    raise TypeError(
        f"{type(model).__name__} has no positive int attribute `num_classes`; pass nb_classes=... explicitly"
    )


def _input_shape(model: nn.Module, given: tuple[int, ...] | None) -> tuple[int, ...]:
    """``given``, else the model's ``input_shape``, else ``(3, 32, 32)``; refuses a disagreement."""
    own = _find(model, "input_shape")
    own = tuple(own) if isinstance(own, tuple) else None
    if given is not None and own is not None and tuple(given) != own:
        raise ValueError(f"input_shape={tuple(given)} disagrees with the model's input_shape {own}")
    return tuple(given) if given is not None else own or (3, 32, 32)


@contextmanager
def _modes_kept(model: nn.Module) -> Iterator[None]:
    """Every sub-module's train/eval mode as it was before (ART's calls set the mode and leave it set)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training  # per module, not m.train(): a mixed-mode model stays mixed


_NO_FIT = (
    "WNLLClassifier does not train: fitting every parameter by cross-entropy is not the paper's recipe "
    "(alternating linear / WNLL steps through a buffer block, optionally on TVM-purified images). Train with "
    "`wnll-art train` (or wnll_art.train.train), load the result with wnll_art.load_defence and wrap it in a "
    "new WNLLClassifier; ART's AdversarialTrainer cannot train this estimator"
)


def _check_nb_classes(model: nn.Module, nb_classes: int | None) -> int:
    """``nb_classes``, else the model's; refuses a count that disagrees with the model's ``num_classes``."""
    if nb_classes is None:
        return _num_classes(model)
    if isinstance(nb_classes, bool) or not isinstance(nb_classes, int):
        raise TypeError(f"nb_classes must be an int, got {type(nb_classes).__name__}")
    own = _find(model, "num_classes")
    if isinstance(own, int) and own != nb_classes:
        raise ValueError(f"nb_classes={nb_classes} disagrees with the model's {own} classes (num_classes); "
                         "leave nb_classes unset to use the model's")  # fmt: skip
    if nb_classes < 2:
        raise ValueError(f"nb_classes must be >= 2, got {nb_classes}")
    return nb_classes


@contextmanager
def _input_gradients_only(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the duration (input gradients need none; saves ~1/3 of backward)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class WNLLClassifier(PyTorchClassifier):  # type: ignore[misc]
    """``PyTorchClassifier`` with the defaults of a :class:`~wnll_art.WNLLNet` (or any [0, 1] image model).

    Defaults: ``clip_values=(0, 1)``, ``channels_first=True``, ``input_shape=model.input_shape`` (a
    :class:`~wnll_art.WNLLNet` knows it from its template; ``(3, 32, 32)`` for a model that does not say),
    ``nb_classes=model.num_classes``, cross-entropy loss (the model's log-scores are its logits:
    ``softmax(log u) = u``), and the device the model is on (``device_type="auto"``): a model on
    ``cuda:N`` stays there, a CPU model stays on the CPU. ``device_type="gpu"`` with a CPU model moves
    the model to the current CUDA device **in place** (ART's behaviour); ``"cpu"`` moves a CUDA model to
    the CPU in place.

    Batch coupling: a transductive WNLLNet's outputs depend on the other inputs of its solve. ``predict``
    therefore always feeds the model batches of ``model.wnll_batch_size`` (whatever ``batch_size`` an
    attack passes), so predictions are the model's declared setting. Gradients are computed on the batch
    an attack passes: give attacks ``batch_size=model.wnll_batch_size`` (the evaluation harness does).
    Every call's batch size is counted in :attr:`observed_batches` so results can record the coupling
    actually used. The first call that gives a transductive model fewer images than its ``wnll_batch_size``
    (a single-image HopSkipJump query, AutoAttack's subsets, ``loss_gradient`` of a small batch; not the last
    partial chunk of a larger ``predict``) raises a ``UserWarning`` naming the setting, once per estimator
    (``warn_small_batches=False`` silences it).

    Inputs: ``predict``, ``loss_gradient`` and ``class_gradient`` refuse inputs whose shape is not
    ``(N, *input_shape)`` (``ValueError``) or whose dtype is not floating (``TypeError``), and cast other
    floating dtypes (e.g. NumPy's float64 from ``uint8 / 255.0``) to the model's dtype, in a copy; outputs
    and gradients then have the model's dtype. Values outside ``clip_values`` (by more than 0.1 % of the
    range, e.g. 0-255 images given to a [0, 1] estimator) are refused (``ValueError``). ``predict`` of an
    empty batch gives ``(0, nb_classes)``. Gradient calls compute input gradients only (parameters are frozen
    for the call and restored after), which saves about a third of each backward pass.

    Modes: ``predict``, ``loss_gradient``, ``class_gradient``, ``compute_loss`` and ``get_activations`` leave
    every sub-module in the train/eval mode it was in (ART sets the mode of ``training_mode`` and would leave it set).

    Scores: ``score=`` picks the WNLL score the estimator sees (predictions and gradients): ``None`` keeps the
    model's own (the deployed ``"log"``, ``log(u + 1e-6)``, which saturates: every entry below 1e-6 is lost under
    the floor, so margin losses are flat there), ``"log64"`` (float64 solve, ``log(u + 1e-30)``: no saturation at
    ``log(1e-6)``, same arg-max) or ``"smooth"`` (deployed values, gradients of a wider graph). The view is
    built by :func:`wnll_art.defence.score_view` and shares every parameter with ``model``; ``estimator.model``
    is that view, so ART attacks that rebuild a classifier from it attack the same scores.

    Training: ``fit`` and ``fit_generator`` (hence ART's ``AdversarialTrainer``) raise
    ``NotImplementedError``: cross-entropy on every parameter is not the paper's recipe; train with
    ``wnll-art train`` and wrap the loaded result.

    Saving: ``clf.save("my_defence")`` writes a folder (the module's whole state dict, sha256-recorded, and its
    architecture and settings as JSON); ``WNLLClassifier.load("my_defence")`` builds the same estimator back.

    Args:
        model: The ``nn.Module`` (images ``(N, 3, H, W)`` in [0, 1] -> ``(N, C)`` logits or log-scores).
        loss: Training/gradient loss; default ``nn.CrossEntropyLoss()``.
        input_shape: Shape of one input (default: the model's ``input_shape``, else ``(3, 32, 32)``); must
            agree with the model's when it has one.
        nb_classes: Defaults to ``model.num_classes``; must equal it when the model has one.
        device_type: ``"auto"`` (where the model is), ``"gpu"`` or ``"cpu"``.
        score: WNLL score, ``None`` (the model's own), ``"log"``, ``"log64"`` or ``"smooth"`` (see above);
            ``"log64"`` / ``"smooth"`` need a ``WNLLNet`` or a ``Defence`` with a WNLL head (``ValueError``).
        warn_small_batches: Warn (once) when a call gives a transductive model fewer images than its
            ``wnll_batch_size``; ``False`` for callers whose small batches are deliberate and recorded.
        **kwargs: Passed to ``PyTorchClassifier`` (``preprocessing_defences``, ``optimizer``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: nn.Module | None = None,
        input_shape: tuple[int, ...] | None = None,
        nb_classes: int | None = None,
        device_type: str = "auto",
        score: Score | None = None,
        warn_small_batches: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        model = score_view(model, score)
        small_batches = SmallBatchWarner(model, enabled=warn_small_batches, adapter="WNLLClassifier")
        home = _model_device(model)
        if device_type == "auto":
            device_type = "gpu" if home.type == "cuda" else "cpu"
        if device_type not in ("cpu", "gpu"):
            raise ValueError(f"device_type must be 'auto', 'cpu' or 'gpu', got {device_type!r}")
        input_shape = _input_shape(model, input_shape)
        kwargs.setdefault("clip_values", (0.0, 1.0))
        kwargs.setdefault("channels_first", True)
        # ART moves the model to cuda:{current_device()}: make that the model's own CUDA device
        where = torch.cuda.device(home) if home.type == "cuda" else nullcontext()
        with where:
            super().__init__(
                model=model,
                loss=loss if loss is not None else nn.CrossEntropyLoss(),
                input_shape=input_shape,
                nb_classes=_check_nb_classes(model, nb_classes),
                device_type=device_type,
                **kwargs,
            )
        self.observed_batches: Counter[tuple[str, int]] = Counter()
        self._small_batches = small_batches

    @property
    def wnll_batch_size(self) -> int | None:
        """The wrapped model's WNLL batch size, or ``None`` for a model without one."""
        size = _find(self.model, "wnll_batch_size")
        return size if isinstance(size, int) else None

    @property
    def transductive(self) -> bool:
        """Whether the wrapped model couples the inputs of one call."""
        return _find(self.model, "coupling") == "transductive"

    def predict(  # type: ignore[override]
        self, x: np.ndarray, batch_size: int | None = None, training_mode: bool = False, **kwargs: Any
    ) -> np.ndarray:
        """Predicts ``(N, C)`` log-scores of ``x`` ``(N, 3, H, W)`` in [0, 1] (float32 numpy).

        ``batch_size`` is ignored for a transductive WNLL model (its WNLL batch size is used) and
        defaults to the WNLL batch size (else 128) otherwise.
        """
        wnll = self.wnll_batch_size
        if wnll is not None and (self.transductive or batch_size is None):
            batch_size = wnll
        x = self._checked(x)
        if len(x) == 0:
            return np.zeros((0, self.nb_classes), dtype=self._np_dtype)
        batch_size = batch_size or 128
        self._small_batches.check(len(x), call="predict")
        for start in range(0, len(x), batch_size):
            self.observed_batches["predict", min(batch_size, len(x) - start)] += 1
        with _modes_kept(self._model):
            return super().predict(x, batch_size=batch_size, training_mode=training_mode, **kwargs)

    def compute_loss(self, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """ART's ``compute_loss``; every sub-module's train/eval mode is left as it was."""
        with _modes_kept(self._model):
            return super().compute_loss(x, y, *args, **kwargs)

    def get_activations(self, x: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """ART's ``get_activations``; every sub-module's train/eval mode is left as it was."""
        with _modes_kept(self._model):
            return super().get_activations(x, *args, **kwargs)

    def fit(self, x: np.ndarray, y: np.ndarray, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Refused (``NotImplementedError``): train with ``wnll-art train`` (the paper's recipe) instead."""
        raise NotImplementedError(_NO_FIT)

    def fit_generator(self, generator: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Refused (``NotImplementedError``): train with ``wnll-art train`` (the paper's recipe) instead."""
        raise NotImplementedError(_NO_FIT)

    def loss_gradient(  # type: ignore[override]
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        training_mode: bool = False,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor:
        """Gradient of the loss w.r.t. ``x`` (same shape), over the batch exactly as given."""
        x = self._checked(x)
        self.observed_batches["gradient", len(x)] += 1
        self._small_batches.check(len(x), call="loss_gradient")
        with _input_gradients_only(self.model), _modes_kept(self._model):
            return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)

    def class_gradient(  # type: ignore[override]
        self, x: np.ndarray | torch.Tensor, label: Any = None, training_mode: bool = False, **kwargs: Any
    ) -> np.ndarray:
        """Class gradients ``(N, 1 or C, ...)`` over the batch exactly as given."""
        x = self._checked(x)
        self.observed_batches["gradient", len(x)] += 1
        self._small_batches.check(len(x), call="class_gradient")
        with _input_gradients_only(self.model), _modes_kept(self._model):
            return super().class_gradient(x, label=label, training_mode=training_mode, **kwargs)

    @property
    def _np_dtype(self) -> np.dtype[Any]:
        return torch.empty(0, dtype=_model_dtype(self.model)).numpy().dtype

    def _checked(self, x: Any) -> Any:
        """``x`` (NumPy array or tensor) after the shape and dtype checks, cast to the model's dtype (a copy
        when cast; never modified in place)."""
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            raise TypeError(f"x must be a numpy array or torch.Tensor, got {type(x).__name__}")
        floating = (
            x.is_floating_point() if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)
        )
        if not floating:
            raise TypeError(f"x must be floating point with values in [0, 1], got dtype {x.dtype} "
                            f"(convert uint8 images with x.astype(np.float32) / 255)")  # fmt: skip
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"x must have shape (N, {', '.join(map(str, self.input_shape))}) (the estimator's "
                             f"input_shape), got {tuple(x.shape)}")  # fmt: skip
        self._check_range(x)
        if isinstance(x, torch.Tensor):
            return x.to(_model_dtype(self.model))
        return x if x.dtype == self._np_dtype else x.astype(self._np_dtype)

    def _check_range(self, x: np.ndarray | torch.Tensor) -> None:
        """Refuses values outside ``clip_values`` by more than 0.1 % of the range (attack round-off passes;
        0-255 images given to a [0, 1] estimator do not)."""
        empty = x.size == 0 if isinstance(x, np.ndarray) else x.numel() == 0
        if self.clip_values is None or empty:
            return
        low, high = float(np.min(self.clip_values[0])), float(np.max(self.clip_values[1]))
        if isinstance(x, torch.Tensor):
            x_min, x_max = torch.stack(torch.aminmax(x.detach())).tolist()
        else:
            x_min, x_max = float(x.min()), float(x.max())
        slack = 1e-3 * (high - low)
        if x_min < low - slack or x_max > high + slack:
            hint = " (0-255 images? divide them by 255)" if high <= 1.0 < x_max else ""
            raise ValueError(f"x must lie in the estimator's clip_values [{low}, {high}], got values in "
                             f"[{x_min:.4g}, {x_max:.4g}]{hint}")  # fmt: skip

    def save(  # type: ignore[override]
        self,
        filename: str | os.PathLike[str],
        path: str | os.PathLike[str] | None = None,
        *,
        overwrite: bool = False,
    ) -> Path:
        """Saves the module and the estimator's settings to the folder ``path/filename`` (or ``filename``).

        ART's ``save`` writes a bare state dict (by default under ``~/.art/data``) that nothing loads back; this
        writes what :meth:`load` needs: ``weights.pt`` (the module's whole state dict) and ``classifier.json`` (the
        module's architecture and settings, e.g. a :class:`~wnll_art.Defence`'s TVM settings and seed, WNLL options
        and score; the estimator's shapes and clip values; the sha256 of ``weights.pt``), each file written whole
        or not at all. The optimizer and :attr:`observed_batches` are not saved.

        Args:
            filename: The folder to write (relative to ``path`` when given).
            path: Parent folder of ``filename`` (ART's argument); default: ``filename`` as given.
            overwrite: Replace a classifier already saved in that folder.

        Returns:
            The folder written.

        Raises:
            TypeError: A module :meth:`load` could not build back (supported: ``Defence`` with TVM or no
                purifier, ``WNLLNet``, ``CifarResNet``, the zoo's ``LinearHead``).
            ValueError: Settings that are not saved and would be lost: a loss other than the default
                cross-entropy, ``preprocessing`` other than the identity, pre- or postprocessing defences
                (save without them; pass them to :meth:`load`).
            FileExistsError: The folder holds a saved classifier (without ``overwrite``), other files, or is a file.
        """
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
        directory = Path(path) / filename if path is not None else Path(filename)
        estimator = estimator_settings(self, warn_small_batches=self._small_batches.enabled)
        return write_saved(directory.expanduser(), self.model, estimator, overwrite=overwrite)

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, device: str | torch.device = "cpu", **kwargs: Any
    ) -> WNLLClassifier:
        """The estimator saved by :meth:`save` in ``directory``, its module in eval mode on ``device``.

        ``weights.pt`` is checked against the sha256 that ``classifier.json`` records, then loaded with
        ``weights_only=True`` into a module built from the recorded architecture (every tensor must fit). A TVM
        purifier's mask generator starts again from its seed.

        Args:
            directory: A folder written by :meth:`save`.
            device: Where the module goes (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
            **kwargs: Estimator arguments to add or override (``loss``, ``preprocessing_defences``, ``score``, ...).

        Raises:
            FileNotFoundError: A missing file. ValueError: Another format, a sha256 mismatch, or weights that do not
                fit the recorded architecture.
        """
        dev = check_device(device)
        model, options = read_saved(Path(directory).expanduser())
        return cls(model.to(dev), **{**options, **kwargs})

    def settings(self) -> dict[str, object]:
        """``settings()`` of every sub-module that has one, keyed by class name (``"WNLLNet"``,
        ``"TVMPurifier"``, ...), plus ``"observed_batches"``: ``"predict:500" -> number of calls``."""
        out: dict[str, object] = {
            type(m).__name__: m.settings()
            for m in self.model.modules()
            if callable(getattr(m, "settings", None))
        }
        out["observed_batches"] = {f"{k}:{n}": c for (k, n), c in sorted(self.observed_batches.items())}
        return out
