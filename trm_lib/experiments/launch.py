"""Grids beyond one machine: every run of a grid as a submitit job (``--executor local|slurm``).

``processes`` (:func:`trm_lib.experiments.runner.run_grid`) trains a grid in worker processes of
one command. Here each run is a job of `submitit <https://github.com/facebookincubator/submitit>`_,
the launcher of FAIR-style research code: ``local`` starts real job processes through its
``LocalExecutor``, ``slurm`` submits one Slurm job array (``SlurmExecutor``) with the partition,
GPUs, time, memory and array parallelism of :class:`SlurmOptions` (command line or the grid
spec's ``slurm:`` block). Job folders (pickled job, ``*_log.out`` / ``*_log.err``, result) live
under ``<runs-dir>/submitit/``; ``<runs-dir>/submitit/jobs.json`` maps each run folder to its
job, so ``--status`` and a second launcher find the jobs of the first.

- A job is one run (:class:`TrainJob`): :func:`trm_lib.train.train` into the run's folder. When
  the job is preempted or times out, submitit calls :meth:`TrainJob.checkpoint`, which hands back
  the same job; requeued, it resumes from the run's ``last.pt`` (the trainer's resume, which
  reproduces the uninterrupted run's numbers).
- A finished run (``result.json`` in its folder) is never submitted again, and a run whose job
  is still queued or running is waited for, not submitted twice.
- Each finished run's rows go into the one tidy CSV under its file lock
  (:func:`trm_lib.experiments.table.merge_results`), as the ``processes`` executor does, so
  the tables, statistics and notebooks read a grid the same way however it ran.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trm_lib.config.run_config import ConfigError, RunConfig
from trm_lib.train import default_out_dir, load_result, train
from trm_lib.train.runs import finished_result
from trm_lib.utils.io import read_json, write_json
from trm_lib.utils.locks import file_lock
from trm_lib.utils.paths import REPO_ROOT, runs_dir

from .runner import GridResult
from .spec import PlannedRun, expand, load_spec
from .table import merge_results, read_results, result_rows, run_keys

EXECUTORS = ("processes", "local", "slurm")
STATES = ("done", "running", "queued", "failed", "todo")
#: the spec's ``slurm:`` keys (the ``--slurm-*`` options without the prefix)
SLURM_KEYS = ("partition", "gpus_per_node", "time", "mem", "array_parallelism", "cpus_per_task")

Log = Callable[[str], None]


# ----------------------------------------------------------------------------------- options
@dataclass
class SlurmOptions:
    """What a Slurm job array asks for. ``time``: minutes, or Slurm's ``[D-]HH:MM[:SS]``;
    ``mem``: Slurm's ``--mem`` (``32G``); ``cpus_per_task`` only from the spec."""

    partition: str | None = None
    gpus_per_node: int = 1
    time: int | str = 240
    mem: str | None = None
    array_parallelism: int | None = None
    cpus_per_task: int | None = None

    @classmethod
    def merged(cls, spec: dict[str, Any], given: dict[str, Any]) -> SlurmOptions:
        """The spec's ``slurm:`` block, then the command line's values (``None``: not given)."""
        block = spec.get("slurm") or {}
        unknown = sorted(set(block) - set(SLURM_KEYS))
        if unknown:
            raise ConfigError(f"{spec.get('name')}: slurm: unknown key(s) {unknown} "
                              f"(known: {list(SLURM_KEYS)})")
        opts = cls(**{**block, **{k: v for k, v in given.items() if v is not None}})
        minutes(opts.time)  # a bad time is an error before anything is submitted
        for key in ("gpus_per_node", "array_parallelism", "cpus_per_task"):
            value = getattr(opts, key)
            if value is not None and not (isinstance(value, int) and value >= (key !=
                                                                                "gpus_per_node")):
                raise ConfigError(f"slurm {key}: expected a positive integer, got {value!r}")
        return opts


