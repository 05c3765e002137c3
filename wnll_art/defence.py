"""The whole defence as one ``nn.Module``: TVM purifier (optional) -> backbone -> (buffer) -> WNLL head.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018): the WNLL
output activation (:class:`wnll_art.wnll.model.WNLLNet`) behind TVM input purification (C. Guo et al.,
ICLR 2018; :class:`wnll_art.tvm.module.TVMPurifier`). A. Athalye, N. Carlini, D. Wagner, ICML 2018:
attackers differentiate TVM by BPDA and average its randomness by EOT (:mod:`wnll_art.eot`).

Everything that makes the defence lives in this module, so ART (``WNLLClassifier``, or attacks that
rebuild a plain ``PyTorchClassifier`` from ``estimator.model``), Foolbox (``to_foolbox``) and plain
PyTorch attack the same function. Settings: the WNLL gradient (``"exact"`` or the paper's straight-through
``"surrogate"``) and coupling (``"transductive"`` or ``"inductive"``) are the classifier's; the TVM
settings are the purifier's; :meth:`Defence.view` gives attacker views sharing every parameter.
"""

from __future__ import annotations

import contextlib
import copy
import os
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import nn

from wnll_art._checks import check_positive_int
from wnll_art._device import check_device
from wnll_art.eot import eot_forward
from wnll_art.tvm.module import TVMPurifier
from wnll_art.tvm.settings import TVMSettings
from wnll_art.wnll.model import WNLLNet
from wnll_art.wnll.score import SCORES, Score

__all__ = ["Defence", "load_classifier", "load_defence", "score_view"]

DEFAULT_TEMPLATE_SIZE = 500  # template images of a post-hoc WNLL head (load_defence's template_size=None)

Gradient = Literal["exact", "surrogate"]
TVMView = Literal["bpda", "unrolled", "oblivious"]


