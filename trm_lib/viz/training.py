"""Training curves and per-epoch diagnostics of a run's history."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .common import _colors, _figure, _require_columns, _styled


@_styled
def plot_training_curves(history_df: pd.DataFrame, title: str | None = None,
                         loss_terms: Sequence[str] | None = None) -> Figure:
    """One panel per family of history columns that exist: losses (the total ``loss`` and the
    trainer's ``train_<term>`` column of every loss term a method declares,
    :attr:`trm_lib.core.methods.Method.loss_terms`; default: those of every registered method),
    mAP (``*mAP*``, drawn in %), pseudo-labels (``pseudo_*``: precision / recall / coverage),
    learning rate (``lr``). Counters such as ``train_n_pseudo_pos`` are not losses.

    Columns evaluated only on some epochs (NaN elsewhere) are drawn through their points.
    """
    if history_df.empty:
        raise ValueError("plot_training_curves: empty history")
    if loss_terms is None:
        from trm_lib.core import loss_terms as registered

        loss_terms = registered()
    cols = [c for c in history_df.columns if history_df[c].notna().any()]
    losses = ["loss", *(f"train_{t}" for t in loss_terms)]
    families = {
        "loss": [c for c in losses if c in cols],
        "mAP (%)": [c for c in cols if "mAP" in c],
        "pseudo-labels": [c for c in cols if c.startswith("pseudo_")],
        "learning rate": [c for c in cols if c == "lr"],
    }
    families = {k: v for k, v in families.items() if v}
    if not families:
        raise ValueError("plot_training_curves: no loss*, *mAP*, pseudo_* or lr columns; have "
                         f"{list(history_df.columns)}")
    x = history_df["epoch"] if "epoch" in history_df.columns else pd.Series(
        np.arange(len(history_df)), index=history_df.index)
    fig, axes = _figure(1, len(families), (3.6 * len(families), 3.2))
    for ax, (family, names) in zip(axes[0], families.items()):
        for name in names:
            ok = history_df[name].notna()
            scale = 100.0 if family == "mAP (%)" else 1.0
            ax.plot(x[ok], scale * history_df.loc[ok, name], marker="o" if ok.sum() < 30 else None,
                    markersize=3, label=name)
        ax.set_title(family)
        ax.set_xlabel("epoch" if "epoch" in history_df.columns else "step")
        if family == "learning rate":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


@_styled
def plot_training_diagnostic(frame: pd.DataFrame, y: str, hue: str, title: str,
                             ylabel: str, reference: float | None = None) -> Figure:
    """Lines of ``y`` over ``epoch``, one per ``hue`` value (and per ``run`` if the frame has
    that column, e.g. one line per seed): the tidy frames of :mod:`trm_lib.core.diagnostics`
    (``gradient_ratios``: hue ``term``; ``target_change_history``: hue ``quantity``).
    ``reference`` draws a dashed horizontal line (e.g. 1 = as strong as the classification
    term)."""
    _require_columns(frame, ["epoch", y, hue], "plot_training_diagnostic")
    if frame.empty:
        raise ValueError(f"plot_training_diagnostic: nothing to draw for {title!r}")
    fig, axes = _figure(1, 1, (6.0, 3.8))
    ax = axes[0, 0]
    keys = list(pd.unique(frame[hue].astype(str)))
    runs = list(pd.unique(frame["run"])) if "run" in frame.columns else [None]
    for key, color in zip(keys, _colors(len(keys))):
        for i, run in enumerate(runs):
            g = frame[(frame[hue].astype(str) == key)
                      & ((frame["run"] == run) if run is not None else True)]
            ax.plot(g["epoch"], g[y], "o-", color=color, ms=3, alpha=0.9 if i == 0 else 0.5,
                    label=key if i == 0 else None)
    if reference is not None:
        ax.axhline(reference, color="0.3", lw=1, ls="--")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


@_styled
def plot_precision_coverage(curves: pd.DataFrame, target: float | None = 0.9,
                            title: str = "pseudo-label precision vs coverage") -> Figure:
    """Precision (y) against coverage (x) of the positive pseudo-label rule ``score ≥ t``, one
    line per ``curve`` (e.g. ``protocol A``, ``protocol B``): stacked frames of
    :func:`trm_lib.core.diagnostics.precision_coverage` with a ``curve`` column. ``target`` draws the
    precision a threshold must keep (dashed) and marks, per curve, the widest rule that keeps it
    (:func:`trm_lib.core.diagnostics.threshold_for_precision`) with its threshold."""
    from trm_lib.core.diagnostics import threshold_for_precision

    _require_columns(curves, ["curve", "threshold", "precision", "coverage"],
                     "plot_precision_coverage")
    if curves.empty:
        raise ValueError("plot_precision_coverage: no curve to draw")
    fig, axes = _figure(1, 1, (5.6, 4.0))
    ax = axes[0, 0]
    names = list(pd.unique(curves["curve"].astype(str)))
    for name, color in zip(names, _colors(len(names))):
        g = curves[curves["curve"].astype(str) == name].sort_values("threshold", ascending=False)
        g = g[g["precision"].notna()]
        ax.plot(100 * g["coverage"], 100 * g["precision"], "-", color=color, lw=1.5, label=name)
        if target is None:
            continue
        try:
            row = threshold_for_precision(g, target)
        except ValueError:
            continue
        ax.plot([100 * row["coverage"]], [100 * row["precision"]], "o", color=color, ms=6)
        ax.annotate(f"t = {row['threshold']:.3g}: {100 * row['coverage']:.1f} % covered",
                    (100 * row["coverage"], 100 * row["precision"]), fontsize=7,
                    xytext=(4, -12), textcoords="offset points", color=color)
    if target is not None:
        ax.axhline(100 * target, color="0.3", lw=1, ls="--")
    ax.set_xlabel("coverage: hidden positives among unknown entries reached (%)")
    ax.set_ylabel("precision of score ≥ t (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 101)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
