"""Experiment grids → one tidy results CSV, and the ``train`` / ``evaluate`` / ``experiment`` CLI.

A grid spec (YAML, e.g. ``trm_lib/presets/fidelity.yaml``) crosses methods × label settings ×
seeds × switches, where a *switch* is a named set of dotted overrides (``no_kd: {method.kd:
none}``). Every run goes through :func:`trm_lib.train.train`, so every number in the CSV comes
from the same trainer and evaluator. Spec format::

    name: fidelity                  # names the default CSV (runs/<name>.csv)
    preset: null                    # optional run preset / config file every run starts from
    base: {train.epochs: 12}        # dotted overrides applied to every run
    method_overrides:               # per-method overrides (e.g. a baseline's learning rate)
      dualcoop: {train.lr: 0.002}
    grids:
      main:                         # one block per grid; `--grid main` selects
        methods: [trm_ml, zero_shot]
        protocol: proportion        # proportion (A) | single_positive (B) | full
        proportions: [0.1, 0.5]     # protocol A only
        seeds: [0]                  # each seed sets train.seed and data.mask_seed
        overrides: {}               # dotted overrides for this grid
        method_overrides: {}        # per-method overrides for this grid only (protocol B's loss)
        switches: {full: {}, no_kd: {method.kd: none}}   # default {default: {}}

The CSV is tidy: one row per run × split × metric (columns in :data:`COLUMNS`), rewritten
atomically after every run. A run whose (grid, variant, config hash) is already in the CSV is
skipped, and a run folder holding a finished run is read back instead of retrained, so an
interrupted grid resumes where it stopped. Run folders are named by config hash
(:func:`trm_lib.train.default_out_dir`), so a configuration shared by two grids trains once.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import ConfigError, RunConfig, load_config, load_preset, presets_dir, read_yaml
from .distributed import is_distributed, is_main
from .io import atomic_write
from .paths import runs_dir
from .stats import below_zero_shot, paired_table
from .train import (
    Resources,
    RunResult,
    config_hash,
    default_out_dir,
    load_result,
    load_run,
    provenance,
    train,
)

COLUMNS = ["grid", "method", "variant", "protocol", "proportion", "seed", "split", "metric",
           "value", "epoch", "dataset", "backbone", "config_hash", "run_dir", "wall_time",
           "git_rev", "versions", "config"]
SPLITS = ("val", "test", "test_oracle")
_GRID_KEYS = {"methods", "protocol", "proportions", "seeds", "overrides", "switches",
              "method_overrides"}
_SPEC_KEYS = {"name", "preset", "base", "method_overrides", "grids", "description"}


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------

def load_spec(spec: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A grid spec from a dict, a YAML file, or a preset name (``fidelity``); validated."""
    if isinstance(spec, dict):
        return _check_spec(dict(spec), "spec")
    path = Path(spec)
    if not path.suffix and not path.exists():
        path = presets_dir() / f"{spec}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in presets_dir().glob("*.yaml") if is_grid_spec(p))
            raise ConfigError(f"unknown grid preset {str(spec)!r} (known: {', '.join(known)})")
    values = read_yaml(path, "grid spec")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a grid spec must be a mapping with a 'grids' block")
    values.setdefault("name", path.stem)
    return _check_spec(values, str(path))


def is_grid_spec(path: str | Path) -> bool:
    """True for a YAML file with a ``grids`` block (an experiment, not a run config)."""
    try:
        values = read_yaml(path)
    except ConfigError:
        return False
    return isinstance(values, dict) and "grids" in values


def _check_spec(spec: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} (known: {sorted(_SPEC_KEYS)})")
    grids = spec.get("grids")
    if not isinstance(grids, dict) or not grids:
        raise ConfigError(f"{where}: 'grids' must be a non-empty mapping of grid blocks")
    for name, block in grids.items():
        at = f"{where}: grids.{name}"
        if not isinstance(block, dict):
            raise ConfigError(f"{at} must be a mapping")
        bad = sorted(set(block) - _GRID_KEYS)
        if bad:
            raise ConfigError(f"{at}: unknown key(s) {bad} (known: {sorted(_GRID_KEYS)})")
        if not block.get("methods") or not isinstance(block["methods"], list):
            raise ConfigError(f"{at}.methods must be a non-empty list")
        for key in ("proportions", "seeds"):
            if key in block and not isinstance(block[key], list):
                raise ConfigError(f"{at}.{key} must be a list")
        for key in ("overrides", "switches", "method_overrides"):
            if not isinstance(block.get(key, {}), dict):
                raise ConfigError(f"{at}.{key} must be a mapping")
    for key in ("base", "method_overrides"):
        if not isinstance(spec.get(key) or {}, dict):
            raise ConfigError(f"{where}: {key} must be a mapping")
    spec.setdefault("name", "grid")
    return spec


