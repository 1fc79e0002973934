"""Figures and tables of results across methods, variants, proportions and seeds: the
proportion curves, the results table, ablation bars, component-gain forest plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .common import STYLE, _colors, _figure, _palette, _pct, _require_columns, _seaborn, _styled


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


def _over_seeds(counts: pd.Series, spread: str = "mean ± std") -> str:
    """How many seeds a figure's points average: "mean ± std over 3 seeds" only where every
    point has n ≥ 2, "one seed, no spread" where none has (the title never promises a spread
    the figure cannot show)."""
    lo, hi = int(counts.min()), int(counts.max())
    if hi <= 1:
        return "one seed, no spread"
    if lo == hi:
        return f"{spread} over {hi} seeds"
    return f"{spread} over {lo}–{hi} seeds; a single seed has none"


@_styled
def plot_proportion_curves(results_df: pd.DataFrame, metric: str = "mAP", split: str = "test",
                           protocol: str | None = "proportion", scale: float = 100.0) -> Figure:
    """The paper's main figure: ``metric`` vs label proportion per method, mean ± std over seeds.

    A method with several variants gets one curve per variant. ``protocol=None`` skips the
    protocol filter; ``scale=100`` shows the package's fractions as percentages. Drawn by
    seaborn's ``lineplot`` from the tidy rows (one per seed): ``hue`` = method, ``errorbar="sd"``
    (the sample std, ddof=1; a single seed has no band).
    """
    df = _with_labels(_filter_results(results_df, metric, split, protocol, scale))
    labels = sorted(df["label"].unique())
    fig, axes = _figure(1, 1, (6.0, 4.2))
    ax = axes[0, 0]
    _seaborn().lineplot(data=df, x="proportion", y="value", hue="label", hue_order=labels,
                        palette=_palette(labels), estimator="mean", errorbar="sd", marker="o",
                        err_kws={"alpha": 0.2, "linewidth": 0}, ax=ax)
    props = sorted(df["proportion"].unique())
    ax.set_xticks(props, [_pct(p) + ("\n(full)" if p >= 1 else "") for p in props])
    ax.set_xlabel("proportion of known labels")
    ax.set_ylabel(_axis_label(metric, split, scale))
    seeds = _over_seeds(df.groupby(["label", "proportion"])["value"].count())
    ax.set_title(f"{metric} vs label proportion ({seeds})")
    ax.legend(fontsize=8)
    return fig


def results_table(results_df: pd.DataFrame, metric: str = "mAP", split: str = "test",
                  protocol: str | None = "proportion", digits: int = 1, scale: float = 100.0
                  ) -> pd.DataFrame:
    """Method x proportion table of ``"mean ± std"`` strings (in % with the default ``scale``)
    plus an ``avg`` column, as in the paper. ``avg`` is the mean of the per-proportion means,
    left blank unless the row has every proportion (an average over fewer proportions would not
    be comparable). A single seed shows the mean alone. Runs at p = 1 (every label known) are
    the **ceiling**: their column is labelled ``100% (full labels)`` and kept out of ``avg``."""
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
    table.columns = [_pct(p) + (" (full labels)" if p >= 1 else "") for p in props]
    partial = [p for p in props if p < 1]
    complete = means[partial].notna().all(axis=1)
    table.insert(len(partial), "avg", [f"{m:.{digits}f}" if ok and partial else "" for m, ok in
                                       zip(means[partial].mean(axis=1), complete)])
    table.index.name = "method"
    return table.fillna("")


@_styled
def plot_ablation(results_df: pd.DataFrame, baseline_variant: str = "full", metric: str = "mAP",
                  split: str = "test", method: str | None = None,
                  protocol: str | None = "proportion", scale: float = 100.0) -> Figure:
    """Bars of ``metric`` per variant with seed error bars (±1 std), grouped by proportion; each
    bar is annotated with its difference to ``baseline_variant`` (drawn first, hatched).

    Drawn by seaborn's ``barplot`` from the tidy rows: ``hue`` = variant, ``errorbar="sd"``."""
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
    df = df.assign(variant=df["variant"].astype(str))
    agg = _aggregate(df, ["variant", "proportion"])
    props = sorted(agg["proportion"].unique())
    fig, axes = _figure(1, 1, (max(5.0, 1.2 * len(props) * len(variants) * 0.5 + 2), 4.2))
    ax = axes[0, 0]
    _seaborn().barplot(data=df, x="proportion", y="value", hue="variant", order=props,
                       hue_order=variants, palette=dict(zip(variants, _colors(len(variants)))),
                       estimator="mean", errorbar="sd", capsize=0.1, edgecolor="white",
                       saturation=1, err_kws={"linewidth": 1}, ax=ax)
    base = agg[agg["variant"] == baseline_variant].set_index("proportion")["mean"]
    for variant, bars in zip(variants, ax.containers):  # one container per hue level, in order
        g = agg[agg["variant"] == variant].set_index("proportion").reindex(props)
        for bar, p, m, s in zip(bars, props, g["mean"], g["std"]):
            if variant == baseline_variant:
                bar.set_hatch("//")
            elif p in base.index and not np.isnan(m):
                ax.annotate(f"{m - base[p]:+.1f}", (bar.get_x() + bar.get_width() / 2, m + s),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                            textcoords="offset points")
    for patch in ax.patches:  # seaborn's legend proxies: hatch the baseline's too
        if patch.get_label() == baseline_variant:
            patch.set_hatch("//")
    ax.set_xticks(np.arange(len(props)), [_pct(p) for p in props])
    ax.set_xlabel("proportion of known labels")
    ax.set_ylabel(_axis_label(metric, split, scale))
    seeds = _over_seeds(agg["count"], "bars: mean, whiskers: ± 1 std")
    ax.set_title(f"Ablation vs '{baseline_variant}' ({seeds})")
    ax.legend(fontsize=8, ncols=min(4, len(variants)))
    return fig


