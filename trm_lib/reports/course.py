"""Course mode: graded exercises in the notebooks, as an nbgrader course.

The notebooks in ``notebooks/`` are the *solution* notebooks. An exercise is two code cells
with nbgrader's metadata: a solution cell (``nbgrader.solution``, ``grade_id`` = the exercise
name) that defines the function, its answer between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; then a locked autograder test cell (``nbgrader.grade``, ``points``) that
calls :func:`check`. ``check`` runs the answer and the library's implementation on edge cases and
random inputs for several seeds, with the library's function out of reach while the answer runs;
it prints ✓ or raises :class:`ExerciseFailed` with the first mismatch (input, expected, got) — the
failure nbgrader's *Validate* and ``autograde`` count.

``python -m trm_lib course`` writes an nbgrader course folder: ``source/<assignment>/`` (one
assignment per notebook, report figures going to a ``reports/`` folder beside each copy),
``nbgrader_config.py``, then runs ``nbgrader generate_assignment`` for each, which writes
``release/`` (the student copies) and ``gradebook.db``. ``python -m trm_lib course --grade
FILE ...`` grades handed-in notebooks in separate processes (:mod:`.grading`) and prints one row
per notebook, one column per exercise.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trm_lib.utils.paths import REPO_ROOT

from .blocking import blocked_while
from .exercises import CHECK_SEEDS, EXERCISES, Exercise, all_cases, compare, passed
from .grading import GradingError, grade, score_table

__all__ = ["EXERCISES", "Exercise", "ExerciseFailed", "build", "check", "exercise_cells", "grade",
           "score_table"]

COURSE_ID = "trm_ml"
#: the parameters-cell line a course copy rewrites: its figures go beside the copy, never into
#: the repository's reports/
_REPORT_DIR = re.compile(r'^report_dir: str = "".*$', re.M)
_LOCAL_REPORT_DIR = ('report_dir: str = "reports"  # figures/ and tables/ go here (a folder '
                     'beside this notebook)')


class ExerciseFailed(AssertionError):
    """An answer that does not match on some case (or is not written yet). In a notebook it
    shows as its message alone, without a traceback."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


def check(name: str, fn: Callable[..., Any], seeds: Sequence[int] = CHECK_SEEDS) -> bool:
    """Run ``fn`` and the library's implementation of exercise ``name`` on the same edge-case
    and random inputs (every seed in ``seeds``); print one ✓ line, or raise
    :class:`ExerciseFailed` with the first mismatch (input, expected, got). While ``fn`` runs,
    the exercise's reference raises :class:`~.blocking.ReferenceBlocked`, also through names the
    answer's module bound to it."""
    if name not in EXERCISES:
        raise KeyError(f"course.check: no exercise {name!r} (known: {', '.join(EXERCISES)})")
    ex = EXERCISES[name]
    cases = all_cases(ex, seeds)
    expected = [ex.expected(**copy.deepcopy(case)) for _, case in cases]
    answers: list[tuple[Any, str | None]] = []
    with blocked_while(ex.blocked, name, [getattr(fn, "__globals__", {})],
                       getattr(fn, "__closure__", None) or ()):
        for _, case in cases:
            try:
                answers.append((fn(**copy.deepcopy(case)), None))
            except NotImplementedError:
                raise ExerciseFailed(f"✗ {name}: not answered yet (replace `raise "
                                     f"NotImplementedError()` with your answer)") from None
            except Exception as err:  # the answer failed on this input
                answers.append((None, f"raised {type(err).__name__}: {err}"))
                break
    for (label, case), exp, (got, error) in zip(cases, expected, answers):
        message = compare(ex, label, case, exp, got, error)
        if message:
            raise ExerciseFailed(message)
    print(passed(ex, len(cases)))
    return True


# ------------------------------------------------------------------------------- course folder
def exercise_cells(nb: Any) -> list[tuple[int, str]]:
    """(cell index, grade_id) of the nbgrader solution cells of a notebook."""
    return [(i, c.metadata["nbgrader"]["grade_id"]) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]


def graded_cells(nb: Any) -> list[tuple[int, str, int]]:
    """(cell index, grade_id, points) of the nbgrader autograder test cells of a notebook."""
    return [(i, c.metadata["nbgrader"]["grade_id"], c.metadata["nbgrader"].get("points", 0))
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]


NBGRADER_CONFIG = '''\
"""nbgrader settings of the TRM-ML course (written by `python -m trm_lib course`).

Run nbgrader's commands from this folder: `nbgrader validate release/A/N.ipynb`,
`nbgrader autograde A`, `nbgrader generate_feedback A`. Grading runs student code.
"""

c = get_config()  # noqa: F821 (provided by nbgrader's config loader)
c.CourseDirectory.course_id = "{course_id}"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"
c.Execute.timeout = {timeout}  # seconds a cell may run (a check runs in a few seconds)
c.Execute.interrupt_on_timeout = True
'''