@dataclass
class PlannedRun:
    """One cell of a grid: its labels and its complete config."""

    grid: str
    method: str
    variant: str
    protocol: str
    proportion: float
    seed: int
    config: RunConfig

    @property
    def hash(self) -> str:
        return config_hash(self.config)


def expand(spec: dict[str, Any], *, grids: list[str] | None = None,
           seeds: list[int] | None = None, proportions: list[float] | None = None,
           methods: list[str] | None = None, overrides: dict[str, Any] | None = None
           ) -> list[PlannedRun]:
    """Every run of ``spec`` (optionally restricted / re-seeded), configs built and validated.

    Precedence, later wins: preset → ``base`` → method overrides → CLI ``overrides`` → grid
    ``overrides`` → the grid's ``method_overrides`` → switch → (method, protocol, proportion,
    seeds). What the caller passes beats
    a method's own settings from the spec: ``--set train.epochs=6`` (a notebook's time budget)
    shortens every method's schedule, including a baseline whose spec entry sets its epochs.
    """
    spec = load_spec(spec)
    where = str(spec.get("name"))
    chosen = grids or list(spec["grids"])
    unknown = [g for g in chosen if g not in spec["grids"]]
    if unknown:
        raise ConfigError(f"{where}: unknown grid(s) {unknown} (known: {list(spec['grids'])})")
    preset = spec.get("preset")
    if preset:
        root = load_config(preset) if Path(str(preset)).suffix else load_preset(str(preset))
    else:
        root = RunConfig()
    root = _apply(root, spec.get("base") or {}, f"{where}: base")
    _apply(root, overrides or {}, "--set")  # one clear error before any run is planned
    plan: list[PlannedRun] = []
    for gname in chosen:
        block = spec["grids"][gname]
        protocol = block.get("protocol", "proportion")
        props = block.get("proportions") or [root.data.proportion]
        if proportions is not None and protocol == "proportion":
            props = proportions
        if protocol != "proportion":
            props = [math.nan]
        grid_methods = [m for m in block["methods"] if methods is None or m in methods]
        switches = block.get("switches") or {"default": {}}
        for method, variant, p, seed in itertools.product(
                grid_methods, switches, props, seeds or block.get("seeds") or [0]):
            at = f"{where}: grids.{gname} ({method}, {variant})"
            cfg = _apply(root, {"method.name": method}, at)
            cfg = _apply(cfg, (spec.get("method_overrides") or {}).get(method) or {}, at)
            cfg = _apply(cfg, overrides or {}, f"{at}: --set")
            cfg = _apply(cfg, block.get("overrides") or {}, at)
            # a method's settings for this grid only (e.g. its protocol-B loss)
            cfg = _apply(cfg, (block.get("method_overrides") or {}).get(method) or {}, at)
            cfg = _apply(cfg, switches[variant] or {}, f"{at}: switch {variant}")
            setting: dict[str, Any] = {"data.protocol": protocol, "train.seed": int(seed),
                                       "data.mask_seed": int(seed)}
            if protocol == "proportion":
                setting["data.proportion"] = float(p)
            cfg = _apply(cfg, setting, at)
            plan.append(PlannedRun(gname, method, str(variant), protocol,
                                   float(p), int(seed), cfg))
    if not plan:
        raise ConfigError(f"{where}: the selection leaves no run (grids {chosen}, "
                          f"methods {methods})")
    return plan


def method_overrides(method: str, spec: str | Path | dict[str, Any] = "fidelity"
                     ) -> dict[str, Any]:
    """The per-method overrides of ``spec`` for ``method`` (e.g. the linear probe's learning
    rate), so that tools outside a grid (the explorer) train a baseline the way the grid does.
    A named spec is read once per process (the explorer asks on every widget change)."""
    table = _named_method_overrides(spec) if isinstance(spec, str) else \
        (load_spec(spec).get("method_overrides") or {})
    return dict(table.get(method) or {})