class Defence(nn.Module):
    """Purifier (optional) then classifier, with EOT over the purifier's draws when differentiated.

    ``forward`` on a batch: with a purifier, each call purifies with fresh masks; while autograd records
    a graph reaching the input, the scores are the mean over ``eot_samples`` draws, each draw one call on
    the whole batch (so a transductive WNLL solve never sees tiled copies); otherwise one draw, which is
    the deployed model.

    Args:
        classifier: Images in [0, 1] -> ``(N, C)`` scores: a :class:`~wnll_art.wnll.model.WNLLNet`
            (log WNLL label functions) or a softmax network (logits).
        tvm: TVM settings, a ready :class:`~wnll_art.tvm.module.TVMPurifier`, or ``None`` (no TVM).
        purifier: Another input purifier module instead of TVM (e.g. an ART defence as a module); EOT
            applies when it has ``randomised = True``.
        seed: Seed of the TVM mask generator (used with TVM settings only).
        fixed_masks: TVM with one fixed mask drawn from ``seed`` (used with TVM settings only): a deterministic
            defence for decision-based attacks; not randomised, so no EOT and no K-draw rule
            (:class:`~wnll_art.tvm.module.TVMPurifier`).
        eot_samples: Draws averaged per gradient; ``None``: the TVM settings' ``eot_samples``.
        oblivious: The attacker does not see TVM: ``forward`` skips the purifier (the paper's
            oblivious setting; only for attack views).

    Shapes:
        ``forward(x)``: ``(N, 3, H, W)`` float in [0, 1], on the module's device -> ``(N, C)``.
    """

    def __init__(
        self,
        classifier: nn.Module,
        *,
        tvm: TVMSettings | TVMPurifier | None = None,
        purifier: nn.Module | None = None,
        seed: int = 0,
        fixed_masks: bool = False,
        eot_samples: int | None = None,
        oblivious: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"classifier must be a torch.nn.Module, got {type(classifier).__name__}")
        self.classifier = classifier
        if tvm is not None and purifier is not None:
            raise ValueError("give tvm or purifier, not both")
        if tvm is not None and not isinstance(tvm, (TVMSettings, TVMPurifier)):
            raise TypeError(f"tvm must be TVMSettings, TVMPurifier or None, got {type(tvm).__name__}")
        if purifier is not None and not isinstance(purifier, nn.Module):
            raise TypeError(f"purifier must be a torch.nn.Module, got {type(purifier).__name__}")
        if fixed_masks is not False and not isinstance(tvm, TVMSettings):
            raise ValueError("fixed_masks=True needs tvm given as TVMSettings (a TVMPurifier carries its own)")  # fmt: skip
        self.purifier: nn.Module | None = (TVMPurifier(tvm, seed=seed, fixed_masks=fixed_masks)
                                           if isinstance(tvm, TVMSettings) else tvm or purifier)  # fmt: skip
        samples = eot_samples if eot_samples is not None else (
            self.tvm.eot_samples if self.tvm is not None else 1)  # fmt: skip
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"eot_samples must be a positive int, got {samples!r}")
        self.eot_samples = samples
        self.oblivious = bool(oblivious)
        self.num_classes = _num_classes(classifier)
        # a deployed model: take the classifier's mode (nn.Module starts in training mode, and code that restores
        # a saved mode with ``train(mode)`` would otherwise switch an eval-mode classifier's batch norm to training)
        self.train(classifier.training)

    @property
    def tvm(self) -> TVMSettings | None:
        """The TVM settings, or ``None`` without a TVM purifier."""
        return self.purifier.tvm if isinstance(self.purifier, TVMPurifier) else None

    @property
    def randomised(self) -> bool:
        """Whether outputs depend on random purifier draws (EOT then applies)."""
        return (
            self.purifier is not None
            and not self.oblivious
            and bool(getattr(self.purifier, "randomised", False))
        )

    @property
    def wnll(self) -> WNLLNet | None:
        """The WNLL classifier, or ``None`` for a softmax one."""
        return self.classifier if isinstance(self.classifier, WNLLNet) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.purifier is None or self.oblivious:
            return self.classifier(x)
        if not self.randomised:
            return self._one_draw(x)
        return eot_forward(self._one_draw, x, self.eot_samples)

    def _one_draw(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purifier(x))  # type: ignore[misc]

    def drawing(self, seed_or_generator: int | torch.Generator) -> AbstractContextManager[object]:
        """A block in which this module's purifier draws from ``seed_or_generator`` (an int: a fresh generator
        seeded with it); its previous generator is back on exit. The purifier's own ``drawing`` (as
        :meth:`TVMPurifier.drawing`); a no-op without a purifier or for one without ``drawing``.

        A view may hold a copy of the purifier (:meth:`view` with another TVM gradient): enter ``drawing`` on
        the module that is called.

        Raises:
            TypeError: ``seed_or_generator`` is neither an int nor a ``torch.Generator``.
        """
        method = getattr(self.purifier, "drawing", None)
        if callable(method):
            block: AbstractContextManager[object] = method(seed_or_generator)
            return block
        if isinstance(seed_or_generator, bool) or not isinstance(seed_or_generator, (int, torch.Generator)):
            raise TypeError(f"seed_or_generator must be an int or a torch.Generator, got "
                            f"{type(seed_or_generator).__name__}")  # fmt: skip
        return contextlib.nullcontext()

    def view(
        self,
        *,
        gradient: Gradient | None = None,
        tvm: TVMView | None = None,
        eot_samples: int | None = None,
        score: Score | None = None,
    ) -> Defence:
        """An attacker's view: the same parameters, buffers and purifier (a copy of it, with the same seed and
        generator, when ``tvm`` asks for another TVM gradient), other gradient settings.

        Args:
            gradient: WNLL gradient, ``"exact"`` or ``"surrogate"`` (ignored for a softmax classifier).
            score: WNLL score, ``"log"`` (deployed) or ``"log64"`` (float64 solve, does not saturate; see
                :mod:`wnll_art.wnll.score`); ignored for a softmax classifier.
            tvm: ``"bpda"`` or ``"unrolled"`` (how TVM is differentiated) or ``"oblivious"`` (TVM unseen).
            eot_samples: Draws averaged per gradient.

        Returns:
            A :class:`Defence` in this one's train/eval mode (set without touching the shared modules).
        """
        if gradient not in (None, "exact", "surrogate"):
            raise ValueError(f"gradient must be 'exact' or 'surrogate', got {gradient!r}")
        if score not in (None, *SCORES):
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        clf = self.classifier
        changes = {k: v for k, v in (("gradient", gradient), ("score", score))
                   if v is not None and isinstance(clf, WNLLNet) and getattr(clf, k) != v}  # fmt: skip
        if changes:
            clf = copy.copy(clf)  # shallow: shares modules, parameters, buffers and settings
            for k, v in changes.items():
                setattr(clf, k, v)
        purifier = self.purifier
        if isinstance(purifier, TVMPurifier) and tvm in ("bpda", "unrolled") and purifier.tvm.gradient != tvm:
            purifier = purifier.with_gradient(tvm)  # type: ignore[arg-type]
        if tvm not in (None, "bpda", "unrolled", "oblivious"):
            raise ValueError(f"tvm must be 'bpda', 'unrolled' or 'oblivious', got {tvm!r}")
        view = Defence(clf, purifier=purifier, eot_samples=self.eot_samples if eot_samples is None else eot_samples,
                       oblivious=tvm == "oblivious" or (tvm is None and self.oblivious))  # fmt: skip
        view.training = self.training  # a container is born in train mode; never recurse into shared BN
        return view

    def settings(self) -> dict[str, Any]:
        """Every setting that changes the function computed (recorded with each result)."""
        return {
            "classifier": "wnll" if self.wnll is not None else "softmax",
            "classifier_type": type(self.classifier).__name__,
            "wnll": self.wnll.settings() if self.wnll is not None else None,
            "tvm": self.tvm.to_dict() if self.tvm is not None else None,
            "purifier": _purifier_settings(self.purifier),
            "eot_samples": self.eot_samples if self.randomised else None,
            "oblivious": self.oblivious,
        }


