"""Running a grid: train every planned run not yet in the results CSV, one by one or in worker
processes, and record each as it finishes.

Every run goes through :func:`trm_lib.train.train`, so every number in the CSV comes from the
same trainer and evaluator. A run whose (grid, variant, config hash) is already in the CSV is
skipped, and a run folder holding a finished run is read back instead of retrained, so an
interrupted grid resumes where it stopped. Run folders are named by config hash
(:func:`trm_lib.train.default_out_dir`), so a configuration shared by two grids trains once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from trm_lib.config.run_config import ConfigError, RunConfig
from trm_lib.train import Resources, RunResult, default_out_dir, load_result, train
from trm_lib.utils.distributed import is_distributed, is_main
from trm_lib.utils.paths import runs_dir

from .spec import PlannedRun, expand, load_spec
from .table import (
    floor_messages,
    merge_results,
    merged,
    planned_rows,
    read_results,
    result_rows,
    run_keys,
)


@dataclass
class GridResult:
    """What :func:`run_grid` hands back: the whole results table as written (it may hold rows of
    other selections or of another process's grid), the plan of this call and the CSV's path."""

    table: pd.DataFrame
    plan: list[PlannedRun]
    path: Path

    @property
    def rows(self) -> pd.DataFrame:
        """The rows of this call's planned runs (:func:`~trm_lib.experiments.table.planned_rows`)."""
        return planned_rows(self.table, self.plan)


def run_grid(spec: str | Path | dict[str, Any], out_csv: str | Path | None = None, *,
             grids: list[str] | None = None, seeds: list[int] | None = None,
             proportions: list[float] | None = None, methods: list[str] | None = None,
             overrides: dict[str, Any] | None = None, runs_root: str | Path | None = None,
             progress: bool = False, log: Any = print, jobs: int = 1,
             method_budgets: bool = False) -> GridResult:
    """Run every planned run of ``spec`` not yet in ``out_csv``; the table, plan and CSV path.

    ``out_csv`` defaults to ``runs/<spec name>.csv``; ``runs_root`` (default ``runs/``) holds the
    run folders. Backbones and feature stores are shared by all runs of the grid.

    ``jobs > 1`` trains that many runs at once in worker processes, each with
    ``torch.get_num_threads() // jobs`` threads. The heads are small, and two 1-thread runs on
    2 cores finish sooner than the same runs one after the other with 2 threads each (their
    GEMMs are too small to keep two threads busy). Results do not depend on ``jobs`` beyond float
    rounding (thread count changes the order of sums); the table's rows stay in plan order.
    Workers print nothing per epoch (no ``progress`` bars either): ``log`` gets one line per
    finished run. ``method_budgets``: see :func:`~trm_lib.experiments.spec.expand`.
    """
    spec = load_spec(spec)
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ConfigError(f"run_grid: jobs must be an integer >= 1, got {jobs!r}")
    plan = expand(spec, grids=grids, seeds=seeds, proportions=proportions, methods=methods,
                  overrides=overrides, method_budgets=method_budgets)
    out_csv = Path(out_csv) if out_csv else runs_dir() / f"{spec['name']}.csv"
    root = Path(runs_root) if runs_root else runs_dir()
    df = read_results(out_csv)
    done = run_keys(df)
    say = log or (lambda _msg: None)
    todo = [r for r in plan if (r.grid, r.variant, r.hash) not in done]
    say(f"grid {spec['name']}: {len(plan)} runs planned, {len(plan) - len(todo)} already in "
        f"{out_csv}, {len(todo)} to run")
    new_rows: dict[int, list[dict[str, Any]]] = {}

    def record(i: int, result: RunResult) -> None:
        """Write every row this call has so far into the CSV, re-read under its lock."""
        nonlocal df
        new_rows[i] = result_rows(todo[i], result)
        rows = [row for k in sorted(new_rows) for row in new_rows[k]]
        # under torchrun every rank trains; only rank 0 writes the table
        df = merge_results(out_csv, rows) if is_main() else merged(base, rows)

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
        df = merge_results(out_csv, [])
    grid = GridResult(df, plan, out_csv)
    for line in floor_messages(grid.rows):
        say(line)
    return grid


def auto_jobs(device: str = "auto") -> int:
    """The ``jobs`` of :func:`run_grid` that trains a grid soonest on ``device``: 1 on a GPU
    (one process keeps it busy), else 2 when there are at least 2 CPUs. CPUs, not this
    process's threads: a report kernel beside another one has 1 thread, and two 1-thread
    workers still share the cores without the spinning of two full OpenMP pools."""
    from trm_lib.train import resolve_device

    if resolve_device(device).type == "cuda":
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


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


#: a training epoch's cost relative to TRM-ML's on cached features (`python -m trm_lib bench
#: train`: DualCoOp ~0.6 of a TRM-ML step, the probe a linear layer; zero-shot trains nothing).
#: Only the order of a parallel grid uses it, so a method missing here just counts as TRM-ML.
EPOCH_COST = {"trm_ml": 1.0, "dualcoop": 0.6, "linear_probe": 0.05, "zero_shot": 0.0}


def longest_first(folders: dict[Path, list[int]], todo: list[PlannedRun]
                  ) -> list[tuple[Path, list[int]]]:
    """The run folders of a parallel grid in the order to submit them: the longest first
    (epochs x :data:`EPOCH_COST`), so that no long run starts last while the other workers
    idle (the LPT rule); ties keep the grid's order."""
    def cost(item: tuple[Path, list[int]]) -> float:
        cfg = todo[item[1][0]].config
        return cfg.train.epochs * EPOCH_COST.get(cfg.method.name, 1.0)

    return sorted(folders.items(), key=lambda item: -cost(item))


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
    order = longest_first(folders, todo)
    try:
        pending = {pool.submit(_worker_train, todo[idx[0]].config, folder): idx
                   for folder, idx in order}
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


__all__ = ["GridResult", "auto_jobs", "run_grid"]