@_styled
def plot_per_class_ap(results_df: pd.DataFrame, proportion: float | None = None,
                      split: str = "test", protocol: str | None = "proportion",
                      scale: float = 100.0) -> Figure:
    """Per-class AP (the results' ``AP/<class>`` rows) of each method at one label proportion:
    horizontal bars, mean ± std over seeds (seaborn ``barplot``, ``hue`` = method), classes
    sorted by their mean AP over the methods, hardest last, so where a method wins is visible
    class by class. ``proportion`` may be omitted when the results hold a single one."""
    _require_columns(results_df, ["method", "proportion", "metric", "split", "value"], "results")
    df = results_df[results_df["metric"].astype(str).str.startswith("AP/")
                    & (results_df["split"] == split)]
    if protocol is not None and "protocol" in df.columns:
        df = df[df["protocol"] == protocol]
    props = sorted(df["proportion"].dropna().unique())
    if proportion is None and len(props) > 1:
        raise ValueError(f"plot_per_class_ap: results hold proportions {props}; pass "
                         "proportion=... to pick one")
    if proportion is not None:
        df = df[np.isclose(df["proportion"].astype(float), proportion)]
    if df.empty:
        raise ValueError(f"plot_per_class_ap: no AP/<class> rows for split={split!r}, "
                         f"protocol={protocol!r}, proportion={proportion!r}")
    df = _with_labels(df.assign(value=df["value"].astype(float) * scale,
                                cls=df["metric"].str.slice(3)))
    classes = df.groupby("cls")["value"].mean().sort_values(ascending=False, kind="stable")
    labels = sorted(df["label"].unique())
    fig, axes = _figure(1, 1, (6.4, 1.4 + 0.12 * len(classes) * max(2, len(labels))))
    ax = axes[0, 0]
    _seaborn().barplot(data=df, y="cls", x="value", hue="label", order=list(classes.index),
                       hue_order=labels, palette=_palette(labels), estimator="mean",
                       errorbar="sd", err_kws={"linewidth": 1}, saturation=1, ax=ax)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel("")
    ax.set_xlabel(f"AP (%, {split})" if scale == 100 else f"AP ({split})")
    p = float(df["proportion"].iloc[0])
    seeds = _over_seeds(df.groupby(["label", "cls"])["value"].count())
    ax.set_title(f"Per-class AP at p = {_pct(p)} ({seeds})")
    ax.legend(fontsize=8)
    return fig