def nbgrader_env() -> dict[str, str]:
    """The environment nbgrader's commands need: this interpreter's ``bin/`` first on PATH
    (nbgrader runs ``alembic`` from there) and this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                   *filter(None, [env.get("PATH")])])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _nbgrader(args: list[str], cwd: Path) -> None:
    """Run ``nbgrader ARGS`` in the course folder; its log in the error when it fails."""
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd,
                          capture_output=True, text=True, env=nbgrader_env())
    if proc.returncode != 0:
        from trm_lib.utils.errors import UserError

        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise UserError(f"{cwd}: nbgrader {' '.join(args)} failed:\n{tail}")


def build(out: str | os.PathLike | None = None, notebooks: str | os.PathLike | None = None,
          timeout: int = 600) -> dict[str, list[Path]]:
    """Write an nbgrader course folder at ``out`` (default ``course/`` of the repository): the
    solution notebooks under ``source/<name>/<name>.ipynb`` (outputs stripped; ``report_dir``
    defaulting to a folder beside the copy), ``nbgrader_config.py``, and, through ``nbgrader
    generate_assignment``, the student copies under ``release/`` and ``gradebook.db``. Only
    notebooks with exercises become assignments. ``timeout``: nbgrader's limit per cell."""
    import nbformat

    from .notebooks import discover_notebooks, strip_outputs

    out = Path(out) if out is not None else REPO_ROOT / "course"
    if out.exists() and not out.is_dir():
        from trm_lib.utils.errors import UserError

        raise UserError(f"--out {out}: not a folder (the course folder to write)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "nbgrader_config.py").write_text(NBGRADER_CONFIG.format(course_id=COURSE_ID,
                                                                   timeout=int(timeout)))
    written: dict[str, list[Path]] = {"source": [], "release": []}
    for src in discover_notebooks(notebooks):
        nb = nbformat.read(src, as_version=4)
        if not exercise_cells(nb):
            continue
        for cell in nb.cells:
            if "parameters" in cell.metadata.get("tags", []):
                cell.source = _REPORT_DIR.sub(_LOCAL_REPORT_DIR, cell.source)
        assignment = src.stem
        source = out / "source" / assignment / src.name
        source.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, source)
        strip_outputs(source)
        _nbgrader(["generate_assignment", assignment, "--force"], out)
        written["source"].append(source)
        written["release"].append(out / "release" / assignment / src.name)
    return written


# ------------------------------------------------------------------------------------------ CLI
def cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m trm_lib course",
        description="Write an nbgrader course folder (source/, release/ = the student copies, "
                    "nbgrader_config.py, gradebook.db), or grade handed-in notebooks. Grading "
                    "runs the students' code (each notebook in its own process, not a sandbox).")
    ap.add_argument("--out", default=None, help="course folder (default: course/)")
    ap.add_argument("--grade", nargs="+", metavar="NOTEBOOK",
                    help="grade these handed-in notebooks and print one row per notebook")
    ap.add_argument("--time-limit", type=float, default=60.0, metavar="S",
                    help="seconds per exercise when grading (default 60); past it the "
                         "exercise scores 0 and grading goes on")
    args = ap.parse_args(argv)
    if args.grade:
        if not args.time_limit > 0:
            raise GradingError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
        missing = [p for p in args.grade if not Path(p).is_file()]
        if missing:
            raise GradingError(f"--grade: no such notebook {missing[0]}")
        graded = grade(args.grade, limit=args.time_limit)
        print(score_table(graded).to_string())
        failed = graded[~graded["passed"]]
        if len(failed):
            print("\nwhy points were lost:")
            for _, row in failed.iterrows():
                print(f"  {row['notebook']} · {row['exercise']}: {_reason(row['verdict'])}")
        return 0
    written = build(args.out)
    n = sum(len(exercise_cells(_read(p))) for p in written["source"])
    root = written["source"][0].parents[2]
    print(f"{len(written['release'])} assignments ({n} exercises) in {root}: student copies in "
          f"{root / 'release'}, solutions in {root / 'source'}; run nbgrader from {root}")
    return 0


def _reason(verdict: str) -> str:
    """A verdict in one line: a ✗ message's first line and what the answer gave."""
    lines = verdict.splitlines()
    got = [ln.strip() for ln in lines if ln.strip().startswith("got:")]
    return lines[0] + (f" — {' '.join(got[0].split())[:200]}" if got else "")


def _read(path: Path) -> Any:
    import nbformat

    return nbformat.read(path, as_version=4)