def score_view(model: nn.Module, score: Score | None) -> nn.Module:
    """``model`` scoring with ``score``: the view the ART / Foolbox adapters wrap (``score=`` of
    :class:`~wnll_art.WNLLClassifier` and :func:`~wnll_art.to_foolbox`).

    Args:
        model: A :class:`Defence`, a :class:`~wnll_art.wnll.model.WNLLNet` or any other ``nn.Module``.
        score: ``None`` (the model as it is: the deployed ``"log"`` unless it was built otherwise), ``"log"``,
            ``"log64"`` (float64 solve, does not saturate at ``log(1e-6)``) or ``"smooth"`` (deployed value,
            gradient of a wider graph); see :mod:`wnll_art.wnll.score`.

    Returns:
        ``model`` itself when its score already is ``score`` (or ``score`` is ``None``), else a view sharing every
        parameter, buffer and mask generator (:meth:`Defence.view`, or a shallow copy of a ``WNLLNet`` with
        ``score`` set), in ``model``'s train/eval mode.

    Raises:
        ValueError: ``score`` is not one of ``None``, ``"log"``, ``"log64"``, ``"smooth"``; or it is ``"log64"`` /
            ``"smooth"`` for a model that is neither a ``Defence`` nor a ``WNLLNet`` (a softmax model has no WNLL
            score; for a WNLL model inside another container build the view first: ``Defence(...).view(score=...)``).
    """
    if score is not None and score not in SCORES:
        raise ValueError(f"score must be one of {SCORES} (or None: the model's own), got {score!r}")
    wnll = model.wnll if isinstance(model, Defence) else model
    if score is None or (isinstance(wnll, WNLLNet) and wnll.score == score):
        return model
    if isinstance(model, Defence):
        return model.view(score=score) if model.wnll is not None else _no_wnll_score(model, score)
    if isinstance(model, WNLLNet):
        view = copy.copy(model)  # shallow: shares modules, parameters, buffers and settings
        view.score = score
        return view
    return _no_wnll_score(model, score)


