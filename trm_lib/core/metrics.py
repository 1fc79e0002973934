"""Multi-label evaluation: mAP and CP/CR/CF1/OP/OR/OF1 (+ top-3), in numpy, float64.

Conventions (README 'Conventions'; the peers disagree, so we state ours):

- **Targets are full labels.** 1 = positive; negatives may be written -1 (the label matrices of
  this package) or 0 (sklearn style), but not both in one matrix: a matrix holding 1, 0 *and* -1
  is a partially observed {1,-1,0} mask, where 0 means *unknown*, and evaluating on it would
  silently count unknowns as negatives. That raises. Evaluate on the hidden full labels.
- **Values are fractions in [0, 1]**, not percentages (multiply by 100 for tables).
- **AP** of a class is ranking average precision exactly as
  ``sklearn.metrics.average_precision_score``: the sum over distinct score thresholds of
  (recall increase) x precision, tied scores forming one threshold. Scores may be logits.
- **Classes without a positive** in the evaluated targets have no AP. ``mAP`` excludes them and
  reports how many (``n_empty_classes``); ``mAP_zero_empty`` scores them 0 like the peers do.
- **CP/CR/OP/OR** follow ML-GCN's evaluation code (Megvii-Nanjing/ML-GCN ``util.py``,
  ``AveragePrecisionMeter.evaluation``), behind the published tables of the ASL line: an entry
  is predicted positive when ``score >= threshold`` (0.5 on probabilities = logit 0); top-k
  variants predict an entry positive when it is among the k highest scores of its image *and*
  ``score >= threshold`` (ML-GCN's ``overall_topk``; ties go to the lower class index). A class
  with no prediction gets a prediction count of 1 (ML-GCN's ``Np[Np == 0] = 1``), so its
  precision is 0 and — ``op_convention="mlgcn"``, the default — the 1 also enters the pooled
  denominator of OP: ``OP = ΣNc / ΣNp`` after the fix. ``op_convention="pooled"`` pools the
  raw counts instead (sklearn's micro precision); the two differ whenever a class has no
  predicted positive. Classes without a positive are left out of the per-class averages CP and
  CR, as for mAP (ML-GCN divides by zero there, and its CR becomes NaN); OR pools every entry.
  Empty denominators give 0 for precision and NaN for recall only when no class has a positive.
- **Not DualCoOp's validation**: DualCoOp (``utils/validations.py``) thresholds with ``>``
  (not ``>=``), averages per-class precision / recall over *all* classes, reports the mean of
  per-class F1s as its class F1 and pools OP without ML-GCN's fix. Its numbers are not ours.
- **Correspondence with sklearn** ``precision_recall_fscore_support(T, P, zero_division=0,
  labels=<classes with a positive>)``: CP = macro precision, CR = macro recall,
  OR = micro recall; OP / OF1 = micro precision / F1 (``labels=None``) under
  ``op_convention="pooled"``, or by default when every class has a predicted positive. CF1 is
  the harmonic mean ``2 CP CR / (CP + CR)`` of the macro averages, *not* sklearn's macro F1 (the
  mean of per-class F1s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class MetricError(ValueError):
    """Scores or targets cannot be evaluated; the message names the argument."""


@dataclass(frozen=True)
class MAPResult:
    """mAP with its per-class APs; ``per_class`` is NaN for excluded (positive-free) classes."""

    value: float
    per_class: np.ndarray
    n_excluded: int
    excluded: np.ndarray  # class indices left out of ``value``


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor on any device, without importing torch here
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise MetricError(f"{name}: not a numeric array")
    return arr


def _check(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return float64 scores, boolean positives (both 2-D) and whether the input was 1-D."""
    S = _to_numpy(scores, "scores")
    T = _to_numpy(targets, "targets")
    if S.shape != T.shape:
        raise MetricError(f"scores shape {S.shape} != targets shape {T.shape}")
    if S.ndim not in (1, 2):
        raise MetricError(f"scores: expected (images,) or (images, classes), got shape {S.shape}")
    flat = S.ndim == 1
    if flat:
        S, T = S[:, None], T[:, None]
    if S.shape[0] == 0 or S.shape[1] == 0:
        raise MetricError(f"scores: nothing to evaluate (shape {S.shape})")
    if S.dtype.kind not in "fiub":
        raise MetricError(f"scores: expected numbers, got dtype {S.dtype}")
    S = S.astype(np.float64)
    if not np.isfinite(S).all():
        r, c = np.argwhere(~np.isfinite(S))[0]
        raise MetricError(f"scores: non-finite value {S[r, c]} at image {r}, class {c}")
    if T.dtype == bool:
        return S, T, flat
    bad = ~np.isin(T, (1, 0, -1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise MetricError(f"targets: value {T[r, c].item()!r} at image {r}, class {c}; expected "
                          f"1 for positives and -1 or 0 for negatives")
    if (T == 0).any() and (T == -1).any():
        raise MetricError("targets contain 1, 0 and -1: that is a partially observed mask (0 = "
                          "unknown), not full labels; evaluate on the full labels")
    return S, T == 1, flat


def _average_precision(S: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-column AP of float64 ``S`` against boolean ``T`` (NaN where a column has no positive).

    Each positive contributes, divided by the number of positives, the precision measured at the
    end of its tie group in the descending ranking: that is sklearn's sum of recall steps times
    precision over distinct thresholds, computed for all classes at once.
    """
    # work class-major (C, N): sorting contiguous rows is several times faster than columns
    St = np.ascontiguousarray(S.T)
    Tt = np.ascontiguousarray(T.T)
    n = St.shape[1]
    order = np.argsort(-St, axis=1)  # order inside a tie group does not matter
    s_sorted = np.take_along_axis(St, order, axis=1)
    pos = np.take_along_axis(Tt, order, axis=1)
    tp = np.cumsum(pos, axis=1, dtype=np.float64)
    precision = tp / np.arange(1, n + 1, dtype=np.float64)
    cols = np.arange(n)
    is_end = np.ones_like(pos)
    is_end[:, :-1] = s_sorted[:, 1:] != s_sorted[:, :-1]
    # index of the last entry of each entry's tie group: reverse running minimum of end positions
    group_end = np.minimum.accumulate(np.where(is_end, cols, n)[:, ::-1], axis=1)[:, ::-1]
    prec_at = np.take_along_axis(precision, group_end, axis=1)
    n_pos = pos.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(pos, prec_at, 0.0).sum(axis=1) / n_pos
    ap[n_pos == 0] = np.nan
    return ap


def average_precision(scores: Any, targets: Any) -> np.ndarray | float:
    """Ranking AP per class (a float for 1-D input), identical to sklearn's
    ``average_precision_score``; NaN for a class with no positive."""
    S, T, flat = _check(scores, targets)
    ap = _average_precision(S, T)
    return float(ap[0]) if flat else ap


def mean_average_precision(scores: Any, targets: Any, empty: str = "exclude") -> MAPResult:
    """mAP over classes. ``empty="exclude"`` (ours) leaves positive-free classes out and counts
    them; ``empty="zero"`` scores them 0 (the peers). NaN when every class is empty."""
    if empty not in ("exclude", "zero"):
        raise MetricError(f"empty must be 'exclude' or 'zero', got {empty!r}")
    S, T, _ = _check(scores, targets)
    ap = _average_precision(S, T)
    missing = np.flatnonzero(np.isnan(ap))
    if empty == "zero":
        ap[missing] = 0.0
        return MAPResult(float(ap.mean()), ap, 0, np.zeros(0, dtype=np.int64))
    value = float(np.nanmean(ap)) if missing.size < ap.size else float("nan")
    return MAPResult(value, ap, int(missing.size), missing.astype(np.int64))


#: how OP pools the per-class prediction counts (module docstring)
OP_CONVENTIONS = ("mlgcn", "pooled")


def prf_metrics(scores: Any, targets: Any, threshold: float = 0.5, top_k: int | None = None,
                op_convention: str = "mlgcn") -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 at ``score >= threshold`` (optionally also within the top-k
    scores of each image); see the module docstring for the exact convention and
    ``op_convention``."""
    if op_convention not in OP_CONVENTIONS:
        raise MetricError(f"op_convention must be one of {OP_CONVENTIONS}, got {op_convention!r}")
    S, T, _ = _check(scores, targets)
    pred = S >= threshold
    if top_k is not None:
        if int(top_k) != top_k or top_k < 1:
            raise MetricError(f"top_k must be a positive integer, got {top_k!r}")
        top = np.argsort(-S, axis=1, kind="stable")[:, : int(top_k)]
        in_top = np.zeros_like(pred)
        np.put_along_axis(in_top, top, True, axis=1)
        pred &= in_top
    tp = (pred & T).sum(axis=0).astype(np.float64)
    n_pred = pred.sum(axis=0).astype(np.float64)
    n_pos = T.sum(axis=0).astype(np.float64)
    has_pos = n_pos > 0
    class_p = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    class_r = np.divide(tp, n_pos, out=np.zeros_like(tp), where=has_pos)
    nan = float("nan")
    cp = float(class_p[has_pos].mean()) if has_pos.any() else nan
    cr = float(class_r[has_pos].mean()) if has_pos.any() else nan
    if op_convention == "mlgcn":
        n_pred = np.maximum(n_pred, 1.0)  # ML-GCN: Np[Np == 0] = 1, before pooling
    op = float(tp.sum() / n_pred.sum()) if n_pred.sum() > 0 else 0.0
    orr = float(tp.sum() / n_pos.sum()) if n_pos.sum() > 0 else nan
    return {"CP": cp, "CR": cr, "CF1": _f1(cp, cr), "OP": op, "OR": orr, "OF1": _f1(op, orr)}


def _f1(p: float, r: float) -> float:
    if np.isnan(p) or np.isnan(r):
        return float("nan")
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def evaluate_scores(scores: Any, targets: Any, class_names: Sequence[str] | None = None,
                    op_convention: str = "mlgcn") -> dict[str, float]:
    """Every reported number for one set of predictions.

    ``scores`` are probabilities in [0, 1] (apply a sigmoid to logits first: the 0.5 threshold
    is on probability). Keys: ``mAP``, ``mAP_zero_empty``, ``n_empty_classes``, ``CP`` … ``OF1``
    at 0.5, ``CP_top3`` … ``OF1_top3``, and ``AP/<class>`` per class when ``class_names`` is
    given (NaN for a class without positives). ``op_convention``: see :func:`prf_metrics`.
    """
    S, T, flat = _check(scores, targets)
    if flat:
        raise MetricError("evaluate_scores: expected (images, classes) scores")
    lo, hi = S.min(), S.max()
    if lo < 0.0 or hi > 1.0:
        raise MetricError(f"scores: range [{lo:.4g}, {hi:.4g}] is not within [0, 1]; pass "
                          f"probabilities (e.g. torch.sigmoid(logits))")
    if class_names is not None and len(class_names) != S.shape[1]:
        raise MetricError(f"class_names: {len(class_names)} names for {S.shape[1]} classes")
    res = mean_average_precision(S, T)
    out: dict[str, float] = {
        "mAP": res.value,
        "mAP_zero_empty": mean_average_precision(S, T, empty="zero").value,
        "n_empty_classes": float(res.n_excluded),
    }
    out.update(prf_metrics(S, T, threshold=0.5, op_convention=op_convention))
    top3 = prf_metrics(S, T, threshold=0.5, top_k=3, op_convention=op_convention)
    out.update({f"{k}_top3": v for k, v in top3.items()})
    if class_names is not None:
        out.update({f"AP/{name}": float(ap) for name, ap in zip(class_names, res.per_class)})
    return out


def roc_auc(scores: Any, targets: Any) -> float:
    """Pooled ROC AUC of 1-D ``scores`` against boolean-able ``targets`` (identical to
    sklearn's ``roc_auc_score``: ties count one half). NaN if either class is missing."""
    S, T, _ = _check(np.ravel(_to_numpy(scores, "scores")), np.ravel(_to_numpy(targets, "targets")))
    s, t = S[:, 0], T[:, 0]
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann-Whitney U from mid-ranks: tied scores share the mean of their ranks
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid = ends - (counts - 1) / 2.0
    ranks = mid[inverse]
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def unknown_entry_quality(views: dict[str, Any], observed: Any, full: Any,
                          high: Sequence[float] = (0.5, 0.7, 0.9),
                          low: Sequence[float] = (0.02, 0.05), where: Any = None
                          ) -> dict[str, dict[str, float]]:
    """How well each candidate source of pseudo-labels separates the *unknown* entries.

    ``views`` maps a name (e.g. ``query``, ``region``, ``ensemble``, ``prototype``) to an
    (N, C) score in [0, 1]; ``observed`` is the {1, -1, 0} training mask and ``full`` the hidden
    full labels. Only entries with ``observed == 0`` count: those are the ones a pseudo-labeler
    may touch. Per view: ``auc`` and ``ap`` pooled over all unknown entries, and for each
    threshold ``t`` in ``high`` the precision / recall / count of ``score >= t`` as a positive
    rule (``prec@t``, ``rec@t``, ``n@t``), for each ``t`` in ``low`` the precision of
    ``score <= t`` as a negative rule and the share of hidden positives it would turn negative
    (``neg_prec@t``, ``pos_lost@t``). This is the analysis behind the pseudo-label defaults
    (docs/METHOD_CHOICES.md): a source is only worth pseudo-labelling from if it ranks the
    unknowns better than the classifier being trained already does. ``where`` (bool, same
    shape) narrows the entries further, e.g. to those the classifier is unsure of: a
    pseudo-label there is one the classifier could not have given itself.
    """
    obs = _to_numpy(observed, "observed")
    full = _to_numpy(full, "full")
    if obs.shape != full.shape or obs.ndim != 2:
        raise MetricError(f"observed shape {obs.shape} and full shape {full.shape} must be the "
                          f"same (images, classes)")
    _, F_pos, _ = _check(np.zeros(obs.shape), full)
    unknown = obs == 0
    if where is not None:
        where = _to_numpy(where, "where")
        if where.shape != obs.shape or where.dtype != bool:
            raise MetricError(f"where: expected a bool array of shape {obs.shape}, got "
                              f"{where.dtype} {where.shape}")
        unknown = unknown & where
    if not unknown.any():
        raise MetricError("observed: no unknown entry (observed == 0) to evaluate"
                          + ("" if where is None else " inside `where`"))
    y = F_pos[unknown]
    n_pos = int(y.sum())
    out: dict[str, dict[str, float]] = {}
    for name, score in views.items():
        S = _to_numpy(score, f"views[{name!r}]").astype(np.float64)
        if S.shape != obs.shape:
            raise MetricError(f"views[{name!r}] shape {S.shape} != observed shape {obs.shape}")
        v = S[unknown]
        row = {"n_unknown": float(v.size), "n_hidden_pos": float(n_pos),
               "auc": roc_auc(v, y),
               "ap": float(_average_precision(v[:, None], y[:, None])[0])}
        for t in high:
            sel = v >= t
            row[f"n@{t:g}"] = float(sel.sum())
            row[f"prec@{t:g}"] = float(y[sel].mean()) if sel.any() else float("nan")
            row[f"rec@{t:g}"] = float(y[sel].sum() / n_pos) if n_pos else float("nan")
        for t in low:
            sel = v <= t
            row[f"neg_prec@{t:g}"] = float(1.0 - y[sel].mean()) if sel.any() else float("nan")
            row[f"pos_lost@{t:g}"] = float(y[sel].sum() / n_pos) if n_pos else float("nan")
        out[name] = row
    return out
