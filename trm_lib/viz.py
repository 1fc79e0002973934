"""Every figure and table of the report comes from one function here.

Notebooks call these once and save the result with :func:`save_figure` / :func:`save_table`;
ipywidgets explorers wrap the same functions, so what a static report shows is what an
interactive session shows.

Conventions:

- Functions build a :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: nothing
  is registered globally (no leaks in long loops or tests, no ``plt.show``), and any backend
  works, Agg included. In a notebook, run ``%matplotlib inline`` once; then a returned figure
  displays when it is the last expression of a cell.
- Saved files are byte-stable across runs: fixed SVG hash salt, no software/version stamps, and a
  date only when ``SOURCE_DATE_EPOCH`` fixes it (the reproducible-builds convention).
- Label colours are shared by every label figure: positive, negative, unknown.
- Results use the tidy schema ``method, variant, protocol, proportion, seed, split, metric, value``
  (one row per number); spreads are the sample standard deviation over seeds (ddof=1, shown as
  0 for a single seed).
"""

from __future__ import annotations

import functools
import math
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from .io import atomic_path, atomic_write
from .labels import check_labels

SVG_HASHSALT = "trm-ml"  # makes SVG element ids a function of the content, not of a random uuid
FORMATS = ("png", "svg", "pdf")
LABEL_COLORS = {"positive": "#e76f51", "negative": "#264653", "unknown": "#e5e5e5"}
HIDDEN_POSITIVE_COLOR = "#f4b9a7"  # a pale positive: unknown to training, positive in truth
# seaborn's "whitegrid" look as plain rcParams: seaborn itself (and the scipy it imports) would
# double the import time of this module, for three calls.
STYLE = {"axes.facecolor": "white", "axes.edgecolor": ".8", "axes.grid": True,
         "axes.axisbelow": True, "axes.labelcolor": ".15", "grid.color": ".8",
         "text.color": ".15", "xtick.color": ".15", "ytick.color": ".15",
         "xtick.major.size": 0, "ytick.major.size": 0}


# ----------------------------------------------------------------------------------------- saving
def _metadata(fmt: str) -> dict[str, Any]:
    """Metadata that keeps a file a pure function of the figure: no version stamps; a date only
    when ``SOURCE_DATE_EPOCH`` pins it (matplotlib reads the variable itself)."""
    pinned = bool(os.environ.get("SOURCE_DATE_EPOCH"))
    if fmt == "png":
        return {"Software": None}
    if fmt == "svg":
        return {"Creator": None} if pinned else {"Creator": None, "Date": None}
    return ({"Creator": None, "Producer": None} if pinned
            else {"Creator": None, "Producer": None, "CreationDate": None})


def save_figure(fig: Figure, path: str | os.PathLike, formats: Sequence[str] = ("png", "svg"),
                dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``<path>.<fmt>`` for each format, atomically and byte-stably.

    ``path`` may carry one of the format suffixes (``curves.png``); it is replaced, so
    ``save_figure(fig, "figures/curves.png")`` also writes ``curves.svg``. Returns the paths written.
    """
    path = Path(path)
    base = path.with_suffix("") if path.suffix.lstrip(".").lower() in FORMATS else path
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"save_figure({path}): formats {list(formats)} must be a non-empty subset "
                         f"of {list(FORMATS)}")
    written = []
    with mpl.rc_context({"svg.hashsalt": SVG_HASHSALT}):
        for fmt in formats:
            out = base.with_name(f"{base.name}.{fmt}")
            with atomic_path(out) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_metadata(fmt),
                            bbox_inches="tight")
            written.append(out)
    return written


def _cell(value: Any) -> str:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, index: bool = True) -> str:
    """Render ``df`` as a GitHub Markdown table (numeric columns right-aligned)."""
    frame = df.reset_index() if index else df
    cols = [str(c) for c in frame.columns]
    align = ["---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns]
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, path: str | os.PathLike, index: bool = True) -> list[Path]:
    """Write ``df`` as ``<path>.csv`` (for machines) and ``<path>.md`` (for the report)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".csv", ".md") else path
    csv_path, md_path = base.with_name(base.name + ".csv"), base.with_name(base.name + ".md")
    with atomic_write(csv_path, newline="") as fh:
        df.to_csv(fh, index=index)
    with atomic_write(md_path) as fh:
        fh.write(markdown_table(df, index=index))
    return [csv_path, md_path]


