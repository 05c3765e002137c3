"""Victims: the defences a job evaluates, each built by the public loader, and the registries they come from.

A victim is a :class:`wnll_art.defence.Defence` named by its table cell (model label, defence name). Its
classifier is :func:`wnll_art.defence.load_classifier`'s, the function :func:`wnll_art.load_defence` itself
uses, so a table's numbers are the public object's; its purifier comes from :data:`PURIFIERS` (``"none"``, our
``"tvm"``, ART's preprocessors). Models are named by :data:`MODELS` (``"softmax"`` / ``"wnll"``: the public
ResNet-56 and its post-hoc WNLL head) or by any trained zoo name (``wnll-art info``). Adding either is one
entry (``DEVELOPERS.md``, "Extending the evaluation").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from wnll_art.defence import Defence, load_classifier
from wnll_art.evaluation.config import EvalConfig
from wnll_art.registry import Registry

__all__ = ["MODELS", "PURIFIERS", "UNDECIDED", "ModelRef", "Row", "Victim", "build_victims", "predict_labels",
           "resolve_model"]  # fmt: skip


Head = Literal["wnll", "softmax"]  # an output head of load_classifier


@dataclass(frozen=True)
class ModelRef:
    """A classifier as :func:`~wnll_art.defence.load_classifier` builds it: a zoo name and its output head
    (``None``: a trained model's own output)."""

    name: str = "resnet56"
    head: Head | None = None


MODELS: Registry[ModelRef] = Registry("model")
MODELS.register("softmax", ModelRef("resnet56", "softmax"))
MODELS.register("wnll", ModelRef("resnet56", "wnll"))
# the adversarially trained network (FGSM-RS, Wong et al. 2020) read through its own template by a WNLL head
MODELS.register("fgsmrs-wnll", ModelRef("resnet56-fgsmrs", "wnll"))


def resolve_model(label: str) -> ModelRef:
    """The classifier a model label names: a :data:`MODELS` entry, or a trained zoo model by its name.

    Raises:
        ValueError: Neither (the message lists both kinds).
    """
    from wnll_art.zoo_trained import trained_models

    if label in MODELS:
        return MODELS[label]
    if label in trained_models():
        return ModelRef(label, None)
    raise ValueError(f"unknown model {label!r}; choose from {', '.join(MODELS)} or a trained model "
                     f"({', '.join(trained_models())})")  # fmt: skip


PurifierFactory = Callable[..., "nn.Module | None"]
PURIFIERS: Registry[PurifierFactory] = Registry("defence")
PURIFIERS.register("none", lambda cfg, **options: None)


@PURIFIERS.register("tvm")  # type: ignore[misc]
def _tvm(cfg: EvalConfig, **options: Any) -> nn.Module:
    from wnll_art.tvm.module import TVMPurifier

    return TVMPurifier(cfg.tvm.replace(**options) if options else cfg.tvm, seed=cfg.seed)


def _register_art() -> None:
    from wnll_art.adapters.art_preprocessors import ART_PREPROCESSORS, art_defence

    for name in ART_PREPROCESSORS:
        PURIFIERS.register(
            name, lambda cfg, _name=name, **options: art_defence(_name, seed=cfg.seed, **options)
        )


_register_art()


@dataclass(frozen=True)
class Victim:
    """One (model, defence) cell: its :class:`~wnll_art.defence.Defence` and the names of the cell.

    Attributes:
        model: Model label (``"softmax"``, ``"wnll"`` or a zoo name).
        defence: Purifier name (``"none"``, ``"tvm"``, ``"jpeg"``, ...).
        module: The deployed model (purifier, if any, then classifier), in eval mode.
    """

    model: str
    defence: str
    module: Defence = field(repr=False)

    def settings(self) -> dict[str, Any]:
        """The cell's names and every setting of its defence (recorded with each result)."""
        return {"model": self.model, "defence": self.defence, **self.module.settings()}


def build_victims(
    cfg: EvalConfig,
    *,
    models: Mapping[str, ModelRef],
    defences: Sequence[str],
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Victim]:
    """Every model crossed with every defence, each classifier loaded once and shared by its defences.

    Args:
        cfg: Device, seed, WNLL settings (template, coupling, kernel, WNLL batch) and TVM settings.
        models: ``{label: model}`` (e.g. ``{"softmax": MODELS["softmax"], "wnll": MODELS["wnll"]}``).
        defences: Names in :data:`PURIFIERS`.
        data_root: CIFAR-10 root (the post-hoc template).
        weights: The base ResNet-56 file (sha256-checked).
        options: Per-defence options passed to its factory.

    Returns:
        Victims in model-major order, each module in eval mode on ``cfg.device``.
    """
    PURIFIERS.check(list(defences), what="defences")
    victims = []
    for label, ref in models.items():
        classifier = _classifier(cfg, ref, data_root, weights)
        for name in defences:
            module = Defence(classifier, purifier=PURIFIERS[name](cfg, **(options or {}).get(name, {})))
            module.training = False  # never recurse: the classifier is shared and already in eval mode
            victims.append(Victim(label, name, module))
    return victims


def _classifier(
    cfg: EvalConfig,
    ref: ModelRef,
    data_root: str | os.PathLike[str] | None,
    weights: str | os.PathLike[str] | None,
) -> nn.Module:
    """``ref``'s classifier with the run's WNLL settings, as :func:`~wnll_art.load_defence` builds it."""
    from wnll_art.zoo_trained import trained_models

    trained = trained_models().get(ref.name)
    wnll = ref.head == "wnll" or (ref.head is None and trained is not None and trained.output == "wnll")
    options: dict[str, Any] = (
        dict(coupling=cfg.coupling, wnll_batch_size=cfg.wnll_batch_size, kernel=cfg.kernel) if wnll else {}
    )
    if wnll and trained is None:
        options["template_size"] = cfg.template_size
    clf = load_classifier(ref.name, head=ref.head, seed=cfg.seed, data_root=data_root, weights=weights, **options)
    return clf.to(cfg.device).eval()


UNDECIDED = -1  # the label of an image whose scores are all equal: never a class, so always an error


@torch.no_grad()
def predict_labels(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Arg-max labels ``(N,)`` of ``module`` on ``x`` (one call: one WNLL batch).

    An image whose scores are all equal gets :data:`UNDECIDED` (-1), not the arg-max's class 0: the WNLL gives
    the uniform ``1/C`` to images with no graph path to the template (e.g. an all-zero batch far from every
    template image), and counting that as "airplane" would score it correct for every airplane.
    """
    scores = module(x)
    labels = scores.argmax(1)
    tied = scores.amax(1) == scores.amin(1)
    return torch.where(tied, torch.full_like(labels, UNDECIDED), labels)


@dataclass(frozen=True)
class Row:
    """A training-data row of the tables: its name, its models and what its ``run.json`` records of them."""

    name: str
    models: dict[str, ModelRef]
    origin: dict[str, Any]
