"""Why a component adds what it adds: training-time diagnostics of TRM-ML's auxiliary terms.

Two questions a researcher asks when an ablation shows ~0:

- *Do pseudo-labels change anything?* If the classifier already ranks the unknown entries the
  way the pseudo-labels would, learning them adds nothing. :func:`target_change` measures, on
  the entries a pseudo-label targets, how often its verdict (q ≥ 0.5) differs from the
  classifier's own (σ(s) ≥ 0.5) and how far the target moves the probability (|q − σ(s)|).
- *Does distillation pull at all?* :func:`gradient_norms` measures each loss term's gradient
  norm with respect to the query features z (where every term meets), so the KD term's pull can
  be read relative to the classification term's over training (:func:`gradient_ratios`).

TRM-ML logs both every training step (history columns ``train_pseudo_flip``,
``train_pseudo_gap``, ``train_grad_<term>``); the functions here turn a run's history into
tidy frames for :mod:`trm_lib.viz`.

A third question: *how trustworthy are the pseudo-labels, and how many can be had?*
:func:`precision_coverage` traces precision against coverage of the rule ``score ≥ t`` over
thresholds; :func:`threshold_for_precision` reads off the widest rule that keeps a precision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["GRAD_TERMS", "describe_diagnostics", "gradient_norms", "gradient_ratios",
           "describe_precision_coverage", "precision_coverage", "run_histories", "target_change", "target_change_history",
           "threshold_for_precision"]

#: loss terms whose gradient norm TRM-ML logs (``train_grad_<term>``)
GRAD_TERMS = ("cls", "kd", "pseudo", "mcl")


@torch.no_grad()
def target_change(target: torch.Tensor, probs: torch.Tensor, mask: torch.Tensor
                  ) -> tuple[float, float]:
    """(flip rate, mean gap) of pseudo-label targets against the classifier's probabilities on
    ``mask``: the fraction of entries whose target verdict (``target ≥ 0.5``) differs from the
    classifier's (``probs ≥ 0.5``), and the mean ``|target − probs|``. NaN for an empty mask.
    For hard pseudo-labels pass the labels as 0/1 targets."""
    if not (target.shape == probs.shape == mask.shape):
        raise ValueError(f"target_change: shapes {tuple(target.shape)}, {tuple(probs.shape)}, "
                         f"{tuple(mask.shape)} differ")
    m = mask.bool()
    n = int(m.sum())
    if n == 0:
        return math.nan, math.nan
    t, p = target.float()[m], probs.float()[m]
    flips = ((t >= 0.5) != (p >= 0.5)).float().mean()
    return float(flips), float((t - p).abs().mean())


def precision_coverage(scores: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor,
                       mask: np.ndarray | torch.Tensor | None = None,
                       thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """Precision–coverage curve of the positive pseudo-label rule ``score ≥ t``.

    Over the entries of ``mask`` (default: all; pass ``observed == 0`` for the entries a
    pseudo-labeler may touch), for each threshold ``t``: ``n`` entries labelled, ``precision``
    = the share of them that ``truth`` calls positive (NaN when none is labelled), ``coverage``
    = the share of ``truth``'s positives they reach (NaN without positives) and ``share`` = the
    share of the masked entries labelled. Against the hidden labels this is the pseudo-labels'
    real quality; against *observed* labels (unknown counted negative) it is a lower bound on
    precision that needs no hidden label -- what a threshold can be chosen on. ``thresholds``
    default: every distinct score (the exact curve), in decreasing order."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores,
                   dtype=np.float64)
    y = np.asarray(truth.detach().cpu() if isinstance(truth, torch.Tensor) else truth) > 0
    m = np.ones(s.shape, bool) if mask is None else np.asarray(
        mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    if not (s.shape == y.shape == m.shape):
        raise ValueError(f"precision_coverage: shapes {s.shape}, {y.shape}, {m.shape} differ")
    s, y = s[m], y[m]
    t = np.unique(s)[::-1] if thresholds is None else np.sort(np.asarray(thresholds, float))[::-1]
    order = np.argsort(-s, kind="stable")
    s_sorted, hits = s[order], np.cumsum(y[order])
    n = np.searchsorted(-s_sorted, -t, side="right")  # entries with score >= t
    tp = np.where(n > 0, hits[np.maximum(n - 1, 0)], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n > 0, tp / np.maximum(n, 1), np.nan)
        coverage = tp / y.sum() if y.any() else np.full(t.shape, np.nan)
        share = n / s.size if s.size else np.full(t.shape, np.nan)
    return pd.DataFrame({"threshold": t, "n": n, "precision": precision,
                         "coverage": coverage, "share": share})


def threshold_for_precision(curve: pd.DataFrame, target: float = 0.9) -> pd.Series:
    """The row of a :func:`precision_coverage` curve with the lowest threshold (the widest
    rule) whose precision is ``≥ target``. Raises when no threshold reaches it."""
    ok = curve[curve["precision"] >= target]
    if ok.empty:
        raise ValueError(f"threshold_for_precision: no threshold reaches precision {target:g}")
    return ok.loc[ok["threshold"].idxmin()]


def describe_precision_coverage(curves: pd.DataFrame, target: float = 0.9) -> str:
    """One sentence per curve (a ``curve`` column over stacked :func:`precision_coverage`
    frames): the widest threshold whose precision stays ``≥ target``, how many entries it labels
    and what share of the hidden positives it covers -- or that no threshold gets there."""
    lines = []
    for name, g in curves.groupby("curve", sort=False):
        try:
            r = threshold_for_precision(g, target)
        except ValueError:
            best = g.loc[g["precision"].idxmax()] if g["precision"].notna().any() else None
            lines.append(f"{name}: no threshold keeps precision ≥ {100 * target:.0f} %"
                         + ("" if best is None else
                            f" (at most {100 * best['precision']:.1f} %, at t = "
                            f"{best['threshold']:.3g} on {int(best['n'])} entries)") + ".")
            continue
        lines.append(f"{name}: score ≥ {r['threshold']:.3g} labels {int(r['n'])} unknown entries "
                     f"at {100 * r['precision']:.1f} % precision, {100 * r['coverage']:.1f} % "
                     f"of the hidden positives.")
    return "\n".join(lines)


def gradient_norms(terms: Mapping[str, torch.Tensor], wrt: torch.Tensor) -> dict[str, float]:
    """``{name: ‖∂ term / ∂ wrt‖}`` for each (already weighted) scalar loss term, without
    touching ``.grad`` (``autograd.grad`` with the graph retained for the real backward). A term
    that does not depend on ``wrt`` has norm 0."""
    out: dict[str, float] = {}
    for name, term in terms.items():
        if not term.requires_grad:
            out[name] = 0.0
            continue
        (grad,) = torch.autograd.grad(term, wrt, retain_graph=True, allow_unused=True)
        out[name] = 0.0 if grad is None else float(grad.detach().float().norm())
    return out


def gradient_ratios(history: pd.DataFrame, reference: str = "cls") -> pd.DataFrame:
    """Tidy ``(epoch, term, ratio)``: each logged term's mean gradient norm over the epoch
    divided by ``reference``'s (``train_grad_<term>`` columns of a run's history; epochs
    without training, e.g. epoch 0, are left out)."""
    ref = f"train_grad_{reference}"
    if ref not in history.columns:
        raise ValueError(f"gradient_ratios: history has no {ref!r} column (a TRM-ML run "
                         f"logs train_grad_<term>); columns: {list(history.columns)}")
    rows = []
    for _, r in history.dropna(subset=[ref]).iterrows():
        for term in GRAD_TERMS:
            col = f"train_grad_{term}"
            if term == reference or col not in history.columns or not math.isfinite(r[col]):
                continue
            ratio = r[col] / r[ref] if r[ref] > 0 else math.nan
            rows.append({**_run(r), "epoch": int(r["epoch"]), "term": term, "ratio": ratio})
    return pd.DataFrame(rows, columns=[*_run_col(history), "epoch", "term", "ratio"])


def _run(row: pd.Series) -> dict[str, object]:
    return {"run": row["run"]} if "run" in row.index else {}


def _run_col(frame: pd.DataFrame) -> list[str]:
    return ["run"] if "run" in frame.columns else []


def target_change_history(history: pd.DataFrame) -> pd.DataFrame:
    """Tidy ``(epoch, quantity, value)`` of the pseudo-label target change over training:
    ``flip rate`` and ``mean |q − σ(s)|`` (history columns ``train_pseudo_flip`` /
    ``train_pseudo_gap``; epochs before pseudo-labelling starts are left out). Empty when no
    pseudo-label targeted any entry (pseudo-labels off, or never confident enough)."""
    cols = {"train_pseudo_flip": "flip rate", "train_pseudo_gap": "mean |q − σ(s)|"}
    if any(c not in history.columns for c in cols):  # no pseudo-label ever targeted an entry
        return pd.DataFrame(columns=[*_run_col(history), "epoch", "quantity", "value"])
    rows = [{**_run(r), "epoch": int(r["epoch"]), "quantity": name, "value": float(r[col])}
            for _, r in history.iterrows() for col, name in cols.items()
            if math.isfinite(r[col])]
    return pd.DataFrame(rows, columns=[*_run_col(history), "epoch", "quantity", "value"])


def run_histories(results: pd.DataFrame, variant: str = "full", grid: str | None = None
                  ) -> pd.DataFrame:
    """The per-epoch histories of the runs of ``variant`` (and ``grid``) in a results table,
    stacked with a ``run`` column ("seed S, p=P"), read from their run folders' ``history.csv``
    (not through the trainer's run loader: the model imports this module, the trainer the model)."""
    sel = results[(results["variant"] == variant) & (results["split"] == "test")
                  & (results["metric"] == "mAP")]
    if grid is not None:
        sel = sel[sel["grid"] == grid]
    runs = sel.drop_duplicates("run_dir")
    if runs.empty:
        raise ValueError(f"run_histories: no runs of variant {variant!r}"
                         + (f" in grid {grid!r}" if grid else ""))
    frames = [pd.read_csv(Path(r["run_dir"]) / "history.csv").assign(
        run=f"seed {int(r['seed'])}, p={float(r['proportion']):g}") for _, r in runs.iterrows()]
    return pd.concat(frames, ignore_index=True)


def describe_diagnostics(history: pd.DataFrame) -> str:
    """Sentences on the last epoch of each run (mean over runs) of a stacked history: each
    auxiliary term's gradient pull relative to classification, and how often pseudo-labels
    overrule the classifier -- computed, so a notebook states no hand-typed number."""
    last = history.sort_values("epoch").groupby(
        "run" if "run" in history.columns else "epoch").tail(1)
    n = len(last)
    lines = []
    ratios = gradient_ratios(last) if "train_grad_cls" in last.columns else \
        pd.DataFrame(columns=["term", "ratio"])
    for term, g in ratios.groupby("term", sort=False):
        r = float(g["ratio"].mean())
        lines.append(f"{term}: at the last epoch its gradient on the query features is "
                     f"{r:.2f}× the classification term's (mean over {n} run(s)).")
    if {"train_pseudo_flip", "train_pseudo_gap"} <= set(last.columns) \
            and last["train_pseudo_flip"].notna().any():
        flip, gap = last["train_pseudo_flip"].mean(), last["train_pseudo_gap"].mean()
        lines.append(f"pseudo-labels: on the entries they target they overrule the "
                     f"classifier's own verdict for {100 * flip:.1f} % and move its probability "
                     f"by {gap:.3f} on average — where both are small the classifier already "
                     f"ranks the unknown entries as the pseudo-labels would.")
    return "\n".join(lines) or "No diagnostics logged (a run from before they existed?)."
