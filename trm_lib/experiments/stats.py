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

__all__ = ["PAIR_KEYS", "VALUE_COLUMNS", "WORLD_SEP", "below_zero_shot", "claim_sentence",
           "component_gains", "describe_gains", "describe_paired", "paired_differences",
           "paired_table", "t_interval", "to_percent", "world_gains"]

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


#: the columns of the paired tables that hold metric values (fractions until
#: :func:`to_percent`); settings (``proportion``) and counts (``n``) are not among them
VALUE_COLUMNS = ("mean_diff", "ci_low", "ci_high", "std_diff", "mean_variant", "mean_reference",
                 "gain", "gain_low", "gain_high", "value", "mean", "std")
PERCENT = "percent points"


def to_percent(df: pd.DataFrame, columns: Iterable[str] | None = None,
               digits: int | None = None) -> pd.DataFrame:
    """A copy of a fraction table in percent points: every value column (:data:`VALUE_COLUMNS`
    present in ``df``, or ``columns``) × 100 at once, so no column of a table is left in the
    other unit; settings and counts are left alone. The copy is marked
    (``attrs["unit"] = "percent points"``): converting it again raises instead of scaling twice,
    and :func:`describe_paired` reads it as already in points. ``digits`` rounds."""
    if df.attrs.get("unit") == PERCENT:
        raise ValueError("to_percent: the table is already in percent points")
    cols = [c for c in (VALUE_COLUMNS if columns is None else columns) if c in df.columns]
    missing = [] if columns is None else sorted(set(columns) - set(df.columns))
    if missing:
        raise ValueError(f"to_percent: no columns {missing} in the table")
    out = df.copy()
    for c in cols:
        out[c] = 100.0 * out[c].astype(float)
        if digits is not None:
            out[c] = out[c].round(digits)
    out.attrs["unit"] = PERCENT
    return out


def _points(df: pd.DataFrame) -> float:
    """Factor that takes ``df``'s value columns to percent points."""
    return 1.0 if df.attrs.get("unit") == PERCENT else 100.0


def claim_sentence(name: str, mean: float, low: float, high: float, n: int,
                   std: float | None = None, *, unit: str = "points", better: str = "helps",
                   worse: str = "hurts", confidence: float = 0.95) -> str:
    """One sentence stating a paired difference (already in percent points) and what it
    supports: ``better`` / ``worse`` where the interval excludes 0, "within noise" where it
    crosses 0, no verdict for one seed. ``std`` (the per-seed spread) is added as
    "mean ± std" only where n ≥ 2: one value has no spread.

    ``distillation helps: +2.04 points [95% CI +1.16, +2.92], n = 5 seeds``"""
    level = f"{100 * confidence:g}% CI"
    if n < 1 or not np.isfinite(mean):
        return f"{name}: no paired seeds, nothing to claim."
    if n == 1 or not (np.isfinite(low) and np.isfinite(high)):
        return (f"{name}: {mean:+.2f} {unit}, n = {n} seed — no interval, so it cannot be told "
                "from seed noise (run more seeds).")
    if low > 0:
        verdict = f"{name} {better}"
    elif high < 0:
        verdict = f"{name} {worse}"
    else:
        verdict = f"{name} is within noise"
    text = f"{verdict}: {mean:+.2f} {unit} [{level} {low:+.2f}, {high:+.2f}], n = {n} seeds"
    if std is not None and np.isfinite(std):
        text += f"; mean ± std {mean:+.2f} ± {std:.2f}"
    if low <= 0 <= high:
        text += " — the interval crosses 0"
    return text + "."


def describe_paired(diffs: pd.DataFrame, labels: dict[str, str] | None = None, *,
                    gain: bool = True, std: bool = False, unit: str = "mAP points",
                    better: str = "helps", worse: str = "hurts",
                    confidence: float = 0.95) -> list[str]:
    """The sentences a notebook prints for a table of :func:`paired_differences` (or
    :func:`world_gains`), one per row, in percent points, every number computed from the table.

    ``gain=True`` states the component view ``reference − variant`` (:func:`component_gains`:
    "distillation helps" when removing it costs mAP); False states ``variant − reference``.
    ``labels`` names the variants. Rows are prefixed with their setting (p or protocol B, and
    the world of a difficulty grid). ``std=True`` adds the per-seed mean ± std where n ≥ 2."""
    if diffs.empty:
        return []
    k = _points(diffs)
    rows = component_gains(diffs) if gain else diffs.assign(
        gain=diffs["mean_diff"], gain_low=diffs["ci_low"], gain_high=diffs["ci_high"])
    labels = labels or {}
    out = []
    for _, r in rows.iterrows():
        p = float(r["proportion"])
        where = f"p = {100 * p:g}%" if np.isfinite(p) else "protocol B"
        if "world" in rows.columns:
            where = f"{r['world']} world, {where}"
        name = f"{where}, {labels.get(r['variant'], r['variant'])}"
        spread = k * float(r["std_diff"]) if std and "std_diff" in rows.columns else None
        out.append(claim_sentence(name, k * float(r["gain"]), k * float(r["gain_low"]),
                                  k * float(r["gain_high"]), int(r["n"]), spread, unit=unit,
                                  better=better, worse=worse, confidence=confidence))
    return out


def describe_gains(diffs: pd.DataFrame, unit: str = "mAP points",
                   labels: dict[str, str] | None = None) -> str:
    """:func:`describe_paired` in the component view, as one text: whether each component
    helps beyond seed noise (so notebooks state no hand-typed number)."""
    lines = describe_paired(diffs, labels, unit=unit, std=True)
    return "\n".join(lines) or ("No paired runs: the table holds no variant with a matching "
                                "reference run.")


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
                 metric: str = "mAP") -> pd.DataFrame:
    """Printable per (method, variant, p) table of :func:`paired_differences` for every
    (grid, method) of ``df`` that holds ``reference`` runs: the difference to the reference
    and its 95 % CI in percent points (:func:`to_percent`), n and the verdict. Empty if none."""
    parts = []
    for (grid, method), g in df.groupby(["grid", "method"], sort=False):
        diffs = paired_differences(g, reference, split=split, metric=metric)
        if diffs.empty:
            continue
        gains = to_percent(component_gains(diffs), digits=2)
        parts.append(pd.DataFrame({
            "grid": grid, "method": method, "variant": gains["variant"],
            "p": gains["proportion"], "n": gains["n"].astype(int),
            f"diff to {reference}": gains["mean_diff"], "ci_low": gains["ci_low"],
            "ci_high": gains["ci_high"], "verdict (component)": gains["verdict"]}))
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
