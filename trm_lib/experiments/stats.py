"""Paired multi-seed statistics for ablations: is a component's gain larger than seed noise?

An ablation variant and the full model of one grid share the label mask seed and the training
seed, so their results are *paired*: the seed-to-seed spread (which mask, which order) is common
to both and cancels in the per-seed difference. :func:`paired_differences` matches the runs of a
tidy results table (:data:`trm_lib.experiments.COLUMNS`) on (proportion, seed) and returns, per
(variant, proportion, split, metric), the mean of ``variant - reference`` over seeds, its 95 %
Student-t interval and n. With n = 1 the interval is undefined (NaN), never a fake zero width.

Sign convention: ``diff = variant - reference``. For a *removal* ablation (``no_kd``) a negative
difference means the removed component helped; :func:`component_gains` flips the sign so that
"gain of KD" = full - no_kd reads positive when the component helps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = ["PAIR_KEYS", "WORLD_SEP", "below_zero_shot", "component_gains", "describe_gains",
           "paired_differences", "paired_table", "t_interval", "world_gains"]

#: what pairs a variant's run with the reference run (seed sets train.seed and data.mask_seed)
PAIR_KEYS = ("grid", "method", "protocol", "proportion", "seed")
_GROUP = ["variant", "proportion", "split", "metric"]
DIFF_COLUMNS = ["variant", "reference", "proportion", "split", "metric", "n", "mean_diff",
                "ci_low", "ci_high", "std_diff", "mean_variant", "mean_reference"]


def t_interval(values: Iterable[float], confidence: float = 0.95
               ) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the Student-t interval for the mean of ``values`` (NaNs dropped).

    n = 0: all NaN. n = 1: the mean with a NaN interval (one seed says nothing about noise).
    Identical differences (std 0) give a zero-width interval at the mean."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"t_interval: confidence must lie in (0, 1), got {confidence}")
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sem
    return mean, mean - half, mean + half, n


def paired_differences(df: pd.DataFrame, reference: str = "full", *,
                       split: str | None = "test", metric: str | None = "mAP",
                       confidence: float = 0.95) -> pd.DataFrame:
    """Per (variant, proportion, split, metric): mean paired difference ``variant - reference``
    over the seeds both ran, its ``confidence`` t-interval and n (columns :data:`DIFF_COLUMNS`).

    ``df`` is a tidy results table; ``split`` / ``metric`` = None keeps every one. Rows are
    paired on :data:`PAIR_KEYS`; a seed missing on either side is left out (n says how many
    pairs remain). The per-seed values stay in ``df`` (the results CSV)."""
    need = set(PAIR_KEYS) | {"variant", "split", "metric", "value"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ValueError(f"paired_differences: results table lacks columns {missing}")
    sel = df
    if split is not None:
        sel = sel[sel["split"] == split]
    if metric is not None:
        sel = sel[sel["metric"] == metric]
    sel = sel.copy()
    sel["proportion"] = sel["proportion"].astype(float).fillna(-1.0)  # protocol B: NaN p
    keys = [*PAIR_KEYS, "split", "metric"]
    ref = sel[sel["variant"] == reference].drop_duplicates(keys, keep="last")
    other = sel[sel["variant"] != reference].drop_duplicates([*keys, "variant"], keep="last")
    if ref.empty or other.empty:
        return pd.DataFrame(columns=DIFF_COLUMNS)
    pairs = other.merge(ref[[*keys, "value"]], on=keys, suffixes=("", "_ref"))
    pairs["diff"] = pairs["value"] - pairs["value_ref"]
    rows = []
    for (variant, p, sp, met), g in pairs.groupby(_GROUP, sort=False):
        mean, lo, hi, n = t_interval(g["diff"], confidence)
        rows.append({"variant": variant, "reference": reference,
                     "proportion": math.nan if p < 0 else p, "split": sp, "metric": met,
                     "n": n, "mean_diff": mean, "ci_low": lo, "ci_high": hi,
                     "std_diff": float(g["diff"].std(ddof=1)) if n > 1 else math.nan,
                     "mean_variant": float(g["value"].mean()),
                     "mean_reference": float(g["value_ref"].mean())})
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)


def component_gains(diffs: pd.DataFrame) -> pd.DataFrame:
    """The component view of :func:`paired_differences`: ``gain = reference - variant`` (a
    positive gain = removing the component costs that much), with the interval flipped and a
    ``verdict`` column: ``helps`` / ``hurts`` where the interval excludes 0, ``within noise``
    where it includes 0, ``n < 2`` where there is no interval."""
    out = diffs.copy()
    out["gain"] = -out["mean_diff"]
    out["gain_low"] = -out["ci_high"]
    out["gain_high"] = -out["ci_low"]

    def verdict(row: pd.Series) -> str:
        if not (np.isfinite(row["gain_low"]) and np.isfinite(row["gain_high"])):
            return "n < 2"
        if row["gain_low"] > 0:
            return "helps"
        if row["gain_high"] < 0:
            return "hurts"
        return "within noise"

    out["verdict"] = out.apply(verdict, axis=1) if len(out) else pd.Series(dtype=str)
    return out


def describe_gains(diffs: pd.DataFrame, scale: float = 100.0, unit: str = "mAP points",
                   labels: dict[str, str] | None = None) -> str:
    """One sentence per (variant, proportion) saying whether the component helps beyond seed
    noise, computed from :func:`paired_differences` (so notebooks state no hand-typed number)."""
    gains = component_gains(diffs)
    if gains.empty:
        return "No paired runs: the table holds no variant with a matching reference run."
    labels = labels or {}
    lines = []
    for _, r in gains.iterrows():
        name = labels.get(r["variant"], r["variant"])
        where = f"p = {r['proportion']:g}" if np.isfinite(r["proportion"]) else "protocol B"
        head = (f"{name} ({where}, n = {int(r['n'])} paired seeds): gain "
                f"{scale * r['gain']:+.2f} {unit}")
        if r["verdict"] == "n < 2":
            lines.append(f"{head}; one seed, no interval — run more seeds to tell it from noise.")
            continue
        ci = f"95 % CI [{scale * r['gain_low']:+.2f}, {scale * r['gain_high']:+.2f}]"
        says = {"helps": "helps beyond seed noise",
                "hurts": "hurts beyond seed noise",
                "within noise": "the interval includes 0: not distinguishable from noise"}
        lines.append(f"{head}, {ci} — {says[r['verdict']]}.")
    return "\n".join(lines)


#: separates world and component in a difficulty grid's variant names ("hard/no_kd")
WORLD_SEP = "/"


def world_gains(df: pd.DataFrame, reference: str = "full", *, split: str = "test",
                metric: str = "mAP", confidence: float = 0.95) -> pd.DataFrame:
    """:func:`paired_differences` per world of a difficulty grid, whose variants are named
    ``<world>/<component>`` (``hard/no_kd`` pairs with ``hard/full``): the columns of
    :data:`DIFF_COLUMNS` with ``variant`` the component and a leading ``world`` column, worlds
    in order of appearance. Empty when no variant has that form."""
    sel = df[df["variant"].astype(str).str.contains(WORLD_SEP, regex=False)]
    if sel.empty:
        return pd.DataFrame(columns=["world", *DIFF_COLUMNS])
    parts = sel["variant"].astype(str).str.split(WORLD_SEP, n=1, expand=True)
    sel = sel.assign(world=parts[0], variant=parts[1])
    frames = []
    for world, g in sel.groupby("world", sort=False):
        diffs = paired_differences(g, reference, split=split, metric=metric,
                                   confidence=confidence)
        if not diffs.empty:
            frames.append(diffs.assign(world=world))
    if not frames:
        return pd.DataFrame(columns=["world", *DIFF_COLUMNS])
    out = pd.concat(frames, ignore_index=True)
    return out[["world", *DIFF_COLUMNS]]


def paired_table(df: pd.DataFrame, reference: str = "full", split: str = "test",
                 metric: str = "mAP", scale: float = 100.0) -> pd.DataFrame:
    """Printable per (method, variant, p) table of :func:`paired_differences` for every
    (grid, method) of ``df`` that holds ``reference`` runs: the difference to the reference
    and its 95 % CI in ``scale`` units (% for mAP), n and the verdict. Empty if none."""
    parts = []
    for (grid, method), g in df.groupby(["grid", "method"], sort=False):
        diffs = paired_differences(g, reference, split=split, metric=metric)
        if diffs.empty:
            continue
        gains = component_gains(diffs)
        parts.append(pd.DataFrame({
            "grid": grid, "method": method, "variant": gains["variant"],
            "p": gains["proportion"], "n": gains["n"].astype(int),
            f"diff to {reference}": (scale * gains["mean_diff"]).round(2),
            "ci_low": (scale * gains["ci_low"]).round(2),
            "ci_high": (scale * gains["ci_high"]).round(2),
            "verdict (component)": gains["verdict"]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


#: methods that start from zero-shot CLIP (the probe exactly, DualCoOp from the zero-shot
#: prompt words) and so must end at or above it; TRM-ML is held to the same floor
FLOOR_METHODS = ("linear_probe", "dualcoop", "trm_ml")


def below_zero_shot(df: pd.DataFrame, split: str = "test", metric: str = "mAP",
                    tol: float = 0.0) -> pd.DataFrame:
    """The runs of a results table that end below zero-shot CLIP in the same setting.

    Each trained method's ``metric`` on ``split`` is compared with the ``zero_shot`` run of the
    same grid, protocol, proportion, seed, dataset and backbone (settings without a zero-shot
    run are not judged). A baseline below the model it starts from is broken, not beaten; the
    experiment CLI fails loudly on any row returned here. Columns: the keys, ``value``,
    ``zero_shot`` and ``gap`` (value − zero-shot, negative)."""
    keys = ["grid", "protocol", "proportion", "seed", "dataset", "backbone"]
    keys = [k for k in keys if k in df.columns]
    sel = df[(df["split"] == split) & (df["metric"] == metric)].copy()
    sel["proportion"] = sel["proportion"].astype(float).fillna(-1.0)
    zs = sel[sel["method"] == "zero_shot"].drop_duplicates(keys, keep="last")
    runs = sel[sel["method"].isin(FLOOR_METHODS)]
    if zs.empty or runs.empty:
        return pd.DataFrame(columns=[*keys, "method", "variant", "value", "zero_shot", "gap"])
    both = runs.merge(zs[[*keys, "value"]].rename(columns={"value": "zero_shot"}), on=keys)
    both["gap"] = both["value"] - both["zero_shot"]
    bad = both[both["gap"] < -tol].copy()
    bad["proportion"] = bad["proportion"].where(bad["proportion"] >= 0)
    cols = [*keys, "method", "variant", "value", "zero_shot", "gap"]
    return bad[[c for c in cols if c in bad.columns]].reset_index(drop=True)
