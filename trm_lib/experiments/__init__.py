"""Experiment grids → one tidy results CSV: the one import for notebooks and scripts.

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

The CSV is tidy: one row per run × split × metric (columns in :data:`COLUMNS`), merged into the
file under its lock after every run, so two grids writing one CSV keep each other's rows.
:func:`run_grid` returns a :class:`GridResult`: the whole table, this call's plan and the CSV's
path (``GridResult.rows``: the rows of the plan).

The concepts live in their own rooms -- :mod:`trm_lib.experiments.spec` (reading a spec, planning its
runs), :mod:`trm_lib.experiments.runner` (training the plan), :mod:`trm_lib.experiments.table` (rows, the
CSV, summaries) and :mod:`trm_lib.experiments.cli` (the ``train`` / ``evaluate`` /
``experiment`` commands); this module gathers their public names.
"""

from __future__ import annotations

from .cli import cli_evaluate, cli_experiment, cli_train
from .runner import GridResult, auto_jobs, run_grid
from .spec import (
           PlannedRun,
           expand,
           is_grid_spec,
           load_spec,
           method_config,
           method_overrides,
           smoke_selection,
)
from .table import (
           COLUMNS,
           PSEUDO_METRICS,
           SPLITS,
           budget_notes,
           floor_messages,
           merge_results,
           pivot_table,
           planned_rows,
           read_results,
           result_rows,
           summarize,
)

__all__ = ["COLUMNS", "smoke_selection", "GridResult", "PSEUDO_METRICS", "PlannedRun", "SPLITS", "auto_jobs",
           "budget_notes", "cli_evaluate", "cli_experiment", "cli_train", "expand",
           "floor_messages", "is_grid_spec", "load_spec", "merge_results", "method_config",
           "method_overrides", "pivot_table", "planned_rows", "read_results", "result_rows",
           "run_grid", "summarize"]
