"""``python -m trm_lib report``: run the notebooks in order with papermill into ``reports/``.

Each ``notebooks/NN_name.ipynb`` runs (kernel ``python3``, cwd = repository root) into
``reports/NN_name.ipynb`` with the parameters ``report_dir`` (absolute) and ``smoke`` plus any
``-p key=value`` overrides, and writes its figures and tables under ``report_dir/figures`` and
``report_dir/tables``. The run stops at the first failing notebook, naming the notebook and cell.
With ``--jobs 2`` (the default on two or more CPUs) the shared prerequisites are built once and
notebooks that do not depend on each other run side by side (:mod:`trm_lib.reports.schedule`);
the driver ends by printing the report's wall time and each notebook's (``report time: …``).

Provenance needs no cooperation from notebooks: the driver lists the artifact folders before and
after each notebook, and every file created or rewritten in between (atomic writes always make a
new file) is credited to that notebook (side by side, a file named after another notebook running
at the same time, ``NN_…``, is that one's). The record (artifacts, seconds, status, git revision) is
stored in the executed copy's metadata under ``trm_report``, and ``reports/README.md`` is rebuilt
from the executed copies after every notebook, so a ``--only`` run keeps the other entries.

Notebook conventions (checked here and by ``tests/test_reports.py``): exactly one cell tagged
``parameters`` declaring ``smoke`` and ``report_dir``; committed without outputs; ``%matplotlib
inline`` so the figures of :mod:`trm_lib.viz` display in the executed copies (kernels get
``MPLBACKEND=Agg``, which shows nothing by itself).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trm_lib.config.run_config import ConfigError, parse_overrides
from trm_lib.utils.io import atomic_write
from trm_lib.utils.paths import REPO_ROOT, git_revision, notebooks_dir, reports_dir

from .folder import FAILED_SUFFIX, Attempt, failed_copy, recorded_artifacts, report_lock
from .notebooks import (
    META_KEY,
    NOTEBOOK_NAME,
    REQUIRED_PARAMETERS,
    ReportError,
    _read,
    discover_notebooks,
    parameters_of,
    select_notebooks,
    strip_outputs,
)
from .parameters import check_parameters

ARTIFACT_DIRS = ("figures", "tables")
# ipykernel warns on every start that its local TCP sockets are unencrypted; cell errors still
# reach the executed copy, so only the kernel app's own chatter is silenced.
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


class NotebookFailed(ReportError):
    def __init__(self, message: str, notebook: Path, cell: int | None, ename: str, evalue: str):
        super().__init__(message)
        self.notebook, self.cell, self.ename, self.evalue = notebook, cell, ename, evalue


@dataclass
class NotebookRun:
    name: str  # NN_name (no suffix)
    output: Path  # the executed copy
    seconds: float
    status: str  # "ok" | "failed"
    artifacts: list[str] = field(default_factory=list)  # relative to the report folder
    error: str | None = None


# ----------------------------------------------------------------------------------- provenance
def _commit_epoch(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=root, check=True,
                             capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


@contextlib.contextmanager
def kernel_environment(root: Path = REPO_ROOT, jobs: int = 1) -> Iterator[dict[str, str]]:
    """Environment the kernels inherit: headless matplotlib, a fixed hash seed, and
    ``SOURCE_DATE_EPOCH`` (kept if set, else the HEAD commit time) for dated file formats.

    With ``jobs > 1`` notebooks share the CPUs: each kernel gets ``cpus // jobs`` OpenMP threads
    (unless ``OMP_NUM_THREADS`` is set). Two kernels with a full thread pool each on two cores
    spin against each other: measured on 2 cores, one TRM-ML epoch took 38-110 s beside
    notebook 06 against 8.6 s alone."""
    env = {"MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or _commit_epoch(root)
    if epoch:
        env["SOURCE_DATE_EPOCH"] = epoch
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _snapshot(out_dir: Path) -> dict[str, tuple[int, int, int]]:
    snap = {}
    for sub in ARTIFACT_DIRS:
        for p in (out_dir / sub).rglob("*"):
            if p.is_file() and not p.name.startswith("."):  # skip atomic-write temp files
                st = p.stat()
                snap[p.relative_to(out_dir).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return snap


def _record(output: Path, run: NotebookRun, smoke: bool, revision: str) -> None:
    """Store the run's provenance in the executed copy (the one durable record per notebook)."""
    import nbformat

    if not output.exists():  # papermill failed before writing anything
        return
    nb = nbformat.read(output, as_version=4)
    if isinstance(nb.metadata.get("papermill"), dict):  # it ran under a temporary name
        nb.metadata["papermill"]["output_path"] = str(run.output)
    nb.metadata[META_KEY] = {"artifacts": run.artifacts, "seconds": round(run.seconds, 1),
                             "status": run.status, "error": run.error, "smoke": smoke,
                             "git": revision}
    with atomic_write(output) as fh:
        nbformat.write(nb, fh)