# ---------------------------------------------------------------------------------------- helpers
def _figure(nrows: int, ncols: int, figsize: tuple[float, float], **kw: Any
            ) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _styled(func: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw the whole figure under :data:`STYLE` without touching the caller's rcParams."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with mpl.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def _colors(n: int) -> list[Any]:
    return list(mpl.colormaps["tab10"].colors[:n]) if n <= 10 else \
        list(mpl.colormaps["turbo"](np.linspace(0.05, 0.95, n)))


def _require_columns(df: pd.DataFrame, cols: Sequence[str], where: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; have {list(df.columns)}")


def _as_rgb(image: Any, where: str = "image") -> np.ndarray:
    """Any image-like (PIL image, path, HxW / HxWx3 / HxWx4 array) as a float HxWx3 in [0, 1]."""
    if isinstance(image, str | os.PathLike):
        from .datasets.base import open_image  # names the file when it is missing or corrupt

        image = open_image(image)
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{where}: expected an HxW, HxWx3 or HxWx4 image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{where}: float images must hold finite values in [0, 1]")
    return arr


def _palette(names: Sequence[str]) -> dict[str, Any]:
    """Colours keyed by sorted name, so a method keeps its colour across figures of one study."""
    names = sorted(set(names))
    return dict(zip(names, _colors(len(names))))


def _pct(p: float) -> str:
    return f"{p * 100:g}%"


def _filter_results(results_df: pd.DataFrame, metric: str, split: str, protocol: str | None,
                    scale: float = 1.0) -> pd.DataFrame:
    _require_columns(results_df, ["method", "proportion", "metric", "split", "value"], "results")
    df = results_df[(results_df["metric"] == metric) & (results_df["split"] == split)]
    if protocol is not None and "protocol" in df.columns:
        df = df[df["protocol"] == protocol]
    if df.empty:
        have = results_df[["metric", "split"]].drop_duplicates().to_records(index=False).tolist()
        raise ValueError(f"results: no rows with metric={metric!r}, split={split!r}, "
                         f"protocol={protocol!r}; (metric, split) present: {have}")
    if df["value"].isna().any():
        raise ValueError(f"results: NaN in column 'value' for metric={metric!r}, split={split!r}")
    return df.assign(value=df["value"].astype(float) * scale)


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Add a ``label`` column: the method, plus its variant when a method has several."""
    df = df.copy()
    if "variant" not in df.columns:
        df["label"] = df["method"].astype(str)
        return df
    n_variants = df.groupby("method")["variant"].transform("nunique")
    df["label"] = np.where(n_variants > 1, df["method"].astype(str) + " (" +
                           df["variant"].astype(str) + ")", df["method"].astype(str))
    return df


def _axis_label(metric: str, split: str, scale: float) -> str:
    return f"{metric} (%, {split})" if scale == 100 else f"{metric} ({split})"


def _aggregate(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, sample std (0 for one seed) and count of ``value`` over seeds."""
    out = df.groupby(by, sort=True)["value"].agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


# ------------------------------------------------------------------------------------ data views
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

    Input: the DataFrame of :func:`trm_lib.labels.label_stats` (class names as the index or a
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
    fig, axes = _figure(1, 1, (7.0, 1.4 + 0.22 * len(names)))
    ax = axes[0, 0]
    y = np.arange(len(names))
    left = np.zeros(len(names))
    for label, (vals, color) in parts.items():
        vals = vals.to_numpy(dtype=float)
        ax.barh(y, vals, left=left, color=color, label=label, height=0.8)
        left += vals
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("label entries (images)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8,
               frameon=False)
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
    """Heat-map of a C x C co-occurrence matrix, e.g. :func:`trm_lib.labels.cooccurrence`
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
    im = ax.imshow(M, cmap="magma_r", interpolation="nearest")  # NaN rows stay blank
    fig.colorbar(im, ax=ax, shrink=0.7)
    ax.set_xticks(range(C), list(class_names), rotation=90, fontsize=7)
    ax.set_yticks(range(C), list(class_names), fontsize=7)
    ax.grid(False)
    if annot:
        mid = np.nanmean(M) if np.isfinite(M).any() else 0.0
        for i, j in zip(*np.nonzero(np.isfinite(M))):
            ax.text(j, i, format(M[i, j], fmt), ha="center", va="center", fontsize=6,
                    color="white" if M[i, j] > mid else "black")
    ax.set_title(title or "Label co-occurrence")
    return fig


# --------------------------------------------------------------------------------------- training
# loss terms a method logs (the trainer records them as train_<term>); counters such as
# train_n_pseudo_pos or train_logit_scale are not losses and stay out of the loss panel
LOSS_TERMS = ("cls", "kd", "mcl", "mcl_proto", "mcl_feat")

@_styled
def plot_training_curves(history_df: pd.DataFrame, title: str | None = None) -> Figure:
    """One panel per family of history columns that exist: losses (``loss``, ``loss_*`` and the
    trainer's per-term ``train_<term>`` columns), mAP (``*mAP*``, drawn in %), pseudo-labels
    (``pseudo_*``: precision / recall / coverage), learning rate (``lr``).

    Columns evaluated only on some epochs (NaN elsewhere) are drawn through their points.
    """
    if history_df.empty:
        raise ValueError("plot_training_curves: empty history")
    cols = [c for c in history_df.columns if history_df[c].notna().any()]
    families = {
        "loss": [c for c in cols if c == "loss" or c.startswith("loss_")
                 or c in {f"train_{t}" for t in LOSS_TERMS}],
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


# ---------------------------------------------------------------------------------------- results
@_styled
def plot_proportion_curves(results_df: pd.DataFrame, metric: str = "mAP", split: str = "test",
                           protocol: str | None = "proportion", scale: float = 100.0) -> Figure:
    """The paper's main figure: ``metric`` vs label proportion per method, mean ± std over seeds.

    A method with several variants gets one curve per variant. ``protocol=None`` skips the
    protocol filter; ``scale=100`` shows the package's fractions as percentages.
    """
    df = _with_labels(_filter_results(results_df, metric, split, protocol, scale))
    agg = _aggregate(df, ["label", "proportion"])
    colors = _palette(agg["label"])
    fig, axes = _figure(1, 1, (6.0, 4.2))
    ax = axes[0, 0]
    for label, g in agg.groupby("label", sort=True):
        ax.plot(g["proportion"], g["mean"], marker="o", color=colors[label], label=label)
        ax.fill_between(g["proportion"], g["mean"] - g["std"], g["mean"] + g["std"],
                        color=colors[label], alpha=0.2, linewidth=0)
    props = sorted(agg["proportion"].unique())
    ax.set_xticks(props, [_pct(p) for p in props])
    ax.set_xlabel("proportion of known labels")
    ax.set_ylabel(_axis_label(metric, split, scale))
    seeds = int(agg["count"].max())
    ax.set_title(f"{metric} vs label proportion (mean ± std over up to {seeds} seed(s))")
    ax.legend(fontsize=8)
    return fig


def results_table(results_df: pd.DataFrame, metric: str = "mAP", split: str = "test",
                  protocol: str | None = "proportion", digits: int = 1, scale: float = 100.0
                  ) -> pd.DataFrame:
    """Method x proportion table of ``"mean ± std"`` strings (in % with the default ``scale``)
    plus an ``avg`` column, as in the paper. ``avg`` is the mean of the per-proportion means,
    left blank unless the row has every proportion (an average over fewer proportions would not
    be comparable). A single seed shows the mean alone."""
    df = _with_labels(_filter_results(results_df, metric, split, protocol, scale))
    agg = _aggregate(df, ["label", "proportion"])
    props = sorted(agg["proportion"].unique())

    def fmt(row: pd.Series) -> str:
        if row["count"] > 1:
            return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"
        return f"{row['mean']:.{digits}f}"

    agg["cell"] = agg.apply(fmt, axis=1)
    table = agg.pivot(index="label", columns="proportion", values="cell").reindex(columns=props)
    means = agg.pivot(index="label", columns="proportion", values="mean").reindex(columns=props)
    table.columns = [_pct(p) for p in props]
    complete = means.notna().all(axis=1)
    table["avg"] = [f"{m:.{digits}f}" if ok else "" for m, ok in
                    zip(means.mean(axis=1), complete)]
    table.index.name = "method"
    return table.fillna("")


@_styled
def plot_ablation(results_df: pd.DataFrame, baseline_variant: str = "full", metric: str = "mAP",
                  split: str = "test", method: str | None = None,
                  protocol: str | None = "proportion", scale: float = 100.0) -> Figure:
    """Bars of ``metric`` per variant with seed error bars (±1 std), grouped by proportion; each
    bar is annotated with its difference to ``baseline_variant`` (drawn first, hatched)."""
    df = _filter_results(results_df, metric, split, protocol, scale)
    _require_columns(df, ["variant"], "results")
    if method is not None:
        df = df[df["method"] == method]
        if df.empty:
            raise ValueError(f"plot_ablation: no rows for method={method!r}")
    elif df["method"].nunique() > 1:
        raise ValueError(f"plot_ablation: results hold methods {sorted(df['method'].unique())}; "
                         "pass method=... to pick the one whose variants are compared")
    variants = list(pd.unique(df["variant"].astype(str)))
    if baseline_variant not in variants:
        raise ValueError(f"plot_ablation: baseline_variant={baseline_variant!r} not in the "
                         f"results' variants {variants}")
    variants.remove(baseline_variant)
    variants.insert(0, baseline_variant)
    agg = _aggregate(df.assign(variant=df["variant"].astype(str)), ["variant", "proportion"])
    props = sorted(agg["proportion"].unique())
    width = 0.8 / len(variants)
    colors = dict(zip(variants, _colors(len(variants))))
    fig, axes = _figure(1, 1, (max(5.0, 1.2 * len(props) * len(variants) * 0.5 + 2), 4.2))
    ax = axes[0, 0]
    base = agg[agg["variant"] == baseline_variant].set_index("proportion")["mean"]
    for i, variant in enumerate(variants):
        g = agg[agg["variant"] == variant].set_index("proportion").reindex(props)
        xs = np.arange(len(props)) + (i - (len(variants) - 1) / 2) * width
        bars = ax.bar(xs, g["mean"], width, yerr=g["std"], capsize=2, color=colors[variant],
                      label=variant, hatch="//" if variant == baseline_variant else None,
                      edgecolor="white")
        if variant != baseline_variant:
            for bar, p, m, s in zip(bars, props, g["mean"], g["std"]):
                if p in base.index and not np.isnan(m):
                    ax.annotate(f"{m - base[p]:+.1f}", (bar.get_x() + bar.get_width() / 2, m + s),
                                ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                                textcoords="offset points")
    ax.set_xticks(np.arange(len(props)), [_pct(p) for p in props])
    ax.set_xlabel("proportion of known labels")
    ax.set_ylabel(_axis_label(metric, split, scale))
    ax.set_title(f"Ablation vs '{baseline_variant}' (bars: mean, whiskers: ±1 std over seeds)")
    ax.legend(fontsize=8, ncols=min(4, len(variants)))
    return fig


#: what each ablation switch of the fidelity grid removes (the forest plot's row labels)
COMPONENT_LABELS = {"no_kd": "distillation (full − no_kd)", "no_mcl": "contrastive (full − no_mcl)",
                    "no_pseudo": "pseudo-labels (full − no_pseudo)",
                    "text_image": "region matching (full − text_image)"}


def plot_forest(diffs: pd.DataFrame, ax: Any = None, scale: float = 100.0,
                labels: Mapping[str, str] | None = None, unit: str = "mAP points") -> Figure:
    """Forest plot of component gains: per variant (row) and proportion (colour) the mean
    paired gain ``reference − variant`` over seeds with its 95 % t-interval, and a zero line.

    ``diffs`` is the tidy frame of :func:`trm_lib.stats.paired_differences`; draws into ``ax``
    (a new figure if None) and returns its figure. A point whose bar misses the zero line is a
    gain beyond seed noise; rows with one seed have no bar (hollow marker)."""
    from .stats import component_gains

    _require_columns(diffs, ["variant", "proportion", "n", "mean_diff", "ci_low", "ci_high"],
                     "plot_forest")
    if diffs.empty:
        raise ValueError("plot_forest: no paired differences to draw")
    gains = component_gains(diffs)
    names = {**COMPONENT_LABELS, **(labels or {})}
    variants = list(pd.unique(gains["variant"].astype(str)))
    props = sorted(gains["proportion"].astype(float).unique(), key=lambda p: (np.isnan(p), p))
    with mpl.rc_context(STYLE):
        if ax is None:
            fig, axes = _figure(1, 1, (6.4, 0.55 * len(variants) * max(1, len(props)) + 1.6))
            ax = axes[0, 0]
        colors = dict(zip(props, _colors(len(props))))
        step = 0.7 / max(1, len(props))
        for j, p in enumerate(props):
            g = gains[gains["proportion"].astype(float).fillna(-1) == (-1 if np.isnan(p) else p)]
            for _, r in g.iterrows():
                y = variants.index(str(r["variant"])) + (j - (len(props) - 1) / 2) * step
                x = scale * r["gain"]
                has_ci = np.isfinite(r["gain_low"]) and np.isfinite(r["gain_high"])
                if has_ci:
                    ax.errorbar(x, y, xerr=[[x - scale * r["gain_low"]],
                                            [scale * r["gain_high"] - x]],
                                fmt="o", color=colors[p], capsize=3)
                else:
                    ax.plot(x, y, "o", mfc="none", color=colors[p])
                ax.annotate(f"n={int(r['n'])}", (x, y), xytext=(4, 4), fontsize=7,
                            textcoords="offset points", color=colors[p])
        for p in props:
            ax.plot([], [], "o", color=colors[p],
                    label="protocol B" if np.isnan(p) else f"p = {_pct(p)}")
        ax.axvline(0.0, color="0.3", lw=1, ls="--")
        ax.set_yticks(range(len(variants)), [names.get(v, v) for v in variants])
        ax.invert_yaxis()
        ax.set_xlabel(f"gain of the component ({unit}), mean over paired seeds, 95 % CI")
        ax.set_title("Component gains beyond seed noise: bars that miss the dashed zero line")
        ax.legend(fontsize=8)
    return ax.figure


@_styled
def plot_gains_vs_p(diffs: pd.DataFrame, scale: float = 100.0,
                    labels: Mapping[str, str] | None = None) -> Figure:
    """Component gain (``reference − variant``, paired over seeds) against the label
    proportion, one line per component with its 95 % interval as a band; dashed zero line.
    ``diffs``: :func:`trm_lib.stats.paired_differences` over several proportions."""
    from .stats import component_gains

    _require_columns(diffs, ["variant", "proportion", "mean_diff", "ci_low", "ci_high"],
                     "plot_gains_vs_p")
    gains = component_gains(diffs[diffs["proportion"].notna()]).sort_values("proportion")
    if gains.empty:
        raise ValueError("plot_gains_vs_p: no protocol-A paired differences to draw")
    names = {**COMPONENT_LABELS, **(labels or {})}
    variants = list(pd.unique(gains["variant"].astype(str)))
    fig, axes = _figure(1, 1, (6.4, 4.0))
    ax = axes[0, 0]
    for variant, color in zip(variants, _colors(len(variants))):
        g = gains[gains["variant"] == variant]
        ps = g["proportion"].astype(float)
        ax.plot(ps, scale * g["gain"], "o-", color=color, label=names.get(variant, variant))
        ok = np.isfinite(g["gain_low"]) & np.isfinite(g["gain_high"])
        ax.fill_between(ps[ok], scale * g["gain_low"][ok], scale * g["gain_high"][ok],
                        color=color, alpha=0.15)
    ax.axhline(0.0, color="0.3", lw=1, ls="--")
    ax.set_xticks(sorted(gains["proportion"].unique()),
                  [_pct(p) for p in sorted(gains["proportion"].unique())])
    ax.set_xlabel("proportion of known labels")
    ax.set_ylabel("gain of the component (mAP points)")
    ax.set_title("Component gains vs label proportion (band: paired 95 % CI)")
    ax.legend(fontsize=8)
    return fig


@_styled
def plot_training_diagnostic(frame: pd.DataFrame, y: str, hue: str, title: str,
                             ylabel: str, reference: float | None = None) -> Figure:
    """Lines of ``y`` over ``epoch``, one per ``hue`` value (and per ``run`` if the frame has
    that column, e.g. one line per seed): the tidy frames of :mod:`trm_lib.diagnostics`
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


# -------------------------------------------------------------------------------------- attention
def upsample_map(map_hw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of an h x w map to ``size = (H, W)`` with pixel-centre alignment (what
    ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`` computes)."""
    m = np.asarray(map_hw, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"upsample_map: expected an h x w map, got shape {m.shape}")
    H, W = size
    return np.asarray(Image.fromarray(m).resize((W, H), Image.Resampling.BILINEAR))


def overlay_map(image: Any, map_hw: np.ndarray, cmap: str = "jet", alpha: float = 0.5,
                normalize: bool = True) -> np.ndarray:
    """Blend a colour-mapped saliency map over ``image``; returns an H x W x 3 float array.

    ``normalize`` rescales the map to [0, 1] first (attention rows are softmax-normalised and
    tiny, so each map is shown relative to its own range, as in the paper's Figure 4).
    """
    img = _as_rgb(image)
    m = upsample_map(map_hw, img.shape[:2])
    if normalize:
        lo, hi = float(m.min()), float(m.max())
        m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    heat = mpl.colormaps[cmap](np.clip(m, 0.0, 1.0))[..., :3]
    return (1 - alpha) * img + alpha * heat


@_styled
def plot_attention_rows(image: Any, rows: Mapping[str, np.ndarray], class_names: Sequence[str],
                        scores: np.ndarray, grid: tuple[int, int], top_k: int = 3,
                        cmap: str = "jet", alpha: float = 0.5) -> Figure:
    """Figure 4: one image, its ``top_k`` classes by ``scores``, one row of maps per entry of
    ``rows`` (e.g. ``{"DualCoOp (pixel)": S, "TRM-ML (region)": A}``, each (C, h*w)).

    Column 0 is the image itself; each map is reshaped to ``grid = (h, w)``, upsampled bilinearly
    to the image size and overlaid.
    """
    scores = np.asarray(scores, dtype=float).reshape(-1)
    C, (h, w) = len(class_names), grid
    if scores.shape[0] != C:
        raise ValueError(f"plot_attention_rows: {scores.shape[0]} scores for {C} class names")
    if not rows:
        raise ValueError("plot_attention_rows: no rows of maps given")
    maps = {}
    for name, arr in rows.items():
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape != (C, h * w):
            raise ValueError(f"plot_attention_rows: rows[{name!r}] has shape {arr.shape}, "
                             f"expected (classes, h*w) = ({C}, {h * w}) for grid {grid}")
        maps[name] = arr.reshape(C, h, w)
    img = _as_rgb(image)
    top = np.argsort(-scores, kind="stable")[:top_k]
    fig, axes = _figure(len(maps), len(top) + 1, (2.4 * (len(top) + 1), 2.5 * len(maps)))
    for r, (name, arr) in enumerate(maps.items()):
        axes[r, 0].imshow(img)
        axes[r, 0].set_ylabel(name, fontsize=9)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=9)
        for j, c in enumerate(top, start=1):
            axes[r, j].imshow(overlay_map(img, arr[c], cmap=cmap, alpha=alpha))
            if r == 0:
                axes[r, j].set_title(f"{class_names[c]} ({scores[c]:.2f})", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return fig


def saliency_maps(run: Any, indices: Sequence[int] | None = None, split: str = "test",
                  images: Sequence[Any] | None = None, batch_size: int = 32
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(N, C)`` and saliency maps ``(N, C, L)`` of a trained run's method, in fp32.

    ``run`` is a :class:`trm_lib.train.LoadedRun`. Either ``indices`` (rows of ``split``, fed
    through the run's own feature source, i.e. exactly what the evaluator sees) or ``images``
    (any image files, PIL images or arrays, of any size: resized by the backbone's evaluation
    transform, then the frozen backbone). The method must return ``out["maps"]`` (TRM-ML: its
    region attention; DualCoOp: its text-pixel weights); maps are on ``run.session.backbone.grid``.
    """
    import torch

    if (indices is None) == (images is None):
        raise ValueError("saliency_maps: pass exactly one of indices= or images=")
    method, session = run.method, run.session
    device = session.device
    if images is None:
        batches: Any = run.batches(split, indices=list(indices), batch_size=batch_size)
    else:
        backbone, cfg = session.backbone, run.config
        raw = cfg.backbone.cache_raw or cfg.method.kv_source == "raw"
        transform = backbone.transform(train=False)

        def encoded() -> Any:
            for start in range(0, len(images), batch_size):
                chunk = images[start:start + batch_size]
                x = torch.stack([transform(Image.fromarray(
                    (_as_rgb(im, where=f"images[{start + j}]") * 255).round().astype(np.uint8)))
                    for j, im in enumerate(chunk)])
                yield backbone.encode_images(x, raw=raw)

        batches = encoded()
    was_training = method.training
    method.eval()
    scores, maps = [], []
    try:
        with torch.no_grad():
            for batch in batches:
                out = method({k: v.to(device) for k, v in batch.items()})
                if "maps" not in out:
                    raise ValueError(f"saliency_maps: method {method.cfg.name!r} returns no "
                                     "'maps' (only methods with spatial saliency can be shown)")
                scores.append(method.scores(out).float().cpu())
                maps.append(out["maps"].float().cpu())
    finally:
        method.train(was_training)
    if not scores:
        raise ValueError("saliency_maps: no images given")
    return torch.cat(scores).numpy(), torch.cat(maps).numpy()


def pointing_game(maps: np.ndarray | None, grid: tuple[int, int], labels: np.ndarray,
                  objects: Sequence[Sequence[Mapping[str, Any]]], class_names: Sequence[str],
                  image_size: int | tuple[int, int]) -> pd.DataFrame:
    """Pointing game (Zhang et al., ECCV 2016) for class saliency maps with ground-truth boxes.

    For every (image, true positive class) pair, the map of that class points at the centre of
    its hottest cell, in image pixels (where the bilinearly upsampled overlay of
    :func:`plot_attention_rows` peaks; ties go to the first cell in row-major order), and the
    pair is a *hit* if that point lies inside a box of that class (boxes ``[x0, y0, x1, y1]``,
    exclusive ends, as in the SynthScenes sidecar
    :func:`trm_lib.datasets.synthetic.load_objects`). ``maps=None`` scores the *centre
    baseline* (always point at the image centre), the number a saliency map has to beat before
    it says anything.

    ``maps`` (N, C, h*w); ``labels`` (N, C) full labels; ``objects[i]`` the instances of image
    i (``{"class", "box"}``); ``image_size`` S or (H, W). Returns per class ``hits``, ``pairs``
    and ``hit_rate`` plus a ``total`` row (hits over all pairs); classes without a positive have
    NaN rate.
    """
    Y = check_labels(labels, allowed=(1, -1), where="labels")
    N, C = Y.shape
    if C != len(class_names):
        raise ValueError(f"pointing_game: labels have {C} columns for {len(class_names)} classes")
    if len(objects) != N:
        raise ValueError(f"pointing_game: {len(objects)} object lists for {N} label rows")
    H, W = (image_size, image_size) if isinstance(image_size, int | np.integer) else image_size
    h, w = grid
    if maps is not None:
        maps = np.asarray(maps, dtype=np.float32)
        if maps.shape != (N, C, h * w):
            raise ValueError(f"pointing_game: maps shape {maps.shape}, expected (images, "
                             f"classes, h*w) = ({N}, {C}, {h * w}) for grid {grid}")
    index = {name: c for c, name in enumerate(class_names)}
    hits, pairs = np.zeros(C, np.int64), np.zeros(C, np.int64)
    for i, c in zip(*np.nonzero(Y == 1)):
        boxes = [o["box"] for o in objects[i] if index.get(o["class"]) == c]
        if not boxes:
            continue  # a positive without a drawn instance cannot be pointed at
        if maps is None:
            y, x = H / 2, W / 2
        else:
            row, col = divmod(int(np.argmax(maps[i, c])), w)
            y, x = (row + 0.5) * H / h, (col + 0.5) * W / w
        pairs[c] += 1
        hits[c] += any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in boxes)
    df = pd.DataFrame({"hits": hits, "pairs": pairs},
                      index=pd.Index(list(class_names), name="class"))
    df.loc["total"] = [hits.sum(), pairs.sum()]
    with np.errstate(invalid="ignore", divide="ignore"):
        df["hit_rate"] = np.where(df["pairs"] > 0, df["hits"] / df["pairs"].clip(lower=1), np.nan)
    return df
