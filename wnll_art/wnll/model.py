"""A classifier whose softmax is replaced by the WNLL graph interpolation, as one ``nn.Module``.

B. Wang, A. T. Lin, Z. Shi, W. Zhu, P. Yin, A. L. Bertozzi, S. J. Osher, "Adversarial Defense via Data
Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516 (2018).
Z. Shi, S. Osher, W. Zhu, "Weighted nonlocal Laplacian on interpolation from sparse data", J. Sci.
Comput. 73 (2017).

All defence logic lives in this module, so tools that rebuild a plain classifier from
``estimator.model`` (ART's AutoAttack does) attack the same function.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import nn

from wnll_art._checks import check_images, check_labels, check_positive_int
from wnll_art.models.resnet import INPUT_ATOL
from wnll_art.wnll.score import LOG_FLOOR, SCORES, Score, wnll_scores
from wnll_art.wnll.solver import check_graph_options, check_template_labels, wnll_interpolate_checked
from wnll_art.wnll.template import balanced_template

__all__ = ["BUILD_KEYS", "WNLLNet"]

# the constructor options recorded with trained weights (everything but the backbone and the template)
BUILD_KEYS = ("coupling", "wnll_batch_size", "gradient", "buffer_dim", "k", "sigma_neighbor", "kernel", "gamma",
              "log_floor", "solver")  # fmt: skip
Coupling = Literal["transductive", "inductive"]
Gradient = Literal["exact", "surrogate"]


class WNLLNet(nn.Module):
    """Backbone features -> (optional FC+ReLU buffer block) -> WNLL interpolation against a template.

    Args:
        backbone: A module with ``features(x) -> (N, D)`` and a ``linear`` head ``D -> C`` (e.g.
            :func:`wnll_art.resnet56`), taking images in [0, 1].
        template_images: ``(M, 3, H, W)`` float in [0, 1] (or uint8, divided by 255), the labelled
            template; stored as a buffer.
        template_labels: ``(M,)`` int64 labels; every class in ``[0, C)`` must appear.
        coupling: ``"transductive"`` (the paper): the inputs of one call are solved together with the
            template, in consecutive chunks of ``wnll_batch_size``, so an output depends on the other
            inputs of its chunk. ``"inductive"``: each input is solved with the template alone, so
            outputs do not depend on the batch.
        wnll_batch_size: Chunk size of the transductive solve.
        gradient: ``"exact"`` (autodiff through the WNLL solve) or ``"surrogate"`` (the paper's
            straight-through estimator: forward = WNLL, backward = log-softmax of the linear head).
        buffer_dim: Width of the paper's FC+ReLU buffer block (``None``: no buffer block; the WNLL
            acts on the backbone features and the backbone's ``linear`` is the linear head).
        k: Neighbours in the kNN graph (the point itself counted); ``2 <= k <= M`` (the template size), so
            that a forward of a single image (``M + 1`` points) has ``k`` neighbours to draw from.
        sigma_neighbor: Neighbour whose distance sets the Gaussian scale.
        kernel: ``"gaussian"`` (the paper) or ``"quartic"`` (the authors' code).
        gamma: Weight of the template term; ``None`` for the paper's ``|X| / |template| - 1``.
        log_floor: Added to the label functions before the log (``log(u + log_floor)``), which keeps the
            log finite without zeroing any gradient (a clamp would).
        solver: Passed to :func:`wnll_interpolate` (``"auto"``, ``"dense"`` or ``"cg"``).
        score: ``"log"`` (the deployed ``log(u + log_floor)``) or ``"log64"`` (an attacker's score that does
            saturate in the floor: the WNLL solve in float64, scored ``log(u + 1e-30)``) or ``"smooth"``
            (deployed value, gradient of the WNLL on a wider graph, ``k = smooth_k``, ``sigma_neighbor =
            smooth_k // 2``, capped at the template size); see :mod:`wnll_art.wnll.score`. Attack views set
            it through :meth:`wnll_art.Defence.view`.
        smooth_k: Neighbours of the wider graph of the ``"smooth"`` score.

    Raises:
        TypeError: A backbone without ``features``/``linear``, or options of the wrong type.
        ValueError: Any option out of range (all are checked here, not at the first forward).

    Shapes:
        ``forward(x)``: ``(N, 3, H, W)`` float in [0, 1], on the module's device -> ``(N, C)`` log-scores
        (log of the WNLL label functions; not normalised logits: use NLL as the loss). ``N = 0`` gives
        ``(0, C)``. ``(3, H, W)`` must be :attr:`input_shape`, the template's image shape (other sizes
        are refused: the backbone would accept them and silently give other answers). Any floating
        dtype is accepted and cast to the template's dtype (the model's, e.g. float32), so NumPy's
        float64 ``uint8 / 255.0`` works; the output has the model's dtype.
    """

    template_images: torch.Tensor
    template_labels: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        template_images: torch.Tensor,
        template_labels: torch.Tensor,
        *,
        coupling: Coupling = "transductive",
        wnll_batch_size: int = 500,
        gradient: Gradient = "exact",
        buffer_dim: int | None = None,
        k: int = 15,
        sigma_neighbor: int = 8,
        kernel: Literal["gaussian", "quartic"] = "gaussian",
        gamma: float | None = None,
        log_floor: float = LOG_FLOOR,
        solver: Literal["auto", "dense", "cg"] = "auto",
        score: Score = "log",
        smooth_k: int = 100,
    ) -> None:
        super().__init__()
        if not callable(getattr(backbone, "features", None)) or not isinstance(
            getattr(backbone, "linear", None), nn.Linear
        ):
            raise TypeError("backbone must have a features(x) method and a `linear` head (nn.Linear)")
        backbone_linear: nn.Linear = backbone.linear  # type: ignore[assignment]
        _check_head_options(coupling=coupling, gradient=gradient, log_floor=log_floor, score=score)
        num_classes = backbone_linear.out_features
        images = _check_template(template_images, template_labels, num_classes)
        self.backbone = backbone
        self.num_classes = num_classes
        self.coupling: Coupling = coupling
        self.wnll_batch_size = check_positive_int(wnll_batch_size, "wnll_batch_size")
        self.gradient: Gradient = gradient
        self.log_floor = log_floor
        self.score: Score = score
        self.smooth_k = check_positive_int(smooth_k, "smooth_k")
        if smooth_k < 2:
            raise ValueError(f"smooth_k must be >= 2, got {smooth_k}")
        check_graph_options(k=k, sigma_neighbor=sigma_neighbor, kernel=kernel, gamma=gamma, solver=solver,
                            n_points=images.shape[0] + 1)  # fmt: skip
        self.k, self.sigma_neighbor, self.kernel = k, sigma_neighbor, kernel
        self.gamma, self.solver = gamma, solver
        self.buffer: nn.Module | None = None
        self.buffer_head: nn.Linear | None = None
        if buffer_dim is not None:
            dim = int(getattr(backbone, "feature_dim", backbone_linear.in_features))
            width = check_positive_int(buffer_dim, "buffer_dim")
            self.buffer = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
            self.buffer_head = nn.Linear(buffer_dim, num_classes)
        self.register_buffer("template_images", images.clone())
        self.register_buffer("template_labels", template_labels.clone().long())
        self._cache_key: tuple[object, ...] | None = None
        self._cache: torch.Tensor | None = None
        self._labels_key: tuple[object, ...] | None = None  # the template labels last checked

    # ----------------------------------------------------------------------------------- features
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input image: the template's image shape."""
        c, h, w = self.template_images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def linear_head(self) -> nn.Module:
        """The linear head parallel to the WNLL head (used by the surrogate gradient and training)."""
        if self.buffer_head is not None:
            return self.buffer_head
        head: nn.Module = self.backbone.linear  # type: ignore[assignment]
        return head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features the WNLL acts on: ``(N, 3, H, W)`` in [0, 1] -> ``(N, D)``."""
        z: torch.Tensor = self.backbone.features(x)  # type: ignore[operator]
        return self.buffer(z) if self.buffer is not None else z

    def linear_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the parallel linear head: ``(N, 3, H, W)`` -> ``(N, C)``."""
        return self.linear_head(self.embed(x))

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Checks a batch (float, NCHW, :attr:`input_shape`, in [0, 1], finite) and casts it to the model's
        dtype (no copy when it already matches); raises ``TypeError`` / ``ValueError`` naming ``x``."""
        check_images(x, "x", allow_empty=True, atol=INPUT_ATOL)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x must have shape (N, {', '.join(map(str, self.input_shape))}) (the template's image shape), "
                f"got {tuple(x.shape)}; resize the images to {self.input_shape[1]}x{self.input_shape[2]}"
            )
        return x.to(self.template_images.dtype)

    def _state_key(self) -> tuple[object, ...]:
        tensors = [*self.parameters(), *self.buffers()]
        return tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)

    def template_features(self) -> torch.Tensor:
        """Embedded template ``(M, D)``.

        In eval mode the result is cached (detached) and reused until a parameter or buffer changes
        (in place, by ``load_state_dict``, or by a device/dtype move), so ``model.train(False)``
        before every call, as ART does, keeps the cache. In train mode it is recomputed, with grad.
        """
        if self.training:
            self._cache, self._cache_key = None, None
            return self._embed_chunks(self.template_images)
        key = self._state_key()
        if self._cache is None or key != self._cache_key:
            with torch.no_grad():
                self._cache = self._embed_chunks(self.template_images)
            self._cache_key = key
        return self._cache

    def _embed_chunks(self, images: torch.Tensor) -> torch.Tensor:
        step = max(self.wnll_batch_size, 1)
        return torch.cat([self.embed(images[i : i + step]) for i in range(0, images.shape[0], step)])

    # ------------------------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log WNLL label functions ``(N, C)`` of images ``(N, 3, H, W)`` in [0, 1]."""
        x = self.check_input(x)
        if x.shape[0] == 0:
            return x.new_zeros((0, self.num_classes))
        template = self.template_features()
        if self.coupling == "inductive":
            # one image at a time: batched kernels round differently per batch size, and inductive outputs
            # must not depend on the batch at all (bitwise); costs ~5x the backbone time of a batched pass
            feats = torch.cat([self.embed(x[i : i + 1]) for i in range(x.shape[0])])
        else:
            feats = self.embed(x)
        if self.score == "log64":
            u = self.interpolate(feats.double(), template.double())
        else:
            u = self.interpolate(feats, template)
        linear = self.linear_head(feats) if self.gradient == "surrogate" else None
        smooth = None
        if self.score == "smooth" and self.gradient == "exact":
            k = min(self.smooth_k, template.shape[0])
            smooth = self.interpolate(feats, template, k=k, sigma_neighbor=max(k // 2, 1))
        scores = wnll_scores(u, gradient=self.gradient, linear_logits=linear, log_floor=self.log_floor,
                             score=self.score if smooth is not None or self.score != "smooth" else "log",
                             smooth_u=smooth)  # fmt: skip
        return scores.to(x.dtype)

    def interpolate(
        self,
        feats: torch.Tensor,
        template: torch.Tensor,
        *,
        k: int | None = None,
        sigma_neighbor: int | None = None,
    ) -> torch.Tensor:
        """WNLL label functions ``(N, C)`` of embedded inputs ``(N, D)`` against embedded template (``k`` and
        ``sigma_neighbor``: the graph's, by default the model's own).

        The template labels are checked once per version of the buffer (construction, ``load_state_dict``,
        a device move), not on every call: each check is a host synchronisation on a GPU.
        """
        labels = self.template_labels
        key = (labels.data_ptr(), labels._version, labels.device, template.shape[0])
        if key != self._labels_key:
            check_template_labels(labels, template, self.num_classes)
            self._labels_key = key
        step = 1 if self.coupling == "inductive" else self.wnll_batch_size
        rows = [
            wnll_interpolate_checked(
                feats[i : i + step], template, labels, num_classes=self.num_classes,
                k=k or self.k, sigma_neighbor=sigma_neighbor or self.sigma_neighbor, kernel=self.kernel,
                gamma=self.gamma,
                solver=self.solver,
            )
            for i in range(0, feats.shape[0], step)
        ]  # fmt: skip
        return torch.cat(rows)

    def extra_repr(self) -> str:
        return (
            f"coupling={self.coupling!r}, wnll_batch_size={self.wnll_batch_size}, gradient={self.gradient!r}, "
            f"template={tuple(self.template_images.shape)}, k={self.k}, sigma_neighbor={self.sigma_neighbor}, "
            f"kernel={self.kernel!r}, gamma={self.gamma!r}, solver={self.solver!r}, score={self.score!r}"
        )

    def settings(self) -> dict[str, object]:
        """Every setting that changes the function computed (recorded with each evaluation result)."""
        return {
            "coupling": self.coupling,
            "wnll_batch_size": self.wnll_batch_size,
            "gradient": self.gradient,
            "template_size": int(self.template_images.shape[0]),
            "buffer_dim": None if self.buffer_head is None else self.buffer_head.in_features,
            "log_floor": self.log_floor,
            "score": self.score,
            "smooth_k": self.smooth_k if self.score == "smooth" else None,
            "k": self.k,
            "sigma_neighbor": self.sigma_neighbor,
            "kernel": self.kernel,
            "gamma": self.gamma,
            "solver": self.solver,
        }

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name: str = "resnet56",
        *,
        template_size: int = 500,
        seed: int = 0,
        data_root: str | os.PathLike[str] | None = None,
        weights: str | os.PathLike[str] | None = None,
        **kwargs: object,
    ) -> WNLLNet:
        """A zoo backbone with a class-balanced template drawn from the CIFAR-10 training set.

        Args:
            name: Zoo model name (see :data:`wnll_art.ZOO`).
            template_size: Template images; must be a multiple of the class count.
            seed: Seed of the ``torch.Generator`` drawing the template.
            data_root: CIFAR-10 root (default: :func:`wnll_art.data.default_data_root`).
            weights: Weights file (default: the torch hub cache).
            **kwargs: Passed to :class:`WNLLNet` (``coupling``, ``wnll_batch_size``, ``kernel``, ...).

        Returns:
            The model in eval mode, on CPU.
        """
        from wnll_art.data import load_cifar10
        from wnll_art.zoo import load_pretrained

        check_positive_int(template_size, "template_size")
        backbone = load_pretrained(name, weights=weights)
        num_classes = int(backbone.linear.out_features)  # type: ignore[union-attr, arg-type]
        if template_size % num_classes:
            raise ValueError(f"template_size={template_size} is not a multiple of {num_classes} classes")
        images, labels = load_cifar10(data_root, split="train")
        gen = torch.Generator().manual_seed(seed)
        t_images, t_labels = balanced_template(images, labels, template_size // num_classes, generator=gen)
        return cls(backbone, t_images, t_labels, **kwargs).eval()  # type: ignore[arg-type]


def _as_unit_float(images: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        images = images.float() / 255.0
    return check_images(images, name)


def _check_head_options(*, coupling: str, gradient: str, log_floor: float, score: str) -> None:
    """Raises ``ValueError`` for an unknown coupling, gradient or score, or a log_floor outside (0, 1)."""
    if coupling not in ("transductive", "inductive"):
        raise ValueError(f"coupling must be 'transductive' or 'inductive', got {coupling!r}")
    if gradient not in ("exact", "surrogate"):
        raise ValueError(f"gradient must be 'exact' or 'surrogate', got {gradient!r}")
    if not 0.0 < log_floor < 1.0:
        raise ValueError(f"log_floor must be in (0, 1), got {log_floor}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")


def _check_template(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Checks the template (images; integer labels in [0, C), one per row; every class present) and returns its
    images as float in [0, 1] (uint8 divided by 255)."""
    unit = _as_unit_float(images, "template_images")
    check_labels(labels, "template_labels", num_classes=num_classes)
    if labels.shape[0] != unit.shape[0]:
        raise ValueError(f"template_images has {unit.shape[0]} rows, template_labels {labels.shape[0]}")
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"the template has no example of classes {missing}; every class is needed")
    return unit