def minutes(value: int | str) -> int:
    """Slurm's ``--time`` in minutes: an integer, or ``MM``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS`` (Slurm's formats; ``MM:SS`` is read as minutes:seconds)."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m or (isinstance(value, int | float) and value <= 0):
        raise ConfigError(f"slurm time {value!r}: expected minutes or [D-]HH:MM[:SS]")
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        total = days * 1440 + a * 60 + (b or 0) + ((c or 0) > 0)
    elif c is not None:  # HH:MM:SS
        total = a * 60 + b + (c > 0)
    elif b is not None:  # MM:SS
        total = a + (b > 0)
    else:
        total = a
    if total <= 0:
        raise ConfigError(f"slurm time {value!r}: must be at least one minute")
    return total


def slurm_parameters(opts: SlurmOptions, name: str) -> dict[str, Any]:
    """The ``SlurmExecutor.update_parameters`` of a grid: one task per job, the preemption /
    time-out signal two minutes early so the job can requeue itself, and this checkout's
    ``trm_lib`` importable on the node as it is here (the job runs this Python)."""
    params = {"job_name": f"trm-{name}", "partition": opts.partition,
              "gpus_per_node": opts.gpus_per_node, "time": minutes(opts.time),
              "mem": opts.mem, "array_parallelism": opts.array_parallelism,
              "cpus_per_task": opts.cpus_per_task, "ntasks_per_node": 1,
              "signal_delay_s": 120,
              "setup": [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}"
                        "${PYTHONPATH:+:$PYTHONPATH}"]}
    return {k: v for k, v in params.items() if v is not None}


# --------------------------------------------------------------------------------------- jobs
class TrainJob:
    """One run as a submitit job: train ``config`` into ``out_dir``; returns the folder."""

    def __init__(self, config: RunConfig, out_dir: str | Path, threads: int | None = None):
        self.config, self.out_dir, self.threads = config, str(out_dir), threads

    def __call__(self) -> str:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return str(train(self.config, self.out_dir, progress=False, log=_flushed_print).out_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's checkpoint protocol (preemption, time-out): requeue this very job. The
        run's state is its ``last.pt``, written after every epoch, from which it resumes."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(TrainJob(self.config, self.out_dir, self.threads))


def _flushed_print(msg: str) -> None:
    print(msg, flush=True)  # job logs are files: flush so a tail shows the last epoch


@dataclass
class JobRecord:
    """``jobs.json`` entry of one run folder: which job trains it and where its files are."""

    executor: str
    job_id: str | None  # None: waiting in a local launcher's queue (not started yet)
    folder: str  # submitit job folder (:func:`job_folder`)
    run_dir: str
    launcher_pid: int = field(default_factory=os.getpid)

    def paths(self) -> Any:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, self.job_id or "0", 0)

    def log(self) -> Path:
        return self.paths().stderr

    def state(self) -> str:
        """queued / running / done / failed, from the job's files and the scheduler."""
        if self.job_id is None:
            return "queued" if _alive(self.launcher_pid) else "todo"
        from submitit.core.utils import pickle_load

        result = self.paths().result_pickle
        if result.exists():
            try:
                outcome = pickle_load(result)[0]
            except Exception:  # being written: the job is ending
                return "running"
            return "done" if outcome == "success" else "failed"
        if self.executor == "local":
            return "running" if _alive(int(self.job_id)) else "failed"
        return _slurm_state(self.folder, self.job_id)