def method_config(method: str, overrides: dict[str, Any] | None = None, *,
                  spec: str | Path | dict[str, Any] = "fidelity",
                  base: RunConfig | None = None) -> RunConfig:
    """The config a grid of ``spec`` would give ``method`` outside a grid (a notebook training one
    baseline): ``base`` (default :class:`RunConfig`), the method, its overrides from ``spec``, then
    the caller's ``overrides`` -- the same precedence as :func:`expand`."""
    cfg = (base or RunConfig()).with_overrides({"method.name": method})
    cfg = _apply(cfg, method_overrides(method, spec), f"{spec if isinstance(spec, str) else 'spec'}"
                 f": method_overrides.{method}")
    return _apply(cfg, overrides or {}, "overrides")


@functools.lru_cache(maxsize=8)
def _named_method_overrides(spec: str) -> dict[str, Any]:
    return load_spec(spec).get("method_overrides") or {}


def _apply(cfg: RunConfig, overrides: dict[str, Any], where: str) -> RunConfig:
    try:
        return cfg.with_overrides(overrides)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


# ---------------------------------------------------------------------------------------------
# Running a grid
# ---------------------------------------------------------------------------------------------

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
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: not a results CSV (missing columns {missing})")
    return df


def _write_results(path: Path, df: pd.DataFrame) -> None:
    with atomic_write(path, newline="") as fh:
        df.to_csv(fh, index=False)


def run_grid(spec: str | Path | dict[str, Any], out_csv: str | Path | None = None, *,
             grids: list[str] | None = None, seeds: list[int] | None = None,
             proportions: list[float] | None = None, methods: list[str] | None = None,
             overrides: dict[str, Any] | None = None, runs_root: str | Path | None = None,
             progress: bool = False, log: Any = print, jobs: int = 1) -> pd.DataFrame:
    """Run every planned run of ``spec`` not yet in ``out_csv`` and return the whole tidy table.

    ``out_csv`` defaults to ``runs/<spec name>.csv``; ``runs_root`` (default ``runs/``) holds the
    run folders. Backbones and feature stores are shared by all runs of the grid.

    ``jobs > 1`` trains that many runs at once in worker processes, each with
    ``torch.get_num_threads() // jobs`` threads. The heads are small, and two 1-thread runs on
    2 cores finish sooner than the same runs one after the other with 2 threads each (their
    GEMMs are too small to keep two threads busy). Results do not depend on ``jobs`` beyond float
    rounding (thread count changes the order of sums); the table's rows stay in plan order.
    Workers print nothing per epoch (no ``progress`` bars either): ``log`` gets one line per
    finished run.
    """
    spec = load_spec(spec)
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ConfigError(f"run_grid: jobs must be an integer >= 1, got {jobs!r}")
    plan = expand(spec, grids=grids, seeds=seeds, proportions=proportions, methods=methods,
                  overrides=overrides)
    out_csv = Path(out_csv) if out_csv else runs_dir() / f"{spec['name']}.csv"
    root = Path(runs_root) if runs_root else runs_dir()
    df = read_results(out_csv)
    done = set(zip(df["grid"].astype(str), df["variant"].astype(str),
                   df["config_hash"].astype(str)))
    say = log or (lambda _msg: None)
    todo = [r for r in plan if (r.grid, r.variant, r.hash) not in done]
    say(f"grid {spec['name']}: {len(plan)} runs planned, {len(plan) - len(todo)} already in "
        f"{out_csv}, {len(todo)} to run")
    new_rows: dict[int, list[dict[str, Any]]] = {}

    def record(i: int, result: RunResult) -> None:
        nonlocal df
        new_rows[i] = result_rows(todo[i], result)
        rows = [row for k in sorted(new_rows) for row in new_rows[k]]
        new = pd.DataFrame(rows, columns=COLUMNS)
        table = new if base.empty else pd.concat([base, new], ignore_index=True)
        if is_main():  # under torchrun every rank trains; only rank 0 writes the table
            _write_results(out_csv, table)
        df = table

    base = df
    if jobs > 1 and len(todo) > 1 and not is_distributed():
        _run_parallel(todo, root, jobs, say, record)
    else:
        resources = Resources()
        for i, run in enumerate(todo):
            say(f"[{i + 1}/{len(todo)}] {_describe(run)}")
            out_dir = root / default_out_dir(run.config).name
            record(i, train(run.config, out_dir, progress=progress, resources=resources,
                            log=log))
    if df.empty and is_main():
        _write_results(out_csv, df)
    df.attrs["path"] = str(out_csv)
    df.attrs["planned"] = sorted({(r.grid, r.variant, r.hash) for r in plan})
    for line in floor_messages(planned_rows(df)):
        say(line)
    return df


