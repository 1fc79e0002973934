"""Grading handed-in notebooks: student code in its own process, verdicts computed here.

``grade(paths)`` takes each notebook's exercise cells (nbgrader solution cells whose
``grade_id`` names an exercise of :mod:`trm_lib.reports.exercises`) and runs them in a fresh
Python process of its own (``python -m trm_lib.reports.grading WORKDIR``: an IPython shell, so
magics work). The grader writes the inputs of every case; the worker calls the student's
function on them and writes back what it returned, encoded as plain JSON (never a pickle: the
grader reads nothing that could run code). The grader computes the expected answers itself and
compares, so nothing the student's code does inside its process — appending to a record,
replacing ``course.check``, ``sys.exit(0)``, ``os._exit`` — can forge a ✓ or stop grading.

Each exercise has a time limit (``limit`` seconds, default 60): past it the worker's whole
process group is killed, that exercise scores 0, and a new worker takes the next exercise.
Before any student code runs, the worker puts every exercise's reference out of reach
(:func:`block_references`): the library function an answer is compared with, its
re-exports and the scikit-learn/SciPy function it equals raise :class:`ReferenceBlocked`.

Student code runs with the grader's user rights, in a throwaway working folder; it is not a
sandbox (the README says so).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trm_lib.utils.errors import UserError
from trm_lib.utils.paths import REPO_ROOT

from .exercises import EXERCISES, GRADE_SEEDS, Exercise, all_cases, compare, passed

__all__ = ["GradingError", "ReferenceBlocked", "block_references", "blocked_while", "grade",
           "score_table"]

#: seconds a worker may take to start (imports) before its first exercise's clock starts
STARTUP_S = 180.0
#: the largest result file the grader reads (bytes)
MAX_RESULT = 50_000_000


class GradingError(UserError):
    """A handed-in file that is not a notebook the grader can read."""


class ReferenceBlocked(RuntimeError):
    """Raised by a library function that an answer must not call while it is checked."""


# ---------------------------------------------------------------------------- reference blocks
def _blocker(dotted: str, while_: str) -> Callable[..., Any]:
    def blocked(*_: Any, **__: Any) -> Any:
        raise ReferenceBlocked(f"{dotted} is off limits while {while_}: write it yourself")

    blocked.__name__ = blocked.__qualname__ = dotted.rsplit(".", 1)[-1]
    return blocked


def _resolve(spec: str) -> tuple[Any, str, Any]:
    """``"module:attr"`` or ``"module:Class.attr"`` -> (owner, attr, object)."""
    module, _, qual = spec.partition(":")
    owner: Any = importlib.import_module(module)
    *path, attr = qual.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, attr, owner.__dict__.get(attr, getattr(owner, attr))


def _swaps(specs: Iterable[str], label: str, namespaces: Sequence[dict[str, Any]] = (),
           cells: Sequence[Any] = ()) -> list[tuple[Any, str, Any]]:
    """Every (owner, name, replacement) so that each spec is blocked: the spec itself and every
    module attribute, namespace entry or closure cell bound to the same object."""
    originals: dict[int, tuple[Any, str]] = {}
    swaps: list[tuple[Any, str, Any]] = []
    for spec in specs:
        try:
            owner, attr, obj = _resolve(spec)
        except (ImportError, AttributeError):
            continue  # an optional package that is not installed cannot be called either
        dotted = spec.replace(":", ".")
        originals[id(obj)] = (obj, dotted)
        swaps.append((owner, attr, _blocker(dotted, label)))
    holders = [m.__dict__ for m in list(sys.modules.values()) if hasattr(m, "__dict__")]
    for ns in [*holders, *namespaces]:
        for key, value in list(ns.items()):
            hit = originals.get(id(value))
            if hit is not None and hit[0] is value:
                swaps.append((ns, key, _blocker(hit[1], label)))
    for cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        hit = originals.get(id(value))
        if hit is not None and hit[0] is value:
            swaps.append((cell, "cell_contents", _blocker(hit[1], label)))
    return swaps


def _apply(owner: Any, name: str, value: Any) -> Any:
    if isinstance(owner, types.CellType):
        old = owner.cell_contents
        owner.cell_contents = value
    elif isinstance(owner, dict):
        old = owner.get(name)
        owner[name] = value
    else:
        old = owner.__dict__.get(name)
        setattr(owner, name, value)
    return old


class blocked_while:
    """Context manager: ``specs`` raise :class:`ReferenceBlocked` inside the block, also through
    names in ``namespaces`` (a student's globals) and closure ``cells`` bound to them; restored
    afterwards. The
    in-kernel check uses it; the grader's worker blocks for good (:func:`block_references`)."""

    def __init__(self, specs: Iterable[str], label: str,
                 namespaces: Sequence[dict[str, Any]] = (), cells: Sequence[Any] = ()):
        self.specs, self.label, self.namespaces = list(specs), label, namespaces
        self.cells = cells
        self.undo: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> blocked_while:
        while_ = f"the exercise {self.label} is checked"
        for owner, name, blocker in _swaps(self.specs, while_, self.namespaces, self.cells):
            self.undo.append((owner, name, _apply(owner, name, blocker)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, old in reversed(self.undo):
            _apply(owner, name, old)


def block_references(exercises: Iterable[Exercise]) -> None:
    """For the rest of this process: every reference of ``exercises`` blocked, also in modules
    imported (or reloaded) later, and their source files unreadable (an answer cannot load a
    fresh copy of the module under another name)."""
    specs = [s for e in exercises for s in e.blocked]
    label = "exercises are graded"
    files = set()
    for spec in specs:
        try:
            obj = inspect.unwrap(_resolve(spec)[2])
            source = os.path.realpath(inspect.getfile(obj))
            files.update({source, os.path.realpath(importlib.util.cache_from_source(source))})
        except (ImportError, AttributeError, TypeError, ValueError):
            pass
        module = sys.modules.get(spec.partition(":")[0])
        source = getattr(module, "__file__", None)
        if source:
            files.add(os.path.realpath(source))
            cached = getattr(getattr(module, "__spec__", None), "cached", None)
            if cached:
                files.add(os.path.realpath(cached))

    def audit(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            try:
                path = os.path.realpath(os.fsdecode(args[0]))
            except (TypeError, ValueError):
                return
            if path in files:
                raise PermissionError(f"{path} holds the reference of an exercise and cannot "
                                      f"be read while exercises are graded")

    for owner, name, blocker in _swaps(specs, label):
        _apply(owner, name, blocker)
    sys.addaudithook(audit)


# ------------------------------------------------------------------------------ the worker side
def _encode(value: Any, depth: int = 0) -> Any:
    """An answer as plain JSON: numbers, arrays (dtype, shape, values) and tuples/lists of
    them; anything else becomes its type name (it will not match)."""
    if depth > 4:
        return {"other": "nested too deep"}
    if isinstance(value, bool | int | float | np.number | np.bool_):
        return {"scalar": np.asarray(value).item(), "dtype": np.asarray(value).dtype.str}
    if isinstance(value, tuple | list):
        return {"tuple" if isinstance(value, tuple) else "list":
                [_encode(v, depth + 1) for v in value]}
    if hasattr(value, "__array__") and not isinstance(value, str | bytes | dict):
        try:
            arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        except Exception as err:  # a broken __array__
            return {"other": f"{type(value).__name__} ({type(err).__name__})"}
        if arr.dtype.kind in "biuf":
            return {"array": arr.tolist(), "dtype": arr.dtype.str, "shape": list(arr.shape)}
    return {"other": type(value).__name__}


def _worker(workdir: Path) -> None:
    """Run the exercises of ``workdir/job.pkl`` in order, writing ``result-K.json`` after
    each; the student's cells run in an IPython shell with cwd ``workdir/work``."""
    with open(workdir / "job.pkl", "rb") as fh:
        job = pickle.load(fh)  # written by the grader, read before any student code runs
    import matplotlib

    matplotlib.use("Agg")
    from IPython.core.interactiveshell import InteractiveShell

    from . import course

    # a check left in an answer cell would need the blocked references: here it only answers
    # True (the grader computes every verdict itself)
    course.check = lambda *_a, **_k: True  # type: ignore[assignment]
    block_references(EXERCISES[name] for name in job["block"])
    shell = InteractiveShell.instance()
    (workdir / "ready").write_text("1")
    for k, item in enumerate(job["exercises"]):
        if item is None:
            continue
        out: dict[str, Any] = {"name": item["name"], "cases": []}
        result = shell.run_cell(item["source"], silent=True, store_history=False)
        fn = shell.user_ns.get(item["name"])
        if result.error_in_exec is not None or result.error_before_exec is not None:
            err = result.error_in_exec or result.error_before_exec
            out["cell_error"] = f"{type(err).__name__}: {err}"[:2000]
        elif not callable(fn):
            out["cell_error"] = f"the cell defines no function {item['name']}()"
        else:
            for case in item["cases"]:
                try:
                    out["cases"].append({"value": _encode(fn(**case))})
                except NotImplementedError:
                    out["cases"].append({"error": "NotImplementedError", "unanswered": True})
                    break
                except BaseException as err:  # SystemExit and KeyboardInterrupt too
                    out["cases"].append({"error": f"raised {type(err).__name__}: {err}"[:2000]})
        tmp = workdir / f".result-{k}.json"
        tmp.write_text(json.dumps(out))
        os.replace(tmp, workdir / f"result-{k}.json")


# ------------------------------------------------------------------------------ the grader side
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
        return subprocess.Popen([sys.executable, "-m", "trm_lib.reports.grading", str(workdir)],
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


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m trm_lib.reports.grading WORKDIR (run by the grader)",
              file=sys.stderr)
        return 2
    _worker(Path(argv[0]))
    return 0


if __name__ == "__main__":  # pragma: no cover - the worker process
    sys.exit(_main(sys.argv[1:]))
