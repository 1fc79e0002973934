"""Views of the data and its labels: sample grids, observed-label masks, label statistics,
co-occurrence."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from trm_lib.datasets.labels import check_labels

from .common import (
    HIDDEN_POSITIVE_COLOR,
    LABEL_COLORS,
    _as_rgb,
    _figure,
    _pct,
    _require_columns,
    _seaborn,
    _styled,
)


@_styled
def show_images(images: Sequence[Any], titles: Sequence[str | Sequence[str]] | None = None,
                ncols: int = 4, size: float = 2.6) -> Figure:
    """A grid of samples; a title given as a list of label names is joined and wrapped."""
    if len(images) == 0:
        raise ValueError("show_images: no images given")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"show_images: {len(titles)} titles for {len(images)} images")
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = _figure(nrows, ncols, (size * ncols, size * nrows + 0.4 * nrows))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(_as_rgb(images[i], where=f"images[{i}]"))
        if titles is not None:
            title = titles[i] if isinstance(titles[i], str) else ", ".join(titles[i])
            ax.set_title(textwrap.fill(title or "(no labels)", 28), fontsize=8)
    return fig


def sample_titles(Y_full: np.ndarray, class_names: Sequence[str],
                  Y_obs: np.ndarray | None = None) -> list[str]:
    """One title per image: its true positive classes; with the observed matrix ``Y_obs``, each
    hidden positive is marked ``name?`` and the count of observed entries is appended, so a grid
    of samples shows what a missing label looks like to the learner."""
    Y = check_labels(Y_full, allowed=(1, -1), where="Y_full")
    if Y.shape[1] != len(class_names):
        raise ValueError(f"Y_full: {Y.shape[1]} columns but {len(class_names)} class names")
    obs = None if Y_obs is None else _check_mask(Y_obs, class_names, "Y_obs")
    if obs is not None and obs.shape != Y.shape:
        raise ValueError(f"Y_obs: shape {obs.shape} != Y_full shape {Y.shape}")
    titles = []
    for i, row in enumerate(Y):
        names = [class_names[c] + ("?" if obs is not None and obs[i, c] == 0 else "")
                 for c in np.flatnonzero(row == 1)]
        title = ", ".join(names) or "(no positive)"
        if obs is not None:
            title += f" [{int((obs[i] != 0).sum())}/{len(class_names)} known]"
        titles.append(title)
    return titles


@_styled
def plot_label_stats(stats_df: pd.DataFrame, title: str | None = None) -> Figure:
    """Per-class stacked bars of known positives, known negatives and unknown entries.

    Input: the DataFrame of :func:`trm_lib.datasets.labels.label_stats` (class names as the index or a
    ``class`` column; its ``total`` row is dropped). With ``hidden_positives`` (given full
    labels), the unknown bar is split into the hidden positives (what pseudo-labelling could
    recover) and the rest.
    """
    df = stats_df.reset_index() if "class" not in stats_df.columns else stats_df
    cols = ["positives", "negatives", "unknown"]
    _require_columns(df, ["class", *cols], "label stats")
    df = df[df["class"].astype(str) != "total"]
    parts = {"positives": (df["positives"], LABEL_COLORS["positive"]),
             "negatives": (df["negatives"], LABEL_COLORS["negative"])}
    if "hidden_positives" in df.columns:
        parts["unknown: hidden positives"] = (df["hidden_positives"], HIDDEN_POSITIVE_COLOR)
        parts["unknown: hidden negatives"] = (df["unknown"] - df["hidden_positives"],
                                              LABEL_COLORS["unknown"])
    else:
        parts["unknown"] = (df["unknown"], LABEL_COLORS["unknown"])
    names = df["class"].astype(str).tolist()
    tidy = pd.concat([pd.DataFrame({"class": names, "entry": label,
                                    "images": vals.to_numpy(dtype=float)})
                      for label, (vals, _) in parts.items()], ignore_index=True)
    fig, axes = _figure(1, 1, (7.0, 1.4 + 0.22 * len(names)))
    ax = axes[0, 0]
    # seaborn's way to stack bars: a histogram of the categories weighted by the counts (it
    # stacks the last hue level first, hence the reversed order: positives start at zero)
    _seaborn().histplot(data=tidy, y="class", hue="entry", weights="images", multiple="stack",
                        discrete=True, shrink=0.8, hue_order=list(reversed(parts)),
                        palette={k: c for k, (_, c) in parts.items()}, alpha=1.0,
                        linewidth=0, legend=False, ax=ax)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first class on top
    ax.set_ylabel("")
    ax.set_xlabel("label entries (images)")
    handles = [Patch(color=c, label=k) for k, (_, c) in parts.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    ax.set_title(title or "Observed labels per class")
    return fig


_MASK_CMAP = ListedColormap([LABEL_COLORS["negative"], LABEL_COLORS["unknown"],
                             LABEL_COLORS["positive"]])
_MASK_NORM = BoundaryNorm([-1.5, -0.5, 0.5, 1.5], _MASK_CMAP.N)


def _draw_mask(ax: Any, Y: np.ndarray, class_names: Sequence[str], max_rows: int) -> float:
    shown = Y[:max_rows]
    ax.imshow(shown, cmap=_MASK_CMAP, norm=_MASK_NORM, aspect="auto", interpolation="nearest")
    step = max(1, math.ceil(len(class_names) / 40))  # keep tick labels legible for 80+ classes
    ticks = np.arange(0, len(class_names), step)
    ax.set_xticks(ticks, [class_names[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_ylabel(f"image (first {len(shown)} of {len(Y)})")
    ax.grid(False)
    return float(np.mean(Y != 0))


def _mask_legend(fig: Figure) -> None:
    handles = [Patch(color=c, label=k) for k, c in LABEL_COLORS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)


def _check_mask(Y_obs: np.ndarray, class_names: Sequence[str], where: str) -> np.ndarray:
    Y = check_labels(Y_obs, where=where)
    if Y.shape[1] != len(class_names):
        raise ValueError(f"{where}: {Y.shape[1]} columns but {len(class_names)} class names")
    return Y


@_styled
def plot_mask(Y_obs: np.ndarray, class_names: Sequence[str], max_rows: int = 60,
              title: str | None = None) -> Figure:
    """Heat-map of an observed {1, -1, 0} label matrix: what "unknown" looks like.

    Shows the first ``max_rows`` images; the known fraction in the title is over all rows.
    """
    Y = _check_mask(Y_obs, class_names, "Y_obs")
    fig, axes = _figure(1, 1, (max(5.0, 0.16 * len(class_names) + 2), 5.0))
    known = _draw_mask(axes[0, 0], Y, class_names, max_rows)
    axes[0, 0].set_title(title or f"{known:.1%} of label entries known")
    _mask_legend(fig)
    return fig


@_styled
def plot_mask_comparison(masks: Mapping[Any, np.ndarray], class_names: Sequence[str],
                         max_rows: int = 60) -> Figure:
    """Masks side by side, e.g. ``{0.1: Y_obs_10, 0.5: Y_obs_50}``; float keys read as proportions."""
    if not masks:
        raise ValueError("plot_mask_comparison: no masks given")
    width = max(3.0, 0.12 * len(class_names) + 1.2)
    fig, axes = _figure(1, len(masks), (width * len(masks), 5.0), sharey=True)
    for ax, (key, Y_obs) in zip(axes[0], masks.items()):
        name = f"p = {_pct(key)}" if isinstance(key, float) else str(key)
        known = _draw_mask(ax, _check_mask(Y_obs, class_names, f"masks[{key!r}]"), class_names,
                           max_rows)
        ax.set_title(f"{name}: {known:.1%} known", fontsize=10)
        if ax is not axes[0, 0]:
            ax.set_ylabel("")
    _mask_legend(fig)
    return fig


@_styled
def plot_cooccurrence(matrix: np.ndarray, class_names: Sequence[str], title: str | None = None,
                      annot: bool | None = None, fmt: str = ".2f") -> Figure:
    """Heat-map of a C x C co-occurrence matrix, e.g. :func:`trm_lib.datasets.labels.cooccurrence`
    (P(column class | row class); NaN rows, for classes without positives, stay blank).

    ``annot`` defaults to writing the values only when there are at most 12 classes.
    """
    M = np.asarray(matrix, dtype=float)
    C = len(class_names)
    if M.shape != (C, C):
        raise ValueError(f"plot_cooccurrence: matrix shape {M.shape}, expected ({C}, {C}) "
                         f"for {C} class names")
    annot = C <= 12 if annot is None else annot
    side = max(4.0, 0.28 * C + 2.0)
    fig, axes = _figure(1, 1, (side + 1.0, side))
    ax = axes[0, 0]
    frame = pd.DataFrame(M, index=list(class_names), columns=list(class_names))
    _seaborn().heatmap(frame, mask=~np.isfinite(M), cmap="magma_r", annot=annot, fmt=fmt,
                       annot_kws={"fontsize": 6}, square=True, xticklabels=True,
                       yticklabels=True, cbar_kws={"shrink": 0.7}, ax=ax)  # NaN rows blank
    ax.tick_params(labelsize=7)
    ax.tick_params(axis="x", labelrotation=90)
    ax.tick_params(axis="y", labelrotation=0)
    ax.grid(False)
    ax.set_title(title or "Label co-occurrence")
    return fig
