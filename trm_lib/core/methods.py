"""The contract between the one trainer and every method (TRM-ML and the baselines).

A method is an ``nn.Module`` that maps a *feature batch* to per-class logits and knows its own
loss. The trainer (:mod:`trm_lib.train`) never looks inside a method, which is what makes the
comparison fair: same data, same features, same schedule, same evaluator.

Feature batch (a ``dict[str, Tensor]`` on the training device), produced either from the feature
cache (:mod:`trm_lib.backbone.features`) or by running the frozen backbone on live images:

==============  ===============  ===========================================================
key             shape            meaning
==============  ===============  ===========================================================
``global``      (B, D)           CLIP image embedding in the joint space (not normalised)
``dense``       (B, L, D)        dense tokens projected into the joint space (F~), L = h*w
``dense_raw``   (B, L, d_v)      optional: unprojected dense map F (``backbone.cache_raw``)
``observed``    (B, C)           training targets in {1, -1, 0}; 0 = unknown
``full``        (B, C)           hidden full labels in {1, -1}; for *logging only* (pseudo-label
                                 precision), never for losses; absent on real data w/o them
``index``       (B,)             row of the sample in the training set (pseudo-label memory)
==============  ===============  ===========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from trm_lib.utils.registry import Registry

if TYPE_CHECKING:
    from trm_lib.config.run_config import MethodConfig


@dataclass
class MethodContext:
    """What a method may know about the frozen world when it is built."""

    class_names: list[str]
    text_embeddings: torch.Tensor  # (C, D) L2-normalised class text embeddings t_c
    embed_dim: int  # D
    dense_dim: int  # d_v (raw dense feature width)
    grid: tuple[int, int]  # (h, w) of the dense token map
    num_train: int  # rows of the training set (for per-sample pseudo-label memory)
    backbone: Any = None  # the FrozenCLIP, for methods that need the text tower (prompts)
    # the words each class is prompted with, aligned with class_names ("dining table" for
    # "diningtable"); the fixed text_embeddings were encoded from them, so learnable prompts
    # must use them too to start where zero-shot CLIP does. None: the class names themselves
    prompt_names: list[str] | None = None
    # every training label is observed (protocol A at p = 1): no entry is left to pseudo-label,
    # so methods may skip the work that only serves pseudo-labels (the result is the same)
    all_observed: bool = False

    def __post_init__(self) -> None:
        if self.prompt_names is not None and len(self.prompt_names) != len(self.class_names):
            raise ValueError(f"MethodContext.prompt_names has {len(self.prompt_names)} entries "
                             f"for {len(self.class_names)} classes")

    def prompt_words(self) -> list[str]:
        """The words learnable prompts put after their context, one per class."""
        return list(self.prompt_names or self.class_names)


class Method(nn.Module):
    """Base class. Subclasses implement :meth:`forward` and :meth:`loss`."""

    name: str = "method"
    trainable: bool = True  # False: evaluated as is (zero-shot)
    #: the keys of :meth:`loss`'s logs that are loss terms (unweighted values); the trainer writes
    #: each as the history column ``train_<term>`` beside ``loss`` (the weighted total it
    #: returns), and the training-curves figure plots exactly these; other logs are counters
    loss_terms: tuple[str, ...] = ("cls",)

    def __init__(self, cfg: MethodConfig, ctx: MethodContext):
        super().__init__()
        self.cfg = cfg
        self.ctx = ctx

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return at least ``{"logits": (B, C)}``; optionally ``"maps": (B, C, L)`` (spatial
        saliency per class, rows summing to 1 for attention-style maps)."""
        raise NotImplementedError

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
             epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar training loss and a dict of scalar logs: the :attr:`loss_terms` that this call
        computed (e.g. ``{"cls": .., "kd": ..}``) and counters; not the total itself."""
        raise NotImplementedError

    def scores(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-class probabilities used by the evaluator (default: sigmoid of logits)."""
        return torch.sigmoid(out["logits"].float())

    def epoch_start(self, epoch: int) -> None:
        """Hook before each training epoch (e.g. switch pseudo-labelling on after warm-up)."""

    def epoch_end(self, epoch: int) -> dict[str, float]:
        """Hook after each training epoch; returns scalar logs (e.g. pseudo-label precision)."""
        return {}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------
# The registry: implementations register into it; it never imports them (trm_lib.core does)
# ---------------------------------------------------------------------------------------------

METHODS: Registry[type[Method]] = Registry("method.name")

M = TypeVar("M", bound=type[Method])


def register_method(name: str, label: str | None = None) -> Callable[[M], M]:
    """Class decorator: make ``method.name=name`` build this class; ``label`` is its display name
    (figures, the explorer)."""
    def deco(cls: M) -> M:
        METHODS.register(name, cls, label=label or name)
        cls.name = name
        return cls
    return deco


def list_methods() -> list[str]:
    """The registered method names, in registration order (see :mod:`trm_lib.core`)."""
    return METHODS.names()


def loss_terms() -> list[str]:
    """Every loss term a registered method declares (:attr:`Method.loss_terms`), in order."""
    return list(dict.fromkeys(t for _, cls in METHODS.items() for t in cls.loss_terms))


def method_label(name: str) -> str:
    """The display name of a registered method (its name when it has none)."""
    return METHODS.meta(name).get("label", name)


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; ConfigError naming the known ones otherwise."""
    return METHODS.get(name)


def build_method(cfg: MethodConfig, ctx: MethodContext) -> Method:
    """The method ``cfg.name`` names, built for ``ctx``."""
    return method_class(cfg.name)(cfg, ctx)


__all__ = ["METHODS", "Method", "MethodContext", "build_method", "list_methods", "loss_terms",
           "method_class", "method_label", "register_method"]
