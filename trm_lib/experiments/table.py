"""The tidy results table of a grid: its rows, the CSV they live in, and its summaries.

One row per run × split × metric (columns in :data:`COLUMNS`). Several ``experiment``
processes may write one CSV at once (two notebooks, two shells): :func:`merge_results` re-reads
the CSV under its file lock before every write and replaces only the rows of the runs it is
given, so no process drops another's rows. Writes are atomic, so readers never need the lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trm_lib.config.run_config import ConfigError, RunConfig
from trm_lib.train import provenance
from trm_lib.utils.errors import FileError
from trm_lib.utils.io import atomic_write, remove_orphans
from trm_lib.utils.locks import file_lock

from .spec import method_overrides
from .stats import below_zero_shot

if TYPE_CHECKING:
    from trm_lib.train import RunResult

    from .spec import PlannedRun

COLUMNS = ["grid", "method", "variant", "protocol", "proportion", "seed", "split", "metric",
           "value", "epoch", "dataset", "backbone", "config_hash", "run_dir", "wall_time",
           "git_rev", "versions", "config"]
SPLITS = ("val", "test", "test_oracle")


#: pseudo-label columns of a run's history copied into the results table (split ``train``)
PSEUDO_METRICS = ("pseudo_precision", "pseudo_recall", "pseudo_neg_precision",
                  "pseudo_neg_recall", "pseudo_pos", "pseudo_neg")


def result_rows(run: PlannedRun, result: RunResult) -> list[dict[str, Any]]:
    """The tidy rows of one run: every metric of val / test / test_oracle, plus per-class test
    AP as ``AP/<class>`` rows of split ``test``."""
    cfg = result.config
    prov = result.provenance or provenance()
    common = {
        "grid": run.grid, "method": run.method, "variant": run.variant,
        "protocol": run.protocol, "proportion": run.proportion, "seed": run.seed,
        "dataset": cfg.data.dataset, "backbone": f"{cfg.backbone.model}/{cfg.backbone.pretrained}",
        "config_hash": run.hash, "run_dir": str(result.out_dir), "wall_time": result.wall_time,
        "git_rev": prov.get("git_rev"), "versions": json.dumps(prov.get("versions"),
                                                               sort_keys=True),
        "config": json.dumps(cfg.to_dict(), sort_keys=True)}
    epochs = {"val": result.best_epoch, "test": result.best_epoch,
              "test_oracle": result.oracle_epoch}
    rows = []
    for split in SPLITS:
        for metric, value in result.metrics.get(split, {}).items():
            rows.append({**common, "split": split, "metric": metric, "value": float(value),
                         "epoch": epochs[split]})
    for cls, ap in result.per_class_ap.items():
        rows.append({**common, "split": "test", "metric": f"AP/{cls}", "value": float(ap),
                     "epoch": result.best_epoch})
    # pseudo-label quality against the hidden labels of the training split, at the reported
    # epoch (NaN where no pseudo-label of that kind was made)
    hist = result.history
    if "epoch" in hist.columns and result.best_epoch in set(hist["epoch"]):
        at = hist[hist["epoch"] == result.best_epoch].iloc[-1]
        for metric in PSEUDO_METRICS:
            if metric in hist.columns:
                rows.append({**common, "split": "train", "metric": metric,
                             "value": float(at[metric]), "epoch": result.best_epoch})
    return rows


def read_results(path: str | Path) -> pd.DataFrame:
    """A results CSV as written by :func:`run_grid` (empty frame with :data:`COLUMNS` if
    absent); raises naming the file if a required column is missing."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise FileError(f"{path}: damaged results CSV ({str(err).strip().splitlines()[0]}); "
                        f"move it away to start a new one") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: not a results CSV (missing columns {missing})")
    return df


def run_keys(df: pd.DataFrame) -> set[tuple[str, str, str]]:
    """The (grid, variant, config hash) of every run with rows in ``df``: what identifies a run
    in a results table (the same config under two variant names is two runs of the table)."""
    return set(zip(df["grid"].astype(str), df["variant"].astype(str),
                   df["config_hash"].astype(str)))