def _no_wnll_score(model: nn.Module, score: str) -> nn.Module:
    """``model`` for ``score="log"`` (what a model without a WNLL score computes); refuses the others."""
    if score == "log":
        return model
    raise ValueError(f"score={score!r} needs a WNLLNet or a Defence with a WNLL head; got {type(model).__name__} "
                     "(a softmax model has no WNLL score; wrap a WNLLNet inside a Defence to get its views)")  # fmt: skip


def _purifier_settings(purifier: nn.Module | None) -> dict[str, Any] | None:
    if purifier is None:
        return None
    method = getattr(purifier, "settings", None)
    settings: dict[str, Any] = dict(method()) if callable(method) else {}
    # not the mask seed: callers draw from per-batch seeds (the harness records its per-cell seeds itself);
    # except for fixed masks, where the seed chooses the (deterministic) function
    keep = settings.get("fixed_masks") is True
    return {"type": type(purifier).__name__, **{k: v for k, v in settings.items() if k != "seed" or keep}}


def _num_classes(classifier: nn.Module) -> int:
    n = getattr(classifier, "num_classes", None)
    if n is None and isinstance(getattr(classifier, "linear", None), nn.Linear):
        n = classifier.linear.out_features  # type: ignore[union-attr]
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise TypeError(f"{type(classifier).__name__} needs an int attribute num_classes >= 2")
    return n


def _check_load_arguments(
    name: str, *, head: object, tvm: object, template_size: object, device: object, trained: bool,
    fixed_masks: object = False,
) -> torch.device:  # fmt: skip
    """The checks of :func:`load_defence`'s arguments (nothing loaded yet); returns the device."""
    dev = check_device(device)
    if head not in (None, "wnll", "softmax"):
        raise ValueError(f"head must be 'wnll' or 'softmax', got {head!r}")
    if not isinstance(tvm, (bool, TVMSettings)):
        raise TypeError(f"tvm must be a bool or TVMSettings, got {type(tvm).__name__}")
    if not isinstance(fixed_masks, bool):
        raise TypeError(f"fixed_masks must be a bool, got {type(fixed_masks).__name__}")
    if fixed_masks and tvm is False:
        raise ValueError("fixed_masks=True has no effect without tvm; leave it unset")
    if template_size is not None:
        check_positive_int(template_size, "template_size")
        if trained or head == "softmax":
            where = (
                f"the trained model {name!r} (it carries its own template)" if trained else "head='softmax'"
            )
            raise ValueError(f"template_size has no effect for {where}; leave it unset")
    return dev