def write_index(out_dir: str | os.PathLike) -> Path:
    """Rebuild ``<out_dir>/README.md`` from the executed copies' ``trm_report`` metadata: every
    notebook run (status, seconds, smoke, git revision) and every file under figures/ and tables/
    with the notebook that wrote it."""
    import nbformat

    out_dir = Path(out_dir)
    runs: dict[str, dict[str, Any]] = {}
    for path in sorted(out_dir.glob("*.ipynb")):
        if NOTEBOOK_NAME.match(path.name):
            with contextlib.suppress(Exception):  # a half-written copy from a killed run
                runs[path.stem] = nbformat.read(path, as_version=4).metadata.get(META_KEY) or {}
    owners: dict[str, list[str]] = {}
    for name, meta in runs.items():
        for art in meta.get("artifacts", []):
            owners.setdefault(art, []).append(name)
    lines = ["# Report index", "",
             "Generated by `python -m trm_lib report`; regenerate it, never edit it.", "",
             f"Index written at git revision `{git_revision()}`.", "",
             "| notebook | status | smoke | seconds | git revision |", "| --- | --- | --- | ---: | --- |"]
    for name, meta in runs.items():
        status = meta.get("status", "not recorded")
        if meta.get("error"):
            status += f": {meta['error'].splitlines()[0]}"
        lines.append(f"| [{name}]({name}.ipynb) | {status.replace('|', '/')} | "
                     f"{meta.get('smoke', '')} | {meta.get('seconds', '')} | "
                     f"`{meta.get('git', '')}` |")
    for path in sorted(out_dir.glob(f"*{FAILED_SUFFIX}")):  # kept beside a good copy
        meta = {}
        with contextlib.suppress(Exception):
            meta = nbformat.read(path, as_version=4).metadata.get(META_KEY) or {}
        status = f"last attempt failed: {(meta.get('error') or '').splitlines()[0:1]}"
        lines.append(f"| [{path.name}]({path.name}) | {status.replace('|', '/')} | "
                     f"{meta.get('smoke', '')} | {meta.get('seconds', '')} | "
                     f"`{meta.get('git', '')}` |")
    files = sorted(_snapshot(out_dir))
    for sub in ARTIFACT_DIRS:
        lines += ["", f"## {sub.capitalize()}", ""]
        mine = [f for f in files if f.startswith(sub + "/")]
        if not mine:
            lines.append("(none)")
            continue
        lines += ["| artifact | notebook |", "| --- | --- |"]
        for f in mine:
            who = ", ".join(owners.get(f, [])) or "unknown (not written by a recorded run)"
            lines.append(f"| [{f}]({f}) | {who} |")
    path = out_dir / "README.md"
    with atomic_write(path) as fh:
        fh.write("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------- notebook parameters
#: What ``smoke=True`` means in every notebook: a world and runs small enough that a notebook runs
#: in seconds on a laptop CPU (the test suite regenerates the world in a temporary cache), with
#: random backbone weights, because pre-training TinyCLIP takes minutes. A quarter of the training
#: images is held out so that validation mAP at p = 0.1 still has classes with an observed positive
#: and negative. Numbers from a smoke run check the plumbing only; they mean nothing.
SMOKE = {"n_train": 64, "n_test": 48, "image_size": 128, "epochs": 2, "batch_size": 32,
         "val_fraction": 0.25}


def notebook_overrides(*, smoke: bool, dataset: str = "synthscenes", data_root: str = "",
                       model: str = "TinyCLIP-RN", pretrained: str = "tinyclip",
                       device: str = "auto", seed: int = 0, epochs: int | None = None,
                       overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dotted :class:`~trm_lib.config.run_config.RunConfig` overrides for the parameters every notebook
    shares, validated (a bad value raises :class:`~trm_lib.config.run_config.ConfigError` naming the field).

    ``data_root=""`` means the embedded world (SynthScenes) or the loader's default;
    ``pretrained`` ``"none"``/``""`` means random weights; ``seed`` sets both the training seed
    and the label-mask seed (as :mod:`trm_lib.experiments` does). ``smoke`` applies :data:`SMOKE`:
    a tiny SynthScenes world (or the first images of a real dataset), random weights, at most two
    epochs and pseudo-labels from epoch 2, so that every code path runs. ``overrides`` (dotted
    keys) are applied last. Outside smoke nothing else changes, so a notebook's runs have the
    config hashes of the same runs started from the CLI, and share their run folders.
    """
    from trm_lib.config.run_config import RunConfig
    from trm_lib.datasets import available

    if dataset not in available():
        raise ConfigError(f"dataset {dataset!r} is unknown (known: {', '.join(available())})")
    weights = None if str(pretrained).lower() in ("", "none", "random") else pretrained
    out: dict[str, Any] = {"data.dataset": dataset, "data.root": data_root or None,
                           "backbone.model": model, "backbone.pretrained": weights,
                           "train.device": device, "train.seed": seed, "data.mask_seed": seed,
                           "train.progress": False}
    if epochs is not None:
        out["train.epochs"] = epochs
    if smoke:
        out.update({"data.max_train": SMOKE["n_train"], "data.max_test": SMOKE["n_test"],
                    "backbone.pretrained": None, "backbone.image_size": SMOKE["image_size"],
                    "train.epochs": min(SMOKE["epochs"], RunConfig().train.epochs
                                        if epochs is None else epochs),
                    "train.batch_size": SMOKE["batch_size"], "method.pseudo_warmup": 1,
                    "data.val_fraction": SMOKE["val_fraction"]})
        if dataset == "synthscenes" and not data_root:
            out["data.options"] = {k: SMOKE[k] for k in ("n_train", "n_test", "image_size")}
    out.update(overrides or {})
    RunConfig().with_overrides(out)  # validation only: raises naming the field
    return out


# ------------------------------------------------------------------------------------------- run
def _execute(src: Path, output: Path, params: dict[str, Any], cwd: str, log_output: bool
             ) -> dict[str, Any] | None:
    """Run one notebook with papermill; None if it succeeded, else what :func:`_failure`
    needs (plain values: this also runs in a worker process of ``--jobs``)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    try:
        pm.execute_notebook(src, output, parameters=params, kernel_name="python3", cwd=cwd,
                            progress_bar=False, log_output=log_output,
                            extra_arguments=KERNEL_ARGS)
    except PapermillExecutionError as err:
        return {"ename": err.ename, "evalue": err.evalue, "cell_index": err.cell_index,
                "exec_count": err.exec_count, "source": err.source}
    except Exception as err:  # any failure stops the run; reported by the caller
        return {"ename": type(err).__name__, "evalue": str(err)}
    return None


def _failure(err: dict[str, Any], source: Path, output: Path) -> NotebookFailed:
    """Name the notebook and the failing cell by its 1-based position in the *source* notebook:
    papermill's ``cell_index`` also counts the injected-parameters cell, which papermill puts
    right after the ``parameters`` cell (we always inject: ``report_dir`` is required)."""
    ename, evalue = err["ename"], err["evalue"]
    if "cell_index" not in err:
        return NotebookFailed(f"{source}: {ename}: {evalue}\n  executed copy (if any): "
                              f"{output}", source, None, ename, evalue)
    nb = _read(source)
    params_at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = err["cell_index"] - (err["cell_index"] > params_at) + 1
    first = next(iter((err["source"] or "").strip().splitlines()), "")
    msg = (f"{source}: cell {cell} (In [{err['exec_count']}]: {first}) raised {ename}: "
           f"{evalue}\n  executed copy with the traceback: {output}")
    return NotebookFailed(msg, source, cell, ename, evalue)


@dataclass
class _Plan:
    """What :func:`run_notebooks` checked, and the parameters each notebook receives."""
    paths: list[Path]
    out: Path
    params: dict[Path, dict[str, Any]]
    cwd: str
    smoke: bool
    revision: str


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a spawned process used once, its result or its exception returned here:
    what imports torch (the method registry, feature extraction) runs there, so the driver,
    which lives as long as the report, never holds torch (~0.6 GB) beside the kernels. The
    process exits after its one call, also when the driver is killed meanwhile."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        return pool.submit(fn, *args).result()


def _check_all(items: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    for path, values in items:
        check_parameters(path, values)


def _plan(notebooks: str | os.PathLike | None, out_dir: str | os.PathLike | None,
          only: Sequence[str] | None, smoke: bool, parameters: dict[str, Any] | None,
          cwd: str | os.PathLike | None) -> _Plan:
    paths = select_notebooks(discover_notebooks(notebooks), only)
    if not paths:
        raise ReportError(f"{notebooks or notebooks_dir()}: no notebooks to run")
    out = Path(out_dir if out_dir is not None else reports_dir()).resolve()
    overrides = dict(parameters or {})
    fixed = {"report_dir": "--out", "smoke": "--smoke"}.items()
    for name, option in ((n, o) for n, o in fixed if n in overrides):  # would write elsewhere
        raise ReportError(f"-p {name}: set by {option}, not as a parameter")
    declared = {p: parameters_of(p) for p in paths}
    for p, params in declared.items():
        missing = [k for k in REQUIRED_PARAMETERS if k not in params]
        if missing:
            raise ReportError(f"{p}: the parameters cell must declare {missing}")
    unknown = sorted(set(overrides) - set().union(*map(set, declared.values())))
    if unknown:
        raise ReportError(f"-p {', '.join(unknown)}: declared by none of "
                          f"{[p.name for p in paths]}")
    values = {"report_dir": str(out), "smoke": smoke, **overrides}
    params = {p: {k: v for k, v in values.items() if k in declared[p]} for p in paths}
    # a bad value is one error now, not a failed cell minutes later (checked in a child: some
    # checks read the method registry, which imports torch)
    in_child(_check_all, [(p, params[p]) for p in paths])
    return _Plan(paths, out, params, str(cwd if cwd is not None else REPO_ROOT), smoke,
                 git_revision())


def _finish(plan: _Plan, src: Path, seconds: float, artifacts: list[str],
            error: dict[str, Any] | None, attempt: Attempt) -> tuple[NotebookRun,
                                                                 NotebookFailed | None]:
    """Record one finished notebook (the executed copy's metadata, the index); a success
    replaces the executed copy, a failure rolls its files back (:mod:`.folder`)."""
    output = plan.out / src.name
    run = NotebookRun(src.stem, output, seconds, "failed" if error else "ok", sorted(artifacts))
    failure = None
    if error:
        run.output = failed_copy(output) if output.exists() else output
        failure = _failure(error, src, run.output)
        run.error, run.artifacts = f"{failure.ename}: {failure.evalue}", []
    _record(attempt.scratch, run, plan.smoke, plan.revision)
    if failure is None:
        attempt.commit(run.artifacts, recorded_artifacts(output, META_KEY))
    else:
        attempt.roll_back(sorted(artifacts))
    write_index(plan.out)
    return run, failure


def _changed(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]
             ) -> list[str]:
    return sorted(k for k, v in after.items() if before.get(k) != v)


def run_notebooks(notebooks: str | os.PathLike | None = None,
                  out_dir: str | os.PathLike | None = None,
                  only: Sequence[str] | None = None, smoke: bool = False,
                  parameters: dict[str, Any] | None = None,
                  cwd: str | os.PathLike | None = None, log_output: bool = False,
                  echo: Callable[..., None] = print, jobs: int = 1) -> list[NotebookRun]:
    """Run the notebooks of ``notebooks`` (default ``notebooks/``) into ``out_dir`` (default
    ``reports/``); see the module docstring. Raises :class:`NotebookFailed` at the first
    failure, after recording it in the index.

    ``jobs=1`` runs them one after the other in order; ``jobs > 1`` builds their shared
    prerequisites once, then runs up to ``jobs`` notebooks that do not depend on each other at
    once (:mod:`trm_lib.reports.schedule`), with the same executed copies, figures and tables.
    Only the project's own ``notebooks/`` run side by side (their dependencies are known);
    another folder runs one by one whatever ``jobs`` says.

    Each notebook receives only the parameters it declares; an override that no selected
    notebook declares is an error before anything runs (a typo would otherwise be ignored).
    """
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ReportError(f"--jobs must be an integer >= 1, got {jobs!r}")
    plan = _plan(notebooks, out_dir, only, smoke, parameters, cwd)
    with report_lock(plan.out, lambda line: echo(line, flush=True)):
        return _run_locked(plan, parameters, log_output, echo, jobs)


def _run_locked(plan: _Plan, parameters: dict[str, Any] | None, log_output: bool,
                echo: Callable[..., None], jobs: int) -> list[NotebookRun]:
    """:func:`run_notebooks` while holding the report folder's lock."""
    for sub in ARTIFACT_DIRS:
        (plan.out / sub).mkdir(parents=True, exist_ok=True)
    runs: list[NotebookRun] = []
    attempts: dict[Path, Attempt] = {}

    def execute(src: Path, pool: Any = None) -> Any:
        attempts[src] = Attempt(plan.out, src.stem, ARTIFACT_DIRS)
        args = (src, attempts[src].scratch, plan.params[src], plan.cwd, log_output)
        return pool.submit(_execute, *args) if pool is not None else _execute(*args)

    def finish(src: Path, seconds: float, artifacts: list[str], error: dict[str, Any] | None
               ) -> tuple[NotebookRun, NotebookFailed | None]:
        run, failure = _finish(plan, src, seconds, artifacts, error, attempts.pop(src))
        runs.append(run)
        return run, failure

    # side by side only for this project's notebooks: the schedule knows which needs which
    ours = plan.paths[0].parent.resolve() == notebooks_dir().resolve()
    side_by_side = jobs > 1 and len(plan.paths) > 1 and ours
    if side_by_side:  # in this process, with all its threads, before the kernels split them
        _prerequisites(plan, dict(parameters or {}), echo)
    with kernel_environment(jobs=jobs if side_by_side else 1):
        if side_by_side:
            from .schedule import run_side_by_side

            run_side_by_side(plan.paths, jobs, execute, lambda: _snapshot(plan.out), _changed,
                             finish, echo)
        else:
            _run_sequential(plan, execute, finish, log_output, echo)
    echo(f"index: {plan.out / 'README.md'}", flush=True)
    order = {p.stem: i for i, p in enumerate(plan.paths)}
    return sorted(runs, key=lambda r: order[r.name])


def _run_sequential(plan: _Plan, execute: Callable[..., Any], finish: Callable[..., Any],
                    log_output: bool, echo: Callable[..., None]) -> None:
    n = len(plan.paths)
    for i, src in enumerate(plan.paths, start=1):
        echo(f"[{i}/{n}] {src.stem} ...", end="" if not log_output else "\n", flush=True)
        before, start = _snapshot(plan.out), time.perf_counter()
        error = execute(src)
        seconds = time.perf_counter() - start
        run, failure = finish(src, seconds, _changed(before, _snapshot(plan.out)), error)
        if failure is not None:
            echo(f" FAILED after {seconds:.1f} s", flush=True)
            raise failure
        echo(f" done in {seconds:.1f} s ({len(run.artifacts)} artifacts)", flush=True)


def _prerequisites(plan: _Plan, overrides: dict[str, Any], echo: Callable[..., None]) -> None:
    """The world, backbone weights and feature stores of the report's shared parameters, built
    once before notebooks start side by side, in a child process: the driver itself never
    imports torch, so it does not carry torch and the extraction's buffers (~0.9 GB) beside the
    kernels for the rest of the report (issue 28's memory bound)."""
    from trm_lib.config.run_config import RunConfig

    from .schedule import build_prerequisites

    shared = ("dataset", "data_root", "model", "pretrained", "device")
    values = {k: overrides[k] for k in shared if k in overrides}
    cfg = RunConfig().with_overrides(notebook_overrides(smoke=plan.smoke, **values))
    echo("[prerequisites] world, backbone weights, feature stores ...", end="", flush=True)
    echo(f" done in {in_child(build_prerequisites, cfg):.1f} s", flush=True)


def timing_summary(runs: Sequence[NotebookRun], total: float) -> str:
    """One line: the report's wall time and each notebook's, e.g. ``report time: 412.3 s wall
    (01 18.2 s, 02 150.1 s, ...)``; with ``--jobs`` notebooks overlap, so theirs add up to more."""
    parts = ", ".join(f"{r.name[:2]} {r.seconds:.1f} s" for r in runs)
    return f"report time: {total:.1f} s wall ({parts})"


# ------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m trm_lib report",
        description="Run notebooks/NN_*.ipynb in order with papermill into reports/ "
                    "(executed copies, figures/, tables/, README.md index).")
    ap.add_argument("--smoke", action="store_true", help="pass smoke=True (tiny, fast runs)")
    ap.add_argument("--only", default="", help="comma-separated numbers or names, e.g. 03,05")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="parameter override (YAML value), repeatable")
    ap.add_argument("--out", default=None, help="report folder (default: reports/)")
    ap.add_argument("--notebooks", default=None, help="notebooks folder (default: notebooks/)")
    ap.add_argument("--log-output", action="store_true",
                    help="stream cell outputs to stderr (CI logs)")
    ap.add_argument("--list", action="store_true",
                    help="list the notebooks and their parameters, run nothing")
    ap.add_argument("--strip", action="store_true",
                    help="strip outputs from the notebooks in place, run nothing")
    ap.add_argument("--browser", action="store_true",
                    help="then open notebook 06 in JupyterLab in headless Chromium and save "
                         "screenshots of the live explorer to figures/")
    ap.add_argument("--jobs", type=int, default=0,
                    help="notebooks run at once, after their shared prerequisites, respecting "
                         "which needs which (0: auto, 2 with 2 or more CPUs; 1: one by one)")
    return ap