def auto_jobs(device: str = "auto") -> int:
    """The ``jobs`` of :func:`run_grid` that trains a grid soonest on ``device``: 1 on a GPU
    (one process keeps it busy), else 2 when there are at least 2 threads to split."""
    from .train import resolve_device

    if resolve_device(device).type == "cuda":
        return 1
    return 2 if torch.get_num_threads() >= 2 else 1


def _describe(run: PlannedRun) -> str:
    return (f"{run.grid}: {run.method} ({run.variant}), {run.protocol}"
            + (f" p={run.proportion:g}" if run.protocol == "proportion" else "")
            + f", seed {run.seed}")


#: per worker process of a parallel grid: backbones and feature stores shared by its runs
_WORKER_RESOURCES: Resources | None = None


def _worker_init(threads: int) -> None:
    global _WORKER_RESOURCES
    torch.set_num_threads(threads)
    _WORKER_RESOURCES = Resources()


def _worker_train(cfg: RunConfig, out_dir: Path) -> RunResult:
    return train(cfg, out_dir, progress=False, resources=_WORKER_RESOURCES, log=None)


def _run_parallel(todo: list[PlannedRun], root: Path, jobs: int, say: Any,
                  record: Any) -> None:
    """Train ``todo`` in ``jobs`` spawned worker processes; ``record(i, result)`` as each ends.

    Runs that share a run folder (identical configs under two variant names) train once: two
    processes must never write one folder."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    folders: dict[Path, list[int]] = {}
    for i, run in enumerate(todo):
        folders.setdefault(root / default_out_dir(run.config).name, []).append(i)
    threads = max(1, torch.get_num_threads() // jobs)
    say(f"{len(folders)} trainings in {jobs} worker processes, {threads} thread(s) each")
    # spawn, not fork: a forked child of a process whose OpenMP pool is running can hang
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads,))
    finished = 0
    try:
        pending = {pool.submit(_worker_train, todo[idx[0]].config, folder): idx
                   for folder, idx in folders.items()}
        while pending:
            complete, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in complete:
                idx = pending.pop(future)
                result = future.result()  # a failed run raises here, after the others' rows
                for n, i in enumerate(idx):
                    if n:  # what the sequential loop gets for a folder that already holds a run
                        result = load_result(root / default_out_dir(todo[i].config).name)
                    finished += 1
                    say(f"[{finished}/{len(todo)}] {_describe(todo[i])}: test mAP "
                        f"{100 * result.metrics.get('test', {}).get('mAP', float('nan')):.2f}, "
                        f"{result.wall_time:.0f}s")
                    record(i, result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def planned_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`run_grid` table that belong to its planned runs (the CSV may also
    hold rows of earlier, different selections)."""
    keys = set(map(tuple, df.attrs.get("planned", [])))
    mask = [(g, str(v), str(h)) in keys
            for g, v, h in zip(df["grid"], df["variant"], df["config_hash"])]
    return df[mask]


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


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def _csv_list(text: str | None, kind: type) -> list[Any] | None:
    if text is None:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"cannot parse {text!r} as a comma-separated list of "
                          f"{kind.__name__}") from None


def _run_config(args: argparse.Namespace) -> RunConfig:
    if args.config:
        if is_grid_spec(args.config):
            raise ConfigError(f"{args.config} is an experiment grid; run it with "
                              f"`python -m trm_lib experiment --spec {args.config}`")
        cfg = load_config(args.config)
    elif args.preset:
        path = presets_dir() / f"{args.preset}.yaml"
        if path.exists() and is_grid_spec(path):
            raise ConfigError(f"preset {args.preset!r} is an experiment grid; run it with "
                              f"`python -m trm_lib experiment --preset {args.preset}`")
        cfg = load_preset(args.preset)
    else:
        cfg = RunConfig()
    overrides: list[str] = list(args.set or [])
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    return cfg.with_overrides(overrides) if overrides else cfg.validate()


