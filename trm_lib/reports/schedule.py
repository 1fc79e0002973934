"""Which notebooks of a report may run side by side, and the prerequisites they share.

On a machine with a few cores the report's notebooks are mostly CPU-bound, yet several of them
leave a core idle for long stretches (a notebook's own imports and figures, 02's single training
process, 05 and 06's short runs). ``python -m trm_lib report --jobs 2`` therefore executes
notebooks that do not depend on each other at the same time, in this order:

1. the shared prerequisites once, in the driver, under the existing cache locks: the world, the
   TinyCLIP weights and the feature stores of the report's dataset and backbone
   (:func:`build_prerequisites`) -- every notebook would otherwise wait on one lock for them;
2. each notebook once every notebook it depends on (:data:`AFTER`) has finished.

The dependencies are the run folders notebooks share: 02's two runs are rows of 03's grid, 05
reads 03's TRM-ML and DualCoOp runs, and 04 repeats 02's default run. A notebook runs after every
notebook whose runs it may reuse: side by side, the second trainer of a shared folder would wait
on the folder's lock with its core idle, and whichever notebook came first would decide how the
run was scored (02 scores the test split every epoch for its curves; 03 reusing that run gets the
same numbers, the other way round 02 would lose its curves). A notebook not listed here (a new
``07_…``) depends on every notebook before it: it runs as the sequential driver would run it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: notebook number → the numbers of the notebooks it must run after (see the module docstring)
AFTER: dict[str, tuple[str, ...]] = {
    "01": (),
    "02": (),
    "03": ("02",),
    "04": ("02", "03"),
    "05": ("02", "03"),
    "06": (),
}

_NUMBER = re.compile(r"^(\d{2})_")


def number(path: str | Path) -> str:
    """``"03"`` for ``03_label_proportions.ipynb`` (or any ``NN_``-prefixed file name)."""
    match = _NUMBER.match(Path(path).name)
    return match.group(1) if match else ""


def dependencies(paths: Sequence[Path]) -> dict[Path, list[Path]]:
    """For each selected notebook, the selected notebooks it must wait for (:data:`AFTER`;
    every earlier one for a notebook not listed). Unselected notebooks are not waited for: a
    ``--only`` run reuses what an earlier report left."""
    out: dict[Path, list[Path]] = {}
    for i, path in enumerate(paths):
        key = number(path)
        if key in AFTER:
            out[path] = [p for p in paths[:i] if number(p) in AFTER[key]]
        else:
            out[path] = list(paths[:i])
    return out


def ready(pending: Sequence[Path], finished: set[Path], deps: dict[Path, list[Path]]
          ) -> list[Path]:
    """The pending notebooks whose dependencies have all finished, in run order."""
    return [p for p in pending if all(d in finished for d in deps[p])]


def credited(changed: Sequence[str], own: str, others: set[str]) -> list[str]:
    """The changed artifact files a notebook numbered ``own`` is credited with when notebooks
    numbered ``others`` ran during the same time: a file named after another running notebook
    (``figures/06_explorer_view.png``) is that one's; any other changed file is credited to
    every notebook that may have written it."""
    keep = []
    for rel in changed:
        key = number(rel.rsplit("/", 1)[-1])
        if key != own and key in others:
            continue
        keep.append(rel)
    return keep


def build_prerequisites(cfg: Any, progress: bool = False) -> float:
    """Build what every notebook of a report reads for the run config ``cfg`` (the report's
    dataset, backbone and weights): the data and its world, the backbone (pre-training TinyCLIP
    if it is the weights asked for), and the train/test feature stores. Returns the seconds it
    took. Each piece is cached under its own lock, so this is what the first notebook would
    have done, done once before notebooks start side by side."""
    from trm_lib.train.session import Session

    start = time.perf_counter()
    Session.build(cfg, progress=progress)
    return time.perf_counter() - start


def run_side_by_side(paths: Sequence[Path], jobs: int, execute: Callable[..., Any],
                     snapshot: Callable[[], dict[str, Any]],
                     changed: Callable[[dict[str, Any], dict[str, Any]], list[str]],
                     finish: Callable[..., tuple[Any, Any]], echo: Callable[..., None]) -> None:
    """Execute ``paths`` in ``jobs`` spawned processes, each notebook once its
    :func:`dependencies` have finished; the report driver passes its own steps in:
    ``execute(path, pool)`` submits one notebook, ``snapshot()`` / ``changed(before, after)``
    list the artifact files, ``finish(path, seconds, artifacts, error)`` records it and returns
    ``(run, failure or None)``. After a failure nothing new starts; the running notebooks end
    and are recorded, then the first failure is raised."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    deps, n = dependencies(paths), len(paths)
    order = {p: i for i, p in enumerate(paths, start=1)}
    pending, finished, failures = list(paths), set(), []
    running: dict[Any, tuple[Path, dict[str, Any], float]] = {}
    beside: dict[Path, set[str]] = {}  # numbers of the notebooks that ran beside each one
    # spawn, not fork: the driver may hold an OpenMP pool (it built the prerequisites)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        while pending or running:
            for src in [] if failures else ready(pending, finished, deps)[:jobs - len(running)]:
                pending.remove(src)
                echo(f"[{order[src]}/{n}] {src.stem} started", flush=True)
                running[execute(src, pool)] = (src, snapshot(), time.perf_counter())
            if not running:
                break  # after a failure: the notebooks left will not start
            numbers = {number(s) for s, _, _ in running.values()}
            for src, _, _ in running.values():
                beside.setdefault(src, set()).update(numbers - {number(src)})
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                src, before, start = running.pop(future)
                seconds = time.perf_counter() - start
                files = credited(changed(before, snapshot()), number(src), beside[src])
                run, failure = finish(src, seconds, files, future.result())
                finished.add(src)
                if failure is not None:
                    failures.append(failure)
                    echo(f"[{order[src]}/{n}] {src.stem} FAILED after {seconds:.1f} s",
                         flush=True)
                else:
                    echo(f"[{order[src]}/{n}] {src.stem} done in {seconds:.1f} s "
                         f"({len(run.artifacts)} artifacts)", flush=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        raise failures[0]


__all__ = ["AFTER", "build_prerequisites", "credited", "dependencies", "number", "ready",
           "run_side_by_side"]