def merged(current: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``current`` with the runs of ``rows`` replaced by (or added as) ``rows``, in that order."""
    new = pd.DataFrame(rows, columns=COLUMNS)
    if not current.empty and not new.empty:
        mine = run_keys(new)
        current = current[[k not in mine for k in zip(
            current["grid"].astype(str), current["variant"].astype(str),
            current["config_hash"].astype(str))]]
    return new if current.empty else pd.concat([current, new], ignore_index=True)


def lock_path(csv: str | Path) -> Path:
    """The lock file guarding a results CSV (beside it, hidden: ``.<name>.csv.lock``, so a
    report folder's listings and its HTML book do not show it)."""
    csv = Path(csv)
    return csv.with_name(f".{csv.name}.lock")


def merge_results(path: str | Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Write ``rows`` into the results CSV ``path`` and return the whole table as written.

    Under the CSV's lock the file is read afresh, the runs of ``rows`` replace their earlier
    rows (a grid re-records its runs as each finishes), and every other row -- another process's
    grid included -- is kept. An absent CSV is created (header only when ``rows`` is empty)."""
    path = Path(path)
    with file_lock(lock_path(path), what=f"results CSV {path}"):
        remove_orphans(path.parent, [path.name])  # of writers killed mid-write
        table = merged(read_results(path), rows)
        if rows or not path.exists():
            with atomic_write(path, newline="") as fh:
                table.to_csv(fh, index=False)
    return table


def planned_rows(df: pd.DataFrame, plan: Iterable[PlannedRun]) -> pd.DataFrame:
    """The rows of ``df`` that belong to the runs of ``plan`` (the CSV may also hold rows of
    earlier, different selections, or of another process's grid)."""
    keys = {(r.grid, r.variant, r.hash) for r in plan}
    mask = [(str(g), str(v), str(h)) in keys
            for g, v, h in zip(df["grid"], df["variant"], df["config_hash"])]
    return df[pd.Series(mask, index=df.index, dtype=bool)]  # (an empty list selects columns)


def summarize(df: pd.DataFrame, split: str = "test", metric: str = "mAP") -> pd.DataFrame:
    """Mean, std and count over seeds of ``metric`` on ``split`` per (grid, method, variant,
    setting), where setting is ``p=<proportion>`` or the protocol name."""
    sel = df[(df["split"] == split) & (df["metric"] == metric)].copy()
    sel["setting"] = [f"p={p:g}" if proto == "proportion" else str(proto)
                      for proto, p in zip(sel["protocol"], sel["proportion"].astype(float))]
    return (sel.groupby(["grid", "method", "variant", "setting"], sort=False)["value"]
            .agg(["mean", "std", "count"]).reset_index())


def pivot_table(df: pd.DataFrame, split: str = "test", metric: str = "mAP") -> pd.DataFrame:
    """(grid, method, variant) × setting table of ``mean ± std`` in % (std over seeds; a single
    seed shows the mean alone)."""
    stats = summarize(df, split, metric)
    if stats.empty:
        return pd.DataFrame()

    def cell(row: pd.Series) -> str:
        if row["count"] > 1 and np.isfinite(row["std"]):
            return f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}"
        return f"{100 * row['mean']:.2f}"

    stats["cell"] = stats.apply(cell, axis=1)
    table = stats.pivot(index=["grid", "method", "variant"], columns="setting", values="cell")
    order = sorted(table.columns, key=lambda s: (not s.startswith("p="), s))
    return table[order].fillna("")


def floor_messages(df: pd.DataFrame) -> list[str]:
    """One loud line per run of ``df`` that ends below zero-shot CLIP in its setting
    (:func:`trm_lib.experiments.stats.below_zero_shot`); empty when every method clears the floor."""
    return [f"ERROR: {r['method']} ({r['variant']}) in grid {r['grid']}, {r['protocol']}"
            + (f" p={r['proportion']:g}" if r["protocol"] == "proportion" else "")
            + f", seed {r['seed']}: test mAP {100 * r['value']:.2f} is BELOW zero-shot CLIP's "
            f"{100 * r['zero_shot']:.2f} -- the method is broken, not beaten"
            for _, r in below_zero_shot(df).iterrows()]


def budget_notes(df: pd.DataFrame, spec: str | Path | dict[str, Any] = "fidelity") -> list[str]:
    """One caption line per method of a results table that trained fewer epochs than the budget
    chosen for it on validation (``method_overrides`` of ``spec``, else the
    :class:`~trm_lib.config.run_config.RunConfig` default): a report that shortens schedules says so."""
    default = RunConfig().train.epochs
    notes = []
    for method, g in df.groupby("method", sort=False):
        if method == "zero_shot":
            continue
        chosen = int(method_overrides(str(method), spec).get("train.epochs", default))
        ran = sorted({int(json.loads(c)["train"]["epochs"]) for c in g["config"].dropna()})
        short = [e for e in ran if e < chosen]
        if short:
            notes.append(f"{method} ran {'/'.join(map(str, short))} epoch(s), below the "
                         f"{chosen} chosen for it on validation")
    return notes


__all__ = ["COLUMNS", "PSEUDO_METRICS", "SPLITS", "budget_notes", "floor_messages", "lock_path",
           "merge_results", "merged", "pivot_table", "planned_rows", "read_results",
           "result_rows", "run_keys", "summarize"]