def cli_train(argv: list[str]) -> int:
    """``python -m trm_lib train``: train one method from a config."""
    p = argparse.ArgumentParser(prog="python -m trm_lib train",
                                description="Train one method (default: TRM-ML on the embedded "
                                            "SynthScenes world) and evaluate it.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="run config YAML")
    src.add_argument("--preset", help="run preset name (trm_lib/presets/<name>.yaml)")
    p.add_argument("--data-root", help="dataset folder (sets data.root)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="dotted override, repeatable (e.g. --set method.kd=none)")
    p.add_argument("--out", help="run folder (default runs/<name>-<config hash>)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm bars (default: train.progress)")
    args = p.parse_args(argv)
    cfg = _run_config(args)
    result = train(cfg, args.out, progress=args.progress)
    if is_main():
        print(f"run: {result.out_dir}")
    return 0


def cli_evaluate(argv: list[str]) -> int:
    """``python -m trm_lib evaluate``: re-evaluate a run folder's checkpoint."""
    p = argparse.ArgumentParser(prog="python -m trm_lib evaluate",
                                description="Rebuild a trained method from its run folder and "
                                            "evaluate it with the one evaluator.")
    p.add_argument("--run", required=True, help="run folder (holds best.pt / last.pt)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--device", default=None, help="override train.device (cpu, cuda, ...)")
    p.add_argument("--pseudo-sources", action="store_true",
                   help="instead of the metrics, rank each candidate source of pseudo-labels "
                        "(query, region, ensemble, prototype) on the entries of the split's "
                        "label mask that are unknown, against the hidden labels (trm_ml; "
                        "split train unless --split val)")
    p.add_argument("--query-range", default=None, metavar="LO,HI",
                   help="with --pseudo-sources: only entries whose query probability lies in "
                        "(LO, HI), e.g. 0.05,0.5 = those the classifier is unsure of")
    args = p.parse_args(argv)
    if args.query_range is not None and not args.pseudo_sources:
        raise SystemExit("--query-range only applies with --pseudo-sources")
    run = load_run(args.run, args.checkpoint, device=args.device)
    if args.pseudo_sources:
        split = "train" if args.split == "test" else args.split
        rng = _csv_list(args.query_range, float)
        if rng is not None and (len(rng) != 2 or not rng[0] < rng[1]):
            raise SystemExit(f"--query-range: expected LO,HI with LO < HI, got "
                             f"{args.query_range!r}")
        table = pd.DataFrame(run.unknown_entry_quality(
            split, None if rng is None else (rng[0], rng[1]))).T
        inside = "" if rng is None else f" with query probability in ({rng[0]:g}, {rng[1]:g})"
        print(f"{run.config.method.name}, {args.checkpoint}.pt (epoch {run.epoch}), unknown "
              f"entries of split {split}{inside} against the hidden labels:")
        print(table.to_string(float_format=lambda v: f"{v:.4g}"))
        return 0
    t0 = time.perf_counter()
    values = run.evaluate(args.split)
    seconds = time.perf_counter() - t0
    note = "" if args.split == "test" else " (hidden full labels; observed_mAP on observed ones)"
    print(f"{run.config.method.name}, {args.checkpoint}.pt (epoch {run.epoch}), "
          f"split {args.split}{note}:")
    for key, value in values.items():
        if key.startswith("AP/"):
            continue
        shown = f"{100 * value:.2f}" if key != "n_empty_classes" and np.isfinite(value) \
            else f"{value:g}"
        print(f"  {key:<16} {shown}")
    print(f"evaluated in {seconds:.1f}s")
    return 0


def cli_experiment(argv: list[str]) -> int:
    """``python -m trm_lib experiment``: run a grid into a tidy results CSV."""
    p = argparse.ArgumentParser(prog="python -m trm_lib experiment",
                                description="Run a grid of (method x setting x seed x switch) "
                                            "through the one trainer; print test mAP.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="grid preset name (default: fidelity)")
    src.add_argument("--spec", help="grid spec YAML")
    p.add_argument("--grid", action="append", help="grid block(s) to run (default: all)")
    p.add_argument("--base", help="run preset or config file every run starts from (replaces "
                                  "the spec's `preset`, e.g. voc2007-rn101)")
    p.add_argument("--data-root", help="dataset folder (sets data.root)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="dotted override for every run, repeatable")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--proportions", help="comma-separated label proportions (protocol A grids)")
    p.add_argument("--methods", help="comma-separated methods to keep")
    p.add_argument("--out", help="results CSV (default runs/<spec name>.csv)")
    p.add_argument("--runs-dir", help="folder of the run folders (default runs/)")
    p.add_argument("--progress", action="store_true", help="tqdm bars per epoch")
    p.add_argument("--jobs", type=int, default=0,
                   help="runs trained at once in worker processes, threads split between them "
                        "(default 0: auto, 2 on a CPU with >= 2 threads, 1 on a GPU)")
    args = p.parse_args(argv)

    from .config import parse_overrides

    t0 = time.perf_counter()
    spec = load_spec(args.spec or args.preset or "fidelity")
    if args.base:
        spec["preset"] = args.base
    overrides = parse_overrides(args.set or [])
    if args.data_root:
        overrides["data.root"] = args.data_root
    df = run_grid(spec, args.out, grids=args.grid, seeds=_csv_list(args.seeds, int),
                  proportions=_csv_list(args.proportions, float),
                  methods=_csv_list(args.methods, str), overrides=overrides,
                  runs_root=args.runs_dir, progress=args.progress,
                  jobs=args.jobs or auto_jobs(overrides.get("train.device", "auto")))
    wall = time.perf_counter() - t0
    if not is_main():
        return 0
    mine = planned_rows(df)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\ntest mAP (%) at the selected epoch (train.select), mean ± std over seeds:")
        print(pivot_table(mine).to_string())
        for metric in ("pseudo_precision", "pseudo_neg_precision"):
            if ((mine["split"] == "train") & (mine["metric"] == metric)).any():
                print(f"\n{metric} (%) against the hidden training labels, reported epoch:")
                print(pivot_table(mine, split="train", metric=metric).to_string())
        paired = paired_table(mine)
        if not paired.empty:
            print("\ntest mAP (%): paired difference to `full` over seeds (same mask and "
                  "training seed), 95 % t-interval, n:")
            print(paired.to_string(index=False))
    print(f"wall time: {wall:.1f}s")
    print(f"results: {df.attrs['path']}")
    return _fail_below_zero_shot(mine)


def floor_messages(df: pd.DataFrame) -> list[str]:
    """One loud line per run of ``df`` that ends below zero-shot CLIP in its setting
    (:func:`trm_lib.stats.below_zero_shot`); empty when every method clears the floor."""
    return [f"ERROR: {r['method']} ({r['variant']}) in grid {r['grid']}, {r['protocol']}"
            + (f" p={r['proportion']:g}" if r["protocol"] == "proportion" else "")
            + f", seed {r['seed']}: test mAP {100 * r['value']:.2f} is BELOW zero-shot CLIP's "
            f"{100 * r['zero_shot']:.2f} -- the method is broken, not beaten"
            for _, r in below_zero_shot(df).iterrows()]


def budget_notes(df: pd.DataFrame, spec: str | Path | dict[str, Any] = "fidelity") -> list[str]:
    """One caption line per method of a results table that trained fewer epochs than the budget
    chosen for it on validation (``method_overrides`` of ``spec``, else the
    :class:`~trm_lib.config.RunConfig` default): a report that shortens schedules says so."""
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


def _fail_below_zero_shot(df: pd.DataFrame) -> int:
    """Exit status 1 when a trained method of the grid ended below zero-shot CLIP."""
    bad = floor_messages(df)
    for line in bad:
        print(line, file=sys.stderr)
    if bad:
        print(f"error: {len(bad)} run(s) below zero-shot CLIP (see above)", file=sys.stderr)
    return 1 if bad else 0


__all__ = ["COLUMNS", "PlannedRun", "auto_jobs", "cli_evaluate", "cli_experiment", "cli_train",
           "budget_notes", "expand", "floor_messages", "is_grid_spec", "load_spec", "method_config", "method_overrides",
           "pivot_table", "planned_rows", "read_results", "result_rows", "run_grid", "summarize"]
