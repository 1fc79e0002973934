"""Grading handed-in notebooks: student code in its own process, verdicts computed here.

``grade(paths)`` takes each notebook's exercise cells (nbgrader solution cells whose
``grade_id`` names an exercise of :mod:`trm_lib.reports.exercises`) and runs them in a fresh
Python process of its own (:mod:`trm_lib.reports.grade_worker`: an IPython shell, so magics
work). The grader writes the inputs of every case; the worker calls the student's
function on them and writes back what it returned, encoded as plain JSON (never a pickle: the
grader reads nothing that could run code). The grader computes the expected answers itself and
compares, so nothing the student's code does inside its process — appending to a record,
replacing ``course.check``, ``sys.exit(0)``, ``os._exit`` — can forge a ✓ or stop grading.

Each exercise has a time limit (``limit`` seconds, default 60): past it the worker's whole
process group is killed, that exercise scores 0, and a new worker takes the next exercise.
Before any student code runs, the worker puts every exercise's reference out of reach
(:func:`trm_lib.reports.blocking.block_references`): the library function an answer is compared with, its
re-exports and the scikit-learn/SciPy function it equals raise :class:`ReferenceBlocked`.

Student code runs with the grader's user rights, in a throwaway working folder; it is not a
sandbox (the README says so).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trm_lib.utils.errors import UserError
from trm_lib.utils.paths import REPO_ROOT

from .exercises import EXERCISES, GRADE_SEEDS, Exercise, all_cases, compare, passed

__all__ = ["GradingError", "exercise_sources", "grade", "read_notebook", "score_table"]

#: seconds a worker may take to start (imports) before its first exercise's clock starts
STARTUP_S = 180.0
#: the largest result file the grader reads (bytes)
MAX_RESULT = 50_000_000


class GradingError(UserError):
    """A handed-in file that is not a notebook the grader can read."""


def _decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    if "scalar" in value:
        return np.asarray(value["scalar"], dtype=np.dtype(value["dtype"])).item()
    if "tuple" in value:
        return tuple(_decode(v) for v in value["tuple"])
    if "list" in value:
        return [_decode(v) for v in value["list"]]
    if "array" in value:
        dtype = np.dtype(value["dtype"])
        if dtype.kind not in "biuf":
            return None
        return np.asarray(value["array"], dtype=dtype).reshape(value["shape"])
    return f"<{value.get('other', 'unreadable')}>"


def read_notebook(path: Path) -> Any:
    """The notebook at ``path``, or :class:`GradingError` naming the file and the problem."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
        cells = nb.get("cells")
        if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
            raise ValueError("its 'cells' is not a list of cells")
        for c in cells:
            if not isinstance(c.get("source", ""), str):
                raise ValueError("a cell's source is not text")
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GradingError(f"{path}: not a notebook the grader can read ({msg[:200]})") from None
    return nb


def exercise_sources(nb: Any) -> dict[str, str]:
    """grade_id -> source of the notebook's solution cells that are course exercises."""
    found: dict[str, str] = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if (cell.get("cell_type") == "code" and isinstance(meta, dict) and meta.get("solution")
                and meta.get("grade_id") in EXERCISES):
            found.setdefault(meta["grade_id"], cell.source)
    return found


def _expected_for(ex: Exercise, seeds: Sequence[int]) -> tuple[list, list]:
    cases = all_cases(ex, seeds)
    expected = [ex.expected(**copy.deepcopy(case)) for _, case in cases]
    return cases, expected