def _alive(pid: int) -> bool:
    """A process that runs (not a zombie), by pid."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _slurm_state(folder: str, job_id: str) -> str:
    from submitit import SlurmJob

    state = SlurmJob(folder, job_id).state.upper()
    if state in ("PENDING", "REQUEUED", "CONFIGURING", "UNKNOWN", "REQUEUE_HOLD", "SUSPENDED"):
        return "queued"
    if state in ("RUNNING", "COMPLETING", "PREEMPTED", "RESIZING"):
        return "running"
    return "failed"  # COMPLETED without a result, FAILED, TIMEOUT, CANCELLED, OUT_OF_MEMORY ...


def job_folder(root: Path, executor: str, run: str = "") -> Path:
    """submitit's folder for the jobs of a runs folder: ``submitit/<run folder>/`` for a local
    job (its files are named by the job's process id), ``submitit/slurm/`` for a Slurm array
    (named by ``<array id>_<index>``)."""
    return root / "submitit" / (run if executor == "local" else "slurm")


def jobs_file(root: Path) -> Path:
    return root / "submitit" / "jobs.json"


def read_jobs(root: Path) -> dict[str, JobRecord]:
    """``jobs.json`` of a runs folder: run folder name → :class:`JobRecord`."""
    path = jobs_file(root)
    if not path.exists():
        return {}
    return {name: JobRecord(**entry) for name, entry in read_json(path).items()}


def _save_jobs(root: Path, records: dict[str, JobRecord]) -> None:
    """Merge ``records`` into ``jobs.json`` under its lock (two launchers keep each other's)."""
    path = jobs_file(root)
    with file_lock(path.with_name(".jobs.json.lock"), what=f"job table {path}"):
        table = {name: asdict(r) for name, r in read_jobs(root).items()}
        table.update({name: asdict(r) for name, r in records.items()})
        write_json(path, table)


# ------------------------------------------------------------------------------------- launch
@dataclass
class LaunchedGrid(GridResult):
    """:class:`GridResult` of a submitit grid, plus ``failed``: (run folder, log) per failed
    job."""

    failed: list[tuple[str, str]] = field(default_factory=list)


def _executor(kind: str, root: Path, name: str, slurm: SlurmOptions | None, run: str = "",
              gpu: int | None = None) -> Any:
    import submitit

    if kind == "local":
        ex = submitit.LocalExecutor(folder=job_folder(root, "local", run), max_num_timeout=3)
        # submitit hides every GPU from a local job unless it is given some: one each
        gpus = {"gpus_per_node": 1, "visible_gpus": (gpu,)} if gpu is not None else {}
        ex.update_parameters(timeout_min=7 * 24 * 60, signal_delay_s=30, **gpus)
        return ex
    try:
        ex = submitit.SlurmExecutor(folder=job_folder(root, "slurm"), max_num_timeout=3)
    except RuntimeError as err:  # no srun on PATH
        raise ConfigError(f"--executor slurm: {err} (run it on the cluster's login node)") \
            from None
    ex.update_parameters(**slurm_parameters(slurm or SlurmOptions(), name))
    return ex


def local_gpus(config: RunConfig) -> list[int]:
    """The GPUs local jobs of ``config`` share: the ids of ``CUDA_VISIBLE_DEVICES`` when they
    are numbers (submitit takes numbers only), else 0..n-1; none for a CPU run or a machine
    without CUDA."""
    import torch

    if config.train.device == "cpu" or not torch.cuda.is_available():
        return []
    ids = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if ids and all(g.isdigit() for g in ids):
        return [int(g) for g in ids]
    return list(range(torch.cuda.device_count()))


@contextmanager
def _package_on_path() -> Any:
    """Local job processes import this checkout's ``trm_lib`` (they inherit the environment)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [old])])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def launch_grid(spec: str | Path | dict[str, Any], out_csv: str | Path | None = None, *,
                executor: str = "local", grids: list[str] | None = None,
                seeds: list[int] | None = None, proportions: list[float] | None = None,
                methods: list[str] | None = None, overrides: dict[str, Any] | None = None,
                runs_root: str | Path | None = None, jobs: int = 1,
                slurm: dict[str, Any] | None = None, wait: bool = True, log: Log | None = print,
                method_budgets: bool = False, poll_s: float = 2.0) -> LaunchedGrid:
    """Submit every planned run of ``spec`` not yet in ``out_csv`` as a submitit job; with
    ``wait``, record each run's rows in the CSV as its job ends (else: rerun to record them).

    ``executor``: ``local`` (``jobs`` job processes at a time, the CPU threads split between
    them) or ``slurm`` (one job array; ``slurm``: the ``--slurm-*`` values, over the spec's
    ``slurm:`` block). Arguments as :func:`trm_lib.experiments.runner.run_grid`.
    """
    if executor not in ("local", "slurm"):
        raise ConfigError(f"--executor {executor!r}: launch_grid takes local or slurm")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ConfigError(f"launch_grid: jobs must be an integer >= 1, got {jobs!r}")
    spec = load_spec(spec)
    opts = SlurmOptions.merged(spec, slurm or {}) if executor == "slurm" else None
    plan = expand(spec, grids=grids, seeds=seeds, proportions=proportions, methods=methods,
                  overrides=overrides, method_budgets=method_budgets)
    out_csv = Path(out_csv) if out_csv else runs_dir() / f"{spec['name']}.csv"
    root = (Path(runs_root) if runs_root else runs_dir()).absolute()  # jobs may run elsewhere
    say = log or (lambda _msg: None)
    done = run_keys(read_results(out_csv))
    todo = [r for r in plan if (r.grid, r.variant, r.hash) not in done]
    folders: dict[str, list[PlannedRun]] = {}
    for run in todo:
        folders.setdefault(default_out_dir(run.config).name, []).append(run)
    say(f"grid {spec['name']}: {len(plan)} runs planned, {len(plan) - len(todo)} already in "
        f"{out_csv}, {len(todo)} to run ({len(folders)} run folders) with submitit "
        f"({executor})")
    grid = LaunchedGrid(read_results(out_csv), plan, out_csv)

    def record(name: str) -> None:
        rows = [row for run in folders[name] for row in result_rows(run, load_result(root / name))]
        grid.table = merge_results(out_csv, rows)

    known = read_jobs(root)
    waiting: dict[str, JobRecord] = {}
    submit: list[str] = []
    for name, runs in folders.items():
        if finished_result(runs[0].config, root / name) is not None:
            say(f"{name}: finished run found, not submitted")
            record(name)
        elif name in known and known[name].state() in ("queued", "running") \
                and known[name].job_id is not None:
            say(f"{name}: job {known[name].job_id} still {known[name].state()}, not submitted "
                f"again")
            waiting[name] = known[name]
        else:
            submit.append(name)
    if executor == "slurm":
        waiting.update(_submit_array(submit, folders, root, spec["name"], opts, say))
        pending: list[str] = []
    else:
        pending = submit
        _save_jobs(root, {n: JobRecord("local", None, str(job_folder(root, "local", n)),
                                       str(root / n)) for n in pending})
    if not wait:
        if pending:
            raise ConfigError("--no-wait needs --executor slurm (local jobs end with their "
                              "launcher's queue)")
        say(f"{len(waiting)} job(s) submitted or running; follow them with --status, rerun the "
            f"command to record finished runs in {out_csv}")
        return grid
    _wait(grid, waiting, pending, folders, root, jobs, record, say, poll_s)
    return grid


def _submit_array(names: list[str], folders: dict[str, list[PlannedRun]], root: Path,
                  spec_name: str, opts: SlurmOptions | None, say: Log) -> dict[str, JobRecord]:
    """One Slurm job array for the run folders ``names``; their records, saved."""
    if not names:
        return {}
    ex = _executor("slurm", root, spec_name, opts)
    with ex.batch():
        submitted = [ex.submit(TrainJob(folders[n][0].config, root / n)) for n in names]
    records = {n: JobRecord("slurm", str(j.job_id), str(job_folder(root, "slurm")),
                            str(root / n)) for n, j in zip(names, submitted)}
    _save_jobs(root, records)
    say(f"submitted a Slurm job array of {len(names)} run(s): job {submitted[0].job_id}"
        f"{' ...' if len(names) > 1 else ''} (logs in {root / 'submitit'})")
    return records


def _wait(grid: LaunchedGrid, waiting: dict[str, JobRecord], pending: list[str],
          folders: dict[str, list[PlannedRun]], root: Path, jobs: int,
          record: Callable[[str], None], say: Log, poll_s: float) -> None:
    """Start the local runs ``jobs`` at a time, and record every job's run as it ends."""
    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    live: dict[str, Any] = {}  # name -> LocalJob started here (polled, so it is reaped)
    on_gpu: dict[str, int] = {}  # name -> the GPU its local job was given
    total, finished = len(waiting) + len(pending), 0
    while waiting or pending or live:
        while pending and len(live) < jobs:
            name = pending.pop(0)
            gpus = local_gpus(folders[name][0].config)
            gpu = min(gpus, key=lambda g: list(on_gpu.values()).count(g)) if gpus else None
            ex = _executor("local", root, "", None, run=name, gpu=gpu)
            with _package_on_path():
                job = ex.submit(TrainJob(folders[name][0].config, root / name, threads))
            live[name] = job
            if gpu is not None:
                on_gpu[name] = gpu
            _save_jobs(root, {name: JobRecord("local", str(job.job_id),
                                              str(job_folder(root, "local", name)),
                                              str(root / name))})
            say(f"{name}: local job {job.job_id} started")
        ended = [n for n, job in live.items() if job.done()]
        ended += [n for n, r in waiting.items() if r.state() in ("done", "failed")]
        for name in ended:
            live.pop(name, None)
            on_gpu.pop(name, None)
            rec = waiting.pop(name, None) or read_jobs(root)[name]
            finished += 1
            if rec.state() == "done":
                record(name)
                say(f"[{finished}/{total}] {name}: done")
            else:
                grid.failed.append((name, str(rec.log())))
                say(f"[{finished}/{total}] {name}: FAILED, log {rec.log()}")
        if waiting or pending or live:
            time.sleep(poll_s)


# ------------------------------------------------------------------------------------- status
def grid_status(spec: str | Path | dict[str, Any], out_csv: str | Path | None = None, *,
                grids: list[str] | None = None, seeds: list[int] | None = None,
                proportions: list[float] | None = None, methods: list[str] | None = None,
                overrides: dict[str, Any] | None = None, runs_root: str | Path | None = None,
                method_budgets: bool = False) -> pd.DataFrame:
    """One row per planned run: its state (:data:`STATES`), run folder, job and, for a failed
    job, the path of its log. Reads files and asks the scheduler; starts nothing."""
    spec = load_spec(spec)
    plan = expand(spec, grids=grids, seeds=seeds, proportions=proportions, methods=methods,
                  overrides=overrides, method_budgets=method_budgets)
    out_csv = Path(out_csv) if out_csv else runs_dir() / f"{spec['name']}.csv"
    root = (Path(runs_root) if runs_root else runs_dir()).absolute()  # jobs may run elsewhere
    in_csv = run_keys(read_results(out_csv))
    records = read_jobs(root)
    rows = []
    for run in plan:
        name = default_out_dir(run.config).name
        rec = records.get(name)
        if (run.grid, run.variant, run.hash) in in_csv or (root / name / "result.json").exists():
            state = "done"
        else:
            state = rec.state() if rec is not None else "todo"
        rows.append({"grid": run.grid, "method": run.method, "variant": run.variant,
                     "proportion": run.proportion, "seed": run.seed, "status": state,
                     "job": (rec.job_id or "") if rec else "", "run_dir": str(root / name),
                     "log": str(rec.log()) if rec is not None and state == "failed" else ""})
    return pd.DataFrame(rows)


__all__ = ["EXECUTORS", "JobRecord", "LaunchedGrid", "SLURM_KEYS", "STATES", "SlurmOptions",
           "TrainJob", "grid_status", "job_folder", "jobs_file", "launch_grid", "local_gpus", "minutes",
           "read_jobs",
           "slurm_parameters"]
