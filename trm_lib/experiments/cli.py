"""The ``train`` / ``evaluate`` / ``experiment`` command lines (``python -m trm_lib ...``).

Thin: each parses its arguments, builds a validated config or grid spec and calls the library
(:func:`trm_lib.train.train`, :func:`trm_lib.train.load_run`,
:func:`trm_lib.experiments.runner.run_grid`); bad input raises :class:`~trm_lib.config.run_config.ConfigError`
before anything is written, for the CLI's one-line ``error:`` handler.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trm_lib.config.run_config import ConfigError, RunConfig, load_config, load_preset, preset_path
from trm_lib.train import load_run, train
from trm_lib.utils.distributed import is_main

from .launch import EXECUTORS, SLURM_KEYS, STATES, grid_status, launch_grid
from .runner import GridResult, auto_jobs, run_grid
from .spec import is_grid_spec, load_spec
from .stats import component_gains, paired_table, to_percent, world_gains
from .table import floor_messages, pivot_table


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
    elif args.preset is not None:  # --preset "" is an error, not the default run
        path = preset_path(args.preset)
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
                        "(default 0: auto, 2 on a CPU with >= 2 threads, 1 on a GPU); with "
                        "--executor local: job processes at a time, one GPU each where there are GPUs")
    _launch_options(p)
    args = p.parse_args(argv)

    from trm_lib.config.run_config import parse_overrides

    t0 = time.perf_counter()
    if args.out and Path(args.out).exists() and not Path(args.out).is_file():
        raise ConfigError(f"--out {args.out}: not a regular file (a folder, /dev/null, a FIFO); "
                          f"give the results CSV's path")
    if args.preset is not None:  # a name, never a path (that is --spec)
        preset_path(args.preset)
    spec = load_spec(args.spec or (args.preset if args.preset is not None else "fidelity"))
    if args.base:
        spec["preset"] = args.base
    overrides = parse_overrides(args.set or [])
    if args.data_root:
        overrides["data.root"] = args.data_root
    selection = {"grids": args.grid, "seeds": _csv_list(args.seeds, int),
                 "proportions": _csv_list(args.proportions, float),
                 "methods": _csv_list(args.methods, str), "overrides": overrides,
                 "runs_root": args.runs_dir}
    if args.status:
        return _print_status(grid_status(spec, args.out, **selection))
    grid = _run(args, spec, selection, args.jobs or auto_jobs(overrides.get("train.device",
                                                                            "auto")))
    if grid is None:  # submitted, not waited for
        return 0
    failed = getattr(grid, "failed", [])
    wall = time.perf_counter() - t0
    if not is_main():
        return 0
    mine = grid.rows
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
        worlds = world_gains(mine)
        if not worlds.empty:
            gains = to_percent(component_gains(worlds), digits=2)
            print("\ntest mAP (%): component gain (full − variant) per world difficulty, paired "
                  "over seeds, 95 % t-interval, n:")
            print(gains[["world", "variant", "n", "gain", "gain_low", "gain_high", "verdict"]]
                  .rename(columns={"gain_low": "ci_low", "gain_high": "ci_high"})
                  .to_string(index=False))
    print(f"wall time: {wall:.1f}s")
    print(f"results: {grid.path}")
    for name, log in failed:
        print(f"error: run {name} failed; its log: {log}", file=sys.stderr)
    return _fail_below_zero_shot(mine) or int(bool(failed))


def _run(args: argparse.Namespace, spec: dict[str, Any], selection: dict[str, Any],
         jobs: int) -> GridResult | None:
    """The grid through the chosen executor; None where it was only submitted (--no-wait)."""
    if args.executor == "processes":
        if not args.wait:
            raise ConfigError("--no-wait needs --executor slurm")
        return run_grid(spec, args.out, progress=args.progress, jobs=jobs, **selection)
    grid = launch_grid(spec, args.out, executor=args.executor, jobs=jobs, wait=args.wait,
                       slurm={k: getattr(args, f"slurm_{k}") for k in SLURM_KEYS
                              if hasattr(args, f"slurm_{k}")}, **selection)
    return grid if args.wait else None


def _launch_options(p: argparse.ArgumentParser) -> None:
    """``--executor`` and its options (:mod:`trm_lib.experiments.launch`)."""
    g = p.add_argument_group("executors (submitit: one job per run, job folders in "
                             "<runs-dir>/submitit/)")
    g.add_argument("--executor", choices=EXECUTORS, default="processes",
                   help="processes: worker processes of this command (default); local: "
                        "submitit job processes on this machine; slurm: a Slurm job array")
    g.add_argument("--status", action="store_true",
                   help="show queued / running / done / failed per run (and a failed job's "
                        "log), start nothing")
    g.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for the jobs and record their results (default); --no-wait "
                        "submits a Slurm array and returns: rerun the command to record them")
    g.add_argument("--slurm-partition", help="Slurm partition (or the spec's slurm.partition)")
    g.add_argument("--slurm-gpus-per-node", type=int, help="GPUs per job (default 1)")
    g.add_argument("--slurm-time", help="time limit per job: minutes or [D-]HH:MM[:SS] "
                                        "(default 240)")
    g.add_argument("--slurm-mem", help="memory per job, e.g. 32G")
    g.add_argument("--slurm-array-parallelism", type=int,
                   help="jobs of the array running at once")


def _print_status(table: pd.DataFrame) -> int:
    """The ``--status`` table and a count per state."""
    with pd.option_context("display.width", 250, "display.max_columns", 20,
                           "display.max_colwidth", 120):
        print(table.drop(columns=["log"] if not table["log"].any() else []).to_string(
            index=False))
    counts = table["status"].value_counts()
    print(", ".join(f"{counts.get(s, 0)} {s}" for s in STATES if counts.get(s, 0)))
    return 0


def _fail_below_zero_shot(df: pd.DataFrame) -> int:
    """Exit status 1 when a trained method of the grid ended below zero-shot CLIP."""
    bad = floor_messages(df)
    for line in bad:
        print(line, file=sys.stderr)
    if bad:
        print(f"error: {len(bad)} run(s) below zero-shot CLIP (see above)", file=sys.stderr)
    return 1 if bad else 0


__all__ = ["cli_evaluate", "cli_experiment", "cli_train"]