def _spawn(workdir: Path) -> subprocess.Popen:
    (workdir / "work").mkdir(exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update({"MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    log = open(workdir / "worker.log", "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "trm_lib.reports.grade_worker", str(workdir)],
                                cwd=workdir / "work", env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _kill(proc: subprocess.Popen) -> None:
    with_group = getattr(os, "killpg", None)
    try:
        if with_group is not None:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _run_notebook(names: list[str], sources: dict[str, str], case_inputs: dict[str, list],
                  limit: float) -> dict[str, dict[str, Any] | str]:
    """Run the exercises ``names`` in worker processes; per exercise the decoded result dict,
    or a string saying why there is none (time limit, process ended)."""
    workdir = Path(tempfile.mkdtemp(prefix="trm-grade-"))
    results: dict[str, dict[str, Any] | str] = {}
    try:
        start = 0
        while start < len(names):
            job = {"block": list(EXERCISES), "exercises": [
                None if k < start else {"name": n, "source": sources[n],
                                        "cases": [c for _, c in case_inputs[n]]}
                for k, n in enumerate(names)]}
            for stale in workdir.glob("result-*.json"):
                stale.unlink()
            (workdir / "ready").unlink(missing_ok=True)
            with open(workdir / "job.pkl", "wb") as fh:
                pickle.dump(job, fh)
            proc = _spawn(workdir)
            deadline = time.monotonic() + STARTUP_S
            while not (workdir / "ready").exists() and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            k = start
            clock = time.monotonic()
            while k < len(names):
                file = workdir / f"result-{k}.json"
                if file.exists():
                    results[names[k]] = _read_result(file)
                    k, clock = k + 1, time.monotonic()
                    continue
                if proc.poll() is not None:
                    if file.exists():
                        continue
                    tail = _log_tail(workdir / "worker.log")
                    results[names[k]] = (f"the process running it ended (exit code "
                                         f"{proc.returncode}) before the checks finished{tail}")
                    k += 1
                    break
                if time.monotonic() - clock > limit:
                    _kill(proc)
                    results[names[k]] = f"time limit exceeded ({limit:g} s): scored 0"
                    k += 1
                    break
                time.sleep(0.02)
            if proc.poll() is None:
                _kill(proc)
            start = k
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _log_tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f": {lines[-1][:300]}" if lines else ""


def _read_result(file: Path) -> dict[str, Any] | str:
    if file.stat().st_size > MAX_RESULT:
        return f"its answers are too large ({file.stat().st_size} bytes)"
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        return f"unreadable answers ({type(err).__name__})"
    return data if isinstance(data, dict) else "unreadable answers"


def _verdict(ex: Exercise, cases: list, expected: list, result: dict[str, Any] | str | None
             ) -> tuple[bool, str]:
    if result is None:
        return False, "no exercise cell for it in this notebook"
    if isinstance(result, str):
        return False, result
    if result.get("cell_error"):
        return False, f"the exercise cell failed: {result['cell_error']}"
    got = result.get("cases")
    if not isinstance(got, list):
        return False, "unreadable answers"
    for k, ((label, case), exp) in enumerate(zip(cases, expected)):
        entry = got[k] if k < len(got) and isinstance(got[k], dict) else {}
        if entry.get("unanswered"):
            return False, "not answered (NotImplementedError)"
        if not entry:
            return False, f"✗ {ex.name}: no answer for case '{label}'"
        message = compare(ex, label, case, exp, _decode(entry.get("value")),
                          error=entry.get("error") or None)
        if message:
            return False, message
    return True, passed(ex, len(cases))


def grade(paths: Sequence[str | os.PathLike], limit: float = 60.0,
          seeds: Sequence[int] = GRADE_SEEDS, echo: Callable[[str], Any] | None = None) -> Any:
    """Grade handed-in notebooks: one row per (notebook, exercise) with ``points``,
    ``max_points``, ``passed`` and the ``verdict`` (its full ✗ message on a failure). The
    exercises of a notebook are those of the course notebooks its exercise cells come from; a
    missing cell scores 0. Every file is read first: one that is not a notebook raises
    :class:`GradingError` before anything runs."""
    import pandas as pd

    notebooks = [(str(p), read_notebook(Path(p))) for p in paths]
    expected: dict[str, tuple[list, list]] = {}
    rows = []
    for label, nb in notebooks:
        sources = exercise_sources(nb)
        homes = {EXERCISES[n].notebook for n in sources}
        names = [n for n, ex in EXERCISES.items() if ex.notebook in homes]
        for n in names:
            if n not in expected:
                expected[n] = _expected_for(EXERCISES[n], seeds)
        present = [n for n in names if n in sources]
        results = _run_notebook(present, sources, {n: expected[n][0] for n in present}, limit)
        for n in names:
            ex = EXERCISES[n]
            ok, verdict = _verdict(ex, *expected[n], results.get(n))
            rows.append({"notebook": label, "exercise": n, "points": ex.points if ok else 0,
                         "max_points": ex.points, "passed": ok, "verdict": verdict})
            if echo is not None:
                echo(f"{label} · {n}: {verdict.splitlines()[0]}")
        if not names:
            rows.append({"notebook": label, "exercise": "(none)", "points": 0, "max_points": 0,
                         "passed": False, "verdict": "no course exercise cell in this notebook"})
    return pd.DataFrame(rows, columns=["notebook", "exercise", "points", "max_points", "passed",
                                       "verdict"])


def score_table(graded: Any) -> Any:
    """One row per notebook, one column per exercise (``points/max``, ``—`` where the notebook
    has no such exercise), and the total."""
    import pandas as pd

    cols = [n for n in EXERCISES if n in set(graded["exercise"])]
    table = pd.DataFrame(index=pd.Index(list(dict.fromkeys(graded["notebook"])), name="notebook"),
                         columns=[*cols, "total"], dtype=object).fillna("—")
    for nb, g in graded.groupby("notebook", sort=False):
        for _, r in g.iterrows():
            if r["exercise"] in cols:
                table.loc[nb, r["exercise"]] = f"{r['points']}/{r['max_points']}"
        table.loc[nb, "total"] = f"{g['points'].sum()}/{g['max_points'].sum()}"
    return table
