"""The grader's worker: ``python -m trm_lib.reports.grade_worker WORKDIR``, started by
:func:`trm_lib.reports.grading.grade`, one process per handed-in notebook (a new one after a
time-out). It blocks every exercise's reference, runs the student's exercise cells in an IPython
shell (cwd ``WORKDIR/work``), calls each answer on the grader's inputs and writes what it
returned as plain JSON (``result-K.json``). It decides nothing: the grader compares.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import course
from .blocking import block_references
from .exercises import EXERCISES


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


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m trm_lib.reports.grade_worker WORKDIR (run by the grader)",
              file=sys.stderr)
        return 2
    _worker(Path(argv[0]))
    return 0


if __name__ == "__main__":  # pragma: no cover - the worker process
    sys.exit(_main(sys.argv[1:]))