#: what each ablation switch of the fidelity grid removes (the forest plot's row labels)
COMPONENT_LABELS = {"no_kd": "distillation (full − no_kd)", "no_mcl": "contrastive (full − no_mcl)",
                    "no_pseudo": "pseudo-labels (full − no_pseudo)",
                    "text_image": "region matching (full − text_image)"}


def plot_forest(diffs: pd.DataFrame, ax: Any = None, scale: float = 100.0,
                labels: Mapping[str, str] | None = None, unit: str = "mAP points",
                apart: Sequence[str] = ("text_image",)) -> Figure:
    """Forest plot of component gains: per variant (row) and proportion (colour) the mean
    paired gain ``reference − variant`` over seeds with its 95 % t-interval, and a zero line.

    ``diffs`` is the tidy frame of :func:`trm_lib.experiments.stats.paired_differences`; draws into ``ax``
    (a new figure if None) and returns its figure. A point whose bar misses the zero line is a
    gain beyond seed noise; rows with one seed have no bar (hollow marker).

    Drawn by seaborn's ``pointplot`` (``hue`` = proportion). seaborn computes intervals from
    raw values, while the paired t-interval comes from :mod:`trm_lib.experiments.stats`; so each point is
    handed over as its three values (low, gain, high), with ``estimator="median"`` (= the gain)
    and ``errorbar=("pi", 100)`` (= their range, the t-interval).

    Variants in ``apart`` (region vs image *matching*, tens of points) get their own panel
    below, on their own scale, so the components' few points stay readable."""
    from trm_lib.experiments.stats import component_gains

    _require_columns(diffs, ["variant", "proportion", "n", "mean_diff", "ci_low", "ci_high"],
                     "plot_forest")
    if diffs.empty:
        raise ValueError("plot_forest: no paired differences to draw")
    split = diffs["variant"].astype(str).isin(list(apart))
    if ax is None and split.any() and not split.all():
        n_props = max(1, diffs["proportion"].nunique(dropna=False))
        rows = [diffs.loc[~split, "variant"].nunique(), diffs.loc[split, "variant"].nunique()]
        fig, axes = _figure(2, 1, (6.4, 0.55 * sum(rows) * n_props + 3.0),
                            gridspec_kw={"height_ratios": rows})
        plot_forest(diffs[~split], axes[0, 0], scale, labels, unit, apart=())
        plot_forest(diffs[split], axes[1, 0], scale, labels, unit, apart=())
        axes[1, 0].set_title("Text-region against text-image matching (its own scale)")
        return fig
    gains = component_gains(diffs)
    names = {**COMPONENT_LABELS, **(labels or {})}
    variants = list(pd.unique(gains["variant"].astype(str)))
    rows = [names.get(v, v) for v in variants]
    props = sorted(gains["proportion"].astype(float).unique(), key=lambda p: (np.isnan(p), p))
    hues = ["protocol B" if np.isnan(p) else f"p = {_pct(p)}" for p in props]
    colors = dict(zip(hues, _colors(len(props))))
    step = 0.7 / max(1, len(props))
    dodge = step * (len(props) - 1) if len(props) > 1 else False
    tidy, notes = [], []
    for _, r in gains.iterrows():
        p = float(r["proportion"])
        j = next(i for i, q in enumerate(props) if q == p or (np.isnan(q) and np.isnan(p)))
        has_ci = bool(np.isfinite(r["gain_low"]) and np.isfinite(r["gain_high"]))
        values = [r["gain_low"], r["gain"], r["gain_high"]] if has_ci else [r["gain"]]
        tidy += [{"row": names.get(str(r["variant"]), str(r["variant"])), "hue": hues[j],
                  "gain": scale * v, "ci": has_ci} for v in values]
        notes.append((scale * r["gain"], variants.index(str(r["variant"]))
                      + (j - (len(props) - 1) / 2) * step, int(r["n"]), hues[j]))
    tidy = pd.DataFrame(tidy)
    sns = _seaborn()
    common = dict(x="gain", y="row", hue="hue", order=rows, hue_order=hues, palette=colors,
                  dodge=dodge, linestyle="none", marker="o")
    with mpl.rc_context(STYLE):
        if ax is None:
            fig, axes = _figure(1, 1, (6.4, 0.55 * len(variants) * max(1, len(props)) + 1.6))
            ax = axes[0, 0]
        if tidy["ci"].any():
            sns.pointplot(data=tidy[tidy["ci"]], estimator="median", errorbar=("pi", 100),
                          capsize=0.1, ax=ax, **common)
        if not tidy["ci"].all():
            sns.pointplot(data=tidy[~tidy["ci"]], errorbar=None, markerfacecolor="none",
                          legend=not tidy["ci"].any(), ax=ax, **common)
        for x, y, n, hue in notes:
            ax.annotate(f"n={n}", (x, y), xytext=(4, 4), fontsize=7, textcoords="offset points",
                        color=colors[hue])
        ax.axvline(0.0, color="0.3", lw=1, ls="--")
        ax.set_ylabel("")
        ax.set_xlabel(f"gain of the component ({unit}), mean over paired seeds, 95 % CI")
        ax.set_title("Component gains beyond seed noise: bars that miss the dashed zero line")
        ax.legend(fontsize=8)
    return ax.figure