def auto_jobs() -> int:
    """``--jobs 0``: two notebooks at once wherever there are two CPUs to share."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def executed_notebooks(out_dir: str | os.PathLike) -> dict[Path, dict[str, Any]]:
    """The executed copies of a report folder with their run records (``trm_report``)."""
    import nbformat

    runs: dict[Path, dict[str, Any]] = {}
    for path in sorted(Path(out_dir).glob("*.ipynb")):
        if NOTEBOOK_NAME.match(path.name):
            try:
                runs[path] = nbformat.read(path, as_version=4).metadata.get(META_KEY) or {}
            except Exception:  # a half-written copy from a killed run: listed, no record
                runs[path] = {}
    return runs


def write_book(out_dir: str | os.PathLike | None = None) -> Path:
    """``<out_dir>/html/``: every executed notebook as HTML and an index of them, the figures
    and the tables (:func:`trm_lib.reports.book.write_book`); returns the index."""
    from .book import write_book as _write

    out = Path(out_dir if out_dir is not None else reports_dir()).resolve()
    return _write(out, executed_notebooks(out), ARTIFACT_DIRS)


def browser_screenshots(out_dir: str | os.PathLike | None, smoke: bool,
                        parameters: dict[str, Any] | None = None) -> list[Path]:
    """Screenshots of notebook 06's explorer as a user sees it, into ``<out_dir>/figures``
    (:func:`trm_lib.reports.browser.explorer_screenshots`, with the report's parameters, so it reads
    back the runs the report's own 06 run trained); the index is rebuilt to list them."""
    from . import browser

    reason = browser.missing()
    if reason:
        raise ReportError(f"--browser: {reason}")
    out = Path(out_dir if out_dir is not None else reports_dir()).resolve()
    declared = parameters_of(notebooks_dir() / "06_explorer.ipynb")
    values = {"report_dir": str(out), "smoke": smoke, **(parameters or {})}
    shots = browser.explorer_screenshots(out / "figures",
                                         {k: v for k, v in values.items() if k in declared})
    write_index(out)
    return shots


def cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        paths = discover_notebooks(args.notebooks)
        if args.strip:
            for p in paths:
                print(f"{p}: {'stripped' if strip_outputs(p) else 'clean'}")
            return 0
        if args.list:
            for p in paths:
                print(p.name)
                for name, info in parameters_of(p).items():
                    print(f"  {name}: {info['type']} = {info['default']}  {info['help']}")
            return 0
        if args.log_output:
            import logging

            logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        parameters = parse_overrides(args.param)
        if args.jobs < 0:
            raise ReportError(f"--jobs must be >= 0 (0: auto), got {args.jobs}")
        runs = run_notebooks(args.notebooks, args.out,
                             only=args.only.split(",") if args.only else None,
                             smoke=args.smoke, parameters=parameters, log_output=args.log_output,
                             jobs=args.jobs or auto_jobs())
        if args.browser:
            browser_screenshots(args.out, args.smoke, parameters)
        print(f"html book: {write_book(args.out)}")
        print(timing_summary(runs, time.perf_counter() - start), flush=True)
    except NotebookFailed as err:  # the notebook's fault, not the command line's: status 1
        print(f"\nreport: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
