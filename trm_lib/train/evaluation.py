"""The one evaluator: scores of a method on feature batches, and the metrics on them.

Validation uses the *observed* labels only (:func:`observed_metrics`: the signal a user of
partial labels has, and the one that selects the epoch); the test split is scored on full
labels (:func:`trm_lib.core.metrics.evaluate_scores`). Every score of the package comes from
:func:`predict`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from trm_lib.core import metrics
from trm_lib.core.methods import Method
from trm_lib.datasets import labels
from trm_lib.utils import distributed

from .session import Batch, Session, autocast, to_device


def eval_outputs(method: Method, batches: Iterable[Batch], device: torch.device | None = None,
                 amp: bool = False, then: Callable[[Any, Batch], Any] | None = None
                 ) -> Iterator[Any]:
    """``then(method(batch), batch)`` (or the output itself) of every batch, in eval mode without
    gradients; the method's previous mode comes back when the iteration ends or is abandoned.
    Shared by :func:`predict` and the analyses that need more of the output than the scores."""
    was_training = method.training
    method.eval()
    try:
        for batch in batches:
            batch = to_device(batch, device)
            with torch.no_grad(), autocast(batch["global"].device, amp):
                out = method(batch)
                yield out if then is None else then(out, batch)
    finally:
        method.train(was_training)


def predict(method: Method, batches: Iterable[Batch], device: torch.device | None = None,
            amp: bool = False) -> np.ndarray:
    """Scores ``method.scores(method(batch))`` of every batch, in eval mode, as one (N, C)
    float64 array (methods may return float64 probabilities so that confident images do not tie
    at 1.0; nothing here rounds them). The one inference path of the package."""
    out = [scores.detach().to(torch.float64).cpu()
           for scores in eval_outputs(method, batches, device, amp,
                                      then=lambda out, _batch: method.scores(out))]
    if not out:
        raise ValueError("predict: no batches to score")
    return torch.cat(out).numpy()


def predict_split(method: Method, session: Session, split: str,
                  amp: bool = False) -> np.ndarray:
    """:func:`predict` over all rows of ``split``; under ``torchrun`` each rank scores its
    contiguous share of the rows and the shares are all-gathered back into row order, so
    every rank holds the full (N, C) score matrix."""
    if not distributed.is_distributed():
        return predict(method, session.batches(split), session.device, amp)
    _, rows = session.data.rows(split)
    mine = distributed.shard_indices(rows)
    if len(mine):
        local = predict(method, session.batches(split, mine), session.device, amp)
    else:
        local = np.zeros((0, len(session.ctx.class_names)), dtype=np.float64)
    return distributed.all_gather_array(local)


def observed_metrics(scores: np.ndarray, observed: np.ndarray,
                     unknown: str = "exclude") -> dict[str, float]:
    """mAP against *observed* labels {1,-1,0} — the validation signal of a partial-label run.

    ``unknown="exclude"``: per class, rows whose entry is unknown (0) are left out.
    ``unknown="negative"``: unknown entries count as negatives (protocol B observes none).
    Either way a class needs at least one positive *and* one negative to rank: without both its
    AP is undefined or trivially 1, so it is excluded and counted in ``n_excluded_classes``
    (with few validation images and small p that happens; ``mAP`` is NaN if every class is).
    ``known_fraction`` is the share of observed entries.
    """
    observed = labels.check_labels(observed, where="observed labels")
    if unknown not in ("exclude", "negative"):
        raise ValueError(f"unknown must be 'exclude' or 'negative', got {unknown!r}")
    targets = np.where(observed == 0, -1, observed) if unknown == "negative" else observed
    ap = np.full(observed.shape[1], np.nan)
    for c in range(observed.shape[1]):
        known = targets[:, c] != 0
        col = targets[known, c]
        if (col == 1).any() and (col == -1).any():
            ap[c] = metrics.average_precision(scores[known, c], col)
    excluded = int(np.isnan(ap).sum())
    return {"mAP": float(np.nanmean(ap)) if excluded < ap.size else float("nan"),
            "n_excluded_classes": float(excluded),
            "known_fraction": float((observed != 0).mean())}


def evaluate(method: Method, batches: Iterable[Batch], targets: np.ndarray, *,
             class_names: Sequence[str] | None = None, observed: bool = False,
             device: torch.device | None = None, amp: bool = False) -> dict[str, float]:
    """THE evaluator: score ``batches`` with ``method`` and compute the metrics.

    ``targets`` are full labels (→ :func:`trm_lib.core.metrics.evaluate_scores`: mAP, CP…OF1,
    top-3, ``AP/<class>`` with ``class_names``) or, with ``observed=True``, a {1,-1,0} mask
    (→ :func:`observed_metrics`, unknown entries excluded).
    """
    scores = predict(method, batches, device, amp)
    return score_metrics(scores, targets, class_names=class_names, observed=observed)


def score_metrics(scores: np.ndarray, targets: np.ndarray, *,
                  class_names: Sequence[str] | None = None, observed: bool = False,
                  unknown: str = "exclude") -> dict[str, float]:
    """The metric half of :func:`evaluate`, for scores already computed."""
    if len(scores) != len(targets):
        raise ValueError(f"{len(scores)} scored images but {len(targets)} label rows")
    if observed:
        return observed_metrics(scores, targets, unknown=unknown)
    return metrics.evaluate_scores(scores, targets, class_names=class_names)


__all__ = ["eval_outputs", "evaluate", "observed_metrics", "predict", "predict_split",
           "score_metrics"]