@_styled
def plot_gains_vs_p(diffs: pd.DataFrame, scale: float = 100.0,
                    labels: Mapping[str, str] | None = None) -> Figure:
    """Component gain (``reference − variant``, paired over seeds) against the label
    proportion, one line per component with its 95 % interval as a band; dashed zero line.
    ``diffs``: :func:`trm_lib.experiments.stats.paired_differences` over several proportions."""
    from trm_lib.experiments.stats import component_gains

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
def plot_gains_vs_world(gains: pd.DataFrame, scale: float = 100.0,
                        labels: Mapping[str, str] | None = None) -> Figure:
    """Component gain (``reference − variant``) per world difficulty, one marker line per
    component across the worlds (x, in the frame's order), whiskers = the paired 95 % interval
    where one exists (several seeds); dashed zero line. ``gains``:
    :func:`trm_lib.experiments.stats.world_gains`."""
    from trm_lib.experiments.stats import component_gains

    _require_columns(gains, ["world", "variant", "mean_diff", "ci_low", "ci_high", "n"],
                     "plot_gains_vs_world")
    if gains.empty:
        raise ValueError("plot_gains_vs_world: no paired differences to draw")
    g_all = component_gains(gains)
    worlds = list(pd.unique(g_all["world"].astype(str)))
    x_of = {w: i for i, w in enumerate(worlds)}
    names = {**COMPONENT_LABELS, **(labels or {})}
    variants = list(pd.unique(g_all["variant"].astype(str)))
    fig, axes = _figure(1, 1, (6.4, 4.0))
    ax = axes[0, 0]
    width = 0.6 / max(len(variants), 1)
    for k, (variant, color) in enumerate(zip(variants, _colors(len(variants)))):
        g = g_all[g_all["variant"] == variant]
        x = np.array([x_of[w] for w in g["world"].astype(str)]) + (k - (len(variants) - 1) / 2) * width
        y = scale * g["gain"].to_numpy(float)
        lo, hi = scale * g["gain_low"].to_numpy(float), scale * g["gain_high"].to_numpy(float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.plot(x, y, "o-", color=color, label=names.get(variant, variant))
        if ok.any():
            ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="none",
                        ecolor=color, capsize=3)
    ax.axhline(0.0, color="0.3", lw=1, ls="--")
    ax.set_xticks(range(len(worlds)), worlds)
    ax.set_xlabel("world difficulty (SynthScenes knobs, trm_lib.synth.config.DIFFICULTY)")
    ax.set_ylabel("gain of the component (mAP points)")
    seeds = int(g_all["n"].max())
    ax.set_title(f"Component gains vs world difficulty ({seeds} seed{'s' if seeds > 1 else ''}"
                 + ("; whiskers: paired 95 % CI)" if seeds > 1 else "; no interval)"))
    ax.legend(fontsize=8)
    return fig