def load_defence(
    name: str = "resnet56",
    *,
    head: Literal["wnll", "softmax"] | None = None,
    tvm: bool | TVMSettings = False,
    template_size: int | None = None,
    seed: int = 0,
    fixed_masks: bool = False,
    device: str | torch.device = "cpu",
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    **wnll_options: Any,
) -> Defence:
    """The defence built from the model zoo in one call, in eval mode, on ``device``.

    Names: the public softmax ResNet-56 (``"resnet56"``, ``wnll_art.ZOO``), which gets a post-hoc WNLL head
    with a class-balanced template of ``template_size`` CIFAR-10 training images drawn with ``seed``; or one
    of our trained models (``wnll_art.zoo_trained.trained_models()``, e.g. ``"resnet56-wnll-tvmaug"``), which
    carry their own buffer block, heads and template.

    Args:
        name: Zoo model name.
        head: ``"wnll"`` (WNLL output activation) or ``"softmax"`` (the linear head); default ``"wnll"``
            for ``"resnet56"`` and the trained output for a trained model.
        tvm: ``True`` for TVM with Guo et al.'s settings (:class:`TVMSettings` defaults), a
            :class:`TVMSettings`, or ``False`` (no TVM).
        template_size: Template images of a post-hoc WNLL head, a positive multiple of the class count;
            ``None``: 500. Refused for ``head="softmax"`` and for trained models (which carry their own
            template), where it would have no effect.
        seed: Seed of that template draw and of the TVM masks.
        fixed_masks: With ``tvm``: one fixed TVM mask drawn from ``seed`` for every call (a deterministic
            defence, for decision-based attacks such as HopSkipJump; no EOT, no K-draw rule). Refused without
            ``tvm``.
        device: Where the model, its template and its purifier live (chosen once): ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``, checked before anything is loaded.
        data_root: CIFAR-10 root (default ``$WNLL_ART_DATA``, else ``~/.cache/wnll_art``).
        weights: The (base) ResNet-56 weights file (default: the torch hub cache), sha256-checked.
        **wnll_options: Further :class:`WNLLNet` settings (``coupling``, ``gradient``, ``kernel``, ...).

    Returns:
        The :class:`Defence`.

    Raises:
        TypeError: ``device`` or ``template_size`` of the wrong type, ``tvm`` not a bool or settings.
        ValueError: A device this machine lacks (or ``meta``), a ``template_size`` that is not positive or
            has no effect, an unknown ``head``, ``fixed_masks`` without ``tvm``.

    Example:
        >>> defence = wnll_art.load_defence("resnet56", tvm=True)
        >>> scores = defence(x)                      # x: (N, 3, 32, 32) float in [0, 1]
    """
    from wnll_art.zoo_trained import trained_models

    trained = name in trained_models()
    # every argument is checked before any weights or data are read
    dev = _check_load_arguments(name, head=head, tvm=tvm, template_size=template_size, device=device,
                                trained=trained, fixed_masks=fixed_masks)  # fmt: skip
    classifier = load_classifier(name, head=head, template_size=template_size, seed=seed, data_root=data_root,
                                 weights=weights, **wnll_options)  # fmt: skip
    settings = TVMSettings() if tvm is True else (tvm or None)
    return Defence(classifier, tvm=settings, seed=seed, fixed_masks=fixed_masks).to(dev).eval()


def load_classifier(
    name: str = "resnet56",
    *,
    head: Literal["wnll", "softmax"] | None = None,
    template_size: int | None = None,
    seed: int = 0,
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    **wnll_options: Any,
) -> nn.Module:
    """The classifier of :func:`load_defence` (no purifier), in eval mode on the CPU: the one place a zoo name
    becomes a network, and the post-hoc WNLL template is drawn (:meth:`WNLLNet.from_pretrained`).

    Args: as :func:`load_defence` (``template_size=None``: 500 for a post-hoc WNLL head).

    Raises:
        ValueError: An unknown ``head``, a ``template_size`` with no effect, ``wnll_options`` for a softmax head;
            what :func:`load_trained` and the zoo raise.
    """
    from wnll_art.zoo_trained import load_trained, trained_models

    trained = name in trained_models()
    _check_load_arguments(name, head=head, tvm=False, template_size=template_size, device="cpu", trained=trained)
    if trained:
        return load_trained(name, output=head, weights=weights, **wnll_options)
    if head in (None, "wnll"):
        size = DEFAULT_TEMPLATE_SIZE if template_size is None else template_size
        return WNLLNet.from_pretrained(
            name, template_size=size, seed=seed, data_root=data_root, weights=weights, **wnll_options
        )
    if wnll_options:
        raise ValueError(f"WNLL options {sorted(wnll_options)} need head='wnll'")
    from wnll_art.zoo import load_pretrained

    return load_pretrained(name, weights=weights).eval()
