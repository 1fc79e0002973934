"""Course mode: graded exercises in the notebooks, each checked against the library.

The notebooks in ``notebooks/`` are the *solution* notebooks. An exercise is one code cell
marked with nbgrader's conventions (cell metadata ``nbgrader.solution = true`` with a
``grade_id``, the answer between ``### BEGIN SOLUTION`` and ``### END SOLUTION``). The cell
defines a function and ends with ``course.check(name, fn)``, which runs the function and the
library's implementation of the same idea on edge-case and random inputs and prints one pass
line or the first mismatch (input, expected, got). Exercise cells are self-contained (numpy and
``trm_lib`` only), so a cell can be graded on its own.

``python -m trm_lib course`` writes ``course/solutions/`` (the notebooks as they are) and
``course/student/`` (nbgrader's ``ClearSolutions`` preprocessor through nbconvert: every answer
becomes ``raise NotImplementedError()``); ``python -m trm_lib course --grade FILE ...`` runs the
exercise cells of handed-in notebooks and prints a score table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trm_lib.utils.paths import REPO_ROOT

__all__ = ["EXERCISES", "Exercise", "build", "check", "exercise_cells", "grade"]

Case = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Exercise:
    """One exercise: the library function it is checked against and its test inputs."""

    name: str
    notebook: str  # the solution notebook that holds it
    reference: str  # dotted name of the library's implementation (shown in messages)
    expected: Callable[..., Any]  # the same inputs as the student's function -> the answer
    cases: Callable[[np.random.Generator], list[Case]]  # edge cases first, then random ones
    rtol: float = 1e-5
    atol: float = 1e-6


# -------------------------------------------------------------------------------- references
def _torch(x: Any) -> Any:
    import torch

    return torch.as_tensor(np.asarray(x))


def _mask_expected(Y: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    from trm_lib.datasets.labels import keep_proportion

    return keep_proportion(Y, p, rng)


def _mask_cases(rng: np.random.Generator) -> list[Case]:
    def y(n: int, c: int) -> np.ndarray:
        return np.where(rng.random((n, c)) < 0.3, 1, -1).astype(np.int8)

    return [("p = 1 keeps every entry", {"Y": y(3, 4), "p": 1.0, "rng": np.random.default_rng(0)}),
            ("tiny p keeps (almost) nothing",
             {"Y": y(4, 3), "p": 1e-9, "rng": np.random.default_rng(1)}),
            ("one image", {"Y": y(1, 5), "p": 0.5, "rng": np.random.default_rng(2)}),
            *[(f"random {k}", {"Y": y(int(rng.integers(2, 30)), int(rng.integers(1, 12))),
                               "p": float(rng.uniform(0.05, 0.95)),
                               "rng": np.random.default_rng(int(rng.integers(1 << 30)))})
              for k in range(4)]]


def _map_expected(scores: np.ndarray, targets: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    from trm_lib.core.metrics import mean_average_precision

    value = mean_average_precision(scores, targets).value
    cols = [c for c in range(targets.shape[1]) if targets[:, c].any()]
    sk = (float(np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in cols]))
          if cols else math.nan)
    if not (math.isnan(value) and math.isnan(sk)) and not math.isclose(value, sk, abs_tol=1e-12):
        raise AssertionError(f"trm_lib's mAP {value} differs from scikit-learn's {sk}")
    return value


def _map_cases(rng: np.random.Generator) -> list[Case]:
    def t(n: int, c: int, rate: float = 0.3) -> np.ndarray:
        return (rng.random((n, c)) < rate).astype(np.int8)

    ties = np.round(rng.random((12, 4)), 1)
    empty = t(8, 3)
    empty[:, 1] = 0
    return [("perfect ranking", {"scores": np.array([[0.9], [0.8], [0.1]]),
                                 "targets": np.array([[1], [1], [0]])}),
            ("worst ranking", {"scores": np.array([[0.1], [0.8], [0.9]]),
                               "targets": np.array([[1], [0], [0]])}),
            ("tied scores", {"scores": ties, "targets": t(12, 4, 0.4)}),
            ("a class without positives is left out", {"scores": rng.random((8, 3)),
                                                       "targets": empty}),
            ("every image positive", {"scores": rng.random((5, 2)),
                                      "targets": np.ones((5, 2), np.int8)}),
            *[(f"random {k}", {"scores": rng.normal(size=(n, c)), "targets": t(n, c)})
              for k, (n, c) in enumerate([(20, 5), (50, 10), (7, 20)])]]


def _asl_expected(logits: np.ndarray, targets: np.ndarray, gamma_pos: float = 1.0,
                  gamma_neg: float = 2.0, clip: float = 0.05) -> float:
    from trm_lib.core.losses import partial_asl

    return float(partial_asl(_torch(logits), _torch(targets), gamma_pos, gamma_neg, clip))


def _labels(rng: np.random.Generator, shape: tuple[int, int], known: float = 0.5) -> np.ndarray:
    y = np.where(rng.random(shape) < 0.3, 1, -1)
    return np.where(rng.random(shape) < known, y, 0).astype(np.int8)


def _asl_cases(rng: np.random.Generator) -> list[Case]:
    return [("every entry unknown: zero loss", {"logits": rng.normal(size=(3, 4)),
                                                "targets": np.zeros((3, 4), np.int8)}),
            ("no focusing, no clip: plain BCE on observed entries",
             {"logits": rng.normal(size=(4, 3)), "targets": _labels(rng, (4, 3)),
              "gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0}),
            ("easy negatives below the clip cost nothing",
             {"logits": np.full((2, 3), -6.0), "targets": -np.ones((2, 3), np.int8)}),
            ("confident logits", {"logits": np.array([[30.0, -30.0, 12.0, -12.0]]),
                                  "targets": np.array([[1, 1, -1, -1]], np.int8)}),
            *[(f"random {k}", {"logits": 3 * rng.normal(size=(n, c)),
                               "targets": _labels(rng, (n, c)),
                               "gamma_pos": float(rng.choice([0.0, 1.0])),
                               "gamma_neg": float(rng.choice([1.0, 2.0, 4.0])),
                               "clip": float(rng.choice([0.0, 0.05, 0.2]))})
              for k, (n, c) in enumerate([(8, 5), (16, 20), (5, 2)])]]


def _logits_expected(feats: np.ndarray, text: np.ndarray, scale: float) -> np.ndarray:
    from trm_lib.core.model import one_to_one_logits

    return one_to_one_logits(_torch(feats).float(), _torch(text).float(), scale).numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _logits_cases(rng: np.random.Generator) -> list[Case]:
    text = _unit(rng.normal(size=(3, 8)))
    return [("features equal to their own class text give the scale",
             {"feats": np.stack([text] * 2), "text": text, "scale": 10.0}),
            ("feature length does not matter", {"feats": 7.5 * np.stack([text[::-1]]),
                                                "text": text, "scale": 1.0}),
            *[(f"random {k}", {"feats": rng.normal(size=(b, c, d)),
                               "text": _unit(rng.normal(size=(c, d))),
                               "scale": float(rng.uniform(1, 100))})
              for k, (b, c, d) in enumerate([(4, 5, 16), (2, 20, 32), (1, 1, 3)])]]


def _kd_expected(z: np.ndarray, r: np.ndarray) -> float:
    from trm_lib.core.losses import distillation_loss

    return float(distillation_loss(_torch(z), _torch(r), "cosine"))


def _kd_cases(rng: np.random.Generator) -> list[Case]:
    z = rng.normal(size=(2, 3, 8))
    return [("student equals teacher: zero", {"z": z, "r": z.copy()}),
            ("opposite directions: two", {"z": z, "r": -z}),
            ("teacher length does not matter", {"z": z, "r": 4.0 * z + 0.1}),
            *[(f"random {k}", {"z": rng.normal(size=s), "r": rng.normal(size=s)})
              for k, s in enumerate([(4, 5, 16), (1, 20, 32), (8, 2, 4)])]]


def _mcl_expected(feats: np.ndarray, labels: np.ndarray, text_protos: np.ndarray,
                  visual_protos: np.ndarray, temp_proto: float = 0.07,
                  temp_feat: float = 0.2) -> float:
    from trm_lib.core.losses import multimodal_contrastive_loss

    return float(multimodal_contrastive_loss(
        _torch(feats).float(), _torch(labels), _torch(text_protos).float(),
        _torch(visual_protos).float(), temp_proto=temp_proto, temp_feat=temp_feat))


def _mcl_cases(rng: np.random.Generator) -> list[Case]:
    def case(m: int, c: int, d: int, **kw: Any) -> dict[str, Any]:
        return {"feats": rng.normal(size=(m, d)), "labels": rng.integers(0, c, m),
                "text_protos": rng.normal(size=(c, d)), "visual_protos": rng.normal(size=(c, d)),
                **kw}

    return [("no anchors: zero", case(0, 3, 4)),
            ("one anchor: only the prototype term", case(1, 3, 4)),
            ("every anchor of one class", {**case(4, 3, 6), "labels": np.zeros(4, np.int64)}),
            *[(f"random {k}", case(m, c, d, temp_proto=float(rng.choice([0.07, 0.5])),
                                   temp_feat=float(rng.choice([0.1, 0.2]))))
              for k, (m, c, d) in enumerate([(10, 4, 8), (25, 6, 16), (6, 2, 3)])]]


def _pseudo_expected(scores: np.ndarray, observed: np.ndarray, full: np.ndarray, high: float,
                     low: float) -> tuple[np.ndarray, float]:
    import torch

    from trm_lib.core.prototypes import PseudoLabeler

    n, c = scores.shape
    labeler = PseudoLabeler(n, c, high=high, low=low)
    pseudo = labeler.label(_torch(scores).double(), torch.ones(c, dtype=torch.bool),
                           _torch(observed), torch.arange(n), _torch(full))
    return pseudo.numpy(), labeler.stats()["pseudo_precision"]


def _pseudo_cases(rng: np.random.Generator) -> list[Case]:
    def case(n: int, c: int, high: float = 0.9, low: float = 0.02, **kw: Any) -> dict[str, Any]:
        full = np.where(rng.random((n, c)) < 0.3, 1, -1).astype(np.int8)
        observed = np.where(rng.random((n, c)) < 0.3, full, 0).astype(np.int8)
        return {"scores": rng.random((n, c)), "observed": observed, "full": full,
                "high": high, "low": low, **kw}

    on_edges = case(2, 3)
    on_edges["scores"] = np.array([[0.9, 0.02, 0.5], [0.95, 0.0, 0.89]])
    on_edges["observed"] = np.zeros((2, 3), np.int8)
    return [("scores exactly at the thresholds", on_edges),
            ("no pseudo-positive: precision undefined (NaN)",
             {**case(3, 4), "scores": np.full((3, 4), 0.5)}),
            ("observed entries are never pseudo-labelled",
             {**case(3, 3), "scores": np.ones((3, 3)),
              "observed": np.array([[1, -1, 0]] * 3, np.int8)}),
            *[(f"random {k}", case(n, c, high=float(rng.uniform(0.5, 0.95)),
                                   low=float(rng.uniform(0.0, 0.3))))
              for k, (n, c) in enumerate([(20, 5), (40, 10), (6, 2)])]]


def _pointing_expected(maps: np.ndarray, grid: tuple[int, int], labels: np.ndarray,
                       objects: list, class_names: list[str],
                       image_size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from trm_lib.viz import pointing_game

    df = pointing_game(maps, grid, labels, objects, class_names, image_size)
    return df["hits"].to_numpy()[:-1].astype(np.int64), df["pairs"].to_numpy()[:-1].astype(
        np.int64)


def _pointing_cases(rng: np.random.Generator) -> list[Case]:
    names = ["cat", "dog", "car"]

    def case(n: int, grid: tuple[int, int], size: int | tuple[int, int]) -> dict[str, Any]:
        H, W = (size, size) if isinstance(size, int) else size
        labels = np.where(rng.random((n, len(names))) < 0.5, 1, -1).astype(np.int8)
        objects = []
        for i in range(n):
            objs = []
            for c in np.flatnonzero(labels[i] == 1):
                for _ in range(int(rng.integers(0, 3))):  # a positive may have no drawn box
                    x0, y0 = int(rng.integers(0, W - 8)), int(rng.integers(0, H - 8))
                    objs.append({"class": names[c], "box": [x0, y0, x0 + int(rng.integers(4, W - x0)),
                                                             y0 + int(rng.integers(4, H - y0))]})
            objects.append(objs)
        return {"maps": rng.random((n, len(names), grid[0] * grid[1])), "grid": grid,
                "labels": labels, "objects": objects, "class_names": names, "image_size": size}

    # the hottest cell of a 2x2 grid on a 40 px image is (row 0, col 1): point (30, 10); a box
    # ending at x = 30 (exclusive) misses it, one starting there hits
    edge = {"maps": np.array([[[0, 1, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1]]], np.float32),
            "grid": (2, 2), "labels": np.array([[1, 1, 1]], np.int8),
            "objects": [[{"class": "cat", "box": [0, 0, 30, 40]},
                         {"class": "dog", "box": [30, 0, 40, 20]},
                         {"class": "car", "box": [0, 0, 15, 15]}]],
            "class_names": names, "image_size": 40}
    return [("box ends are exclusive; a constant map points at its first cell", edge),
            ("an image that is not square", case(4, (3, 5), (48, 80))),
            *[(f"random {k}", case(n, g, s)) for k, (n, g, s) in
              enumerate([(10, (4, 4), 64), (20, (7, 7), 112), (5, (2, 3), (30, 60))])]]


EXERCISES: dict[str, Exercise] = {e.name: e for e in (
    Exercise("protocol_a_mask", "01_data_and_masking.ipynb", "trm_lib.datasets.labels.keep_proportion",
             _mask_expected, _mask_cases),
    Exercise("mean_average_precision", "01_data_and_masking.ipynb",
             "trm_lib.core.metrics.mean_average_precision (= scikit-learn)", _map_expected,
             _map_cases, rtol=1e-9, atol=1e-12),
    Exercise("partial_asl", "02_train_trm_ml.ipynb", "trm_lib.core.losses.partial_asl",
             _asl_expected, _asl_cases),
    Exercise("text_region_logits", "02_train_trm_ml.ipynb", "trm_lib.core.model.one_to_one_logits",
             _logits_expected, _logits_cases, rtol=1e-4, atol=1e-4),
    Exercise("region_query_distillation", "02_train_trm_ml.ipynb",
             "trm_lib.core.losses.distillation_loss(kind='cosine')", _kd_expected, _kd_cases),
    Exercise("multimodal_contrastive", "02_train_trm_ml.ipynb",
             "trm_lib.core.losses.multimodal_contrastive_loss", _mcl_expected, _mcl_cases,
             rtol=1e-4, atol=1e-5),
    Exercise("pseudo_label_threshold", "02_train_trm_ml.ipynb",
             "trm_lib.core.prototypes.PseudoLabeler.label + stats", _pseudo_expected, _pseudo_cases),
    Exercise("pointing_game", "05_attention_maps.ipynb", "trm_lib.viz.pointing_game",
             _pointing_expected, _pointing_cases),
)}


# ------------------------------------------------------------------------------------ checking
def _same(expected: Any, got: Any, rtol: float, atol: float) -> bool:
    if isinstance(expected, tuple):
        return (isinstance(got, tuple | list) and len(got) == len(expected)
                and all(_same(e, g, rtol, atol) for e, g in zip(expected, got)))
    try:
        e, g = np.asarray(expected), np.asarray(got)
    except Exception:  # an object numpy cannot hold
        return False
    if e.shape != g.shape or g.dtype.kind not in "fiub":
        return False
    if e.dtype.kind in "iub" and g.dtype.kind in "iub":
        return bool(np.array_equal(e, g))
    return bool(np.allclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol,
                            equal_nan=True))


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray):
        text = np.array2string(value, precision=4, threshold=24, edgeitems=2,
                               max_line_width=96)
        return f"array{value.shape} {text}" if value.size > 6 else text
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    if isinstance(value, list) and len(str(value)) > 120:
        return f"[{len(value)} items] {str(value)[:100]}…"
    if isinstance(value, np.random.Generator):
        return "np.random.Generator (the same stream for both)"
    return repr(value)


_RECORD: list[tuple[str, bool]] | None = None  # set by grade(): every check's outcome


def check(name: str, fn: Callable[..., Any], seed: int = 0) -> bool:
    """Run ``fn`` and the library's implementation of exercise ``name`` on the same edge-case
    and random inputs; print one pass line, or the first mismatch with its input, expected and
    got. Returns whether all cases matched. ``NotImplementedError`` (an unanswered exercise)
    propagates; any other error of ``fn`` counts as a mismatch."""
    if name not in EXERCISES:
        raise KeyError(f"course.check: no exercise {name!r} (known: {', '.join(EXERCISES)})")
    ex = EXERCISES[name]
    cases = ex.cases(np.random.default_rng(seed))
    ok, message = True, ""
    for label, case in cases:
        expected = ex.expected(**copy.deepcopy(case))
        try:
            got = fn(**copy.deepcopy(case))
        except NotImplementedError:
            raise
        except Exception as err:  # the student's code failed on this input
            got, failed = f"raised {type(err).__name__}: {err}", True
        else:
            failed = not _same(expected, got, ex.rtol, ex.atol)
        if failed:
            inputs = "\n".join(f"    {k} = {_show(v)}" for k, v in case.items())
            message = (f"✗ {name}: case '{label}' differs from {ex.reference}\n  input:\n"
                       f"{inputs}\n  expected: {_show(expected)}\n  got:      "
                       f"{got if isinstance(got, str) else _show(got)}")
            ok = False
            break
    if ok:
        message = (f"✓ {name}: all {len(cases)} cases (edge cases and random inputs) match "
                   f"{ex.reference}")
    print(message)
    if _RECORD is not None:
        _RECORD.append((name, ok))
    return ok


# ------------------------------------------------------------------------- notebooks and grading
def exercise_cells(nb: Any) -> list[tuple[int, str]]:
    """(cell index, grade_id) of the nbgrader solution cells of a notebook."""
    return [(i, c.metadata["nbgrader"]["grade_id"]) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]


def build(out: str | os.PathLike | None = None,
          notebooks: str | os.PathLike | None = None) -> dict[str, list[Path]]:
    """Write ``<out>/solutions/`` (the notebooks, outputs stripped) and ``<out>/student/``
    (answers replaced by ``raise NotImplementedError()`` with nbgrader's ClearSolutions through
    nbconvert's NotebookExporter). Default ``out``: ``course/`` of the repository."""
    import nbformat
    from nbconvert import NotebookExporter
    from nbgrader.preprocessors import ClearSolutions

    from .notebooks import discover_notebooks, strip_outputs

    out = Path(out) if out is not None else REPO_ROOT / "course"
    written: dict[str, list[Path]] = {"solutions": [], "student": []}
    exporter = NotebookExporter()
    exporter.register_preprocessor(ClearSolutions(), enabled=True)
    for sub in written:
        (out / sub).mkdir(parents=True, exist_ok=True)
    for src in discover_notebooks(notebooks):
        solution = out / "solutions" / src.name
        solution.write_text(src.read_text())
        strip_outputs(solution)
        body, _ = exporter.from_notebook_node(nbformat.read(solution, as_version=4))
        student = out / "student" / src.name
        student.write_text(body)
        written["solutions"].append(solution)
        written["student"].append(student)
    return written


def grade(paths: Sequence[str | os.PathLike]) -> Any:
    """Run the exercise cells of handed-in notebooks (each cell on its own, output captured)
    and return one row per (notebook, exercise): ``passed`` and the first line of its
    verdict. An unanswered exercise (``NotImplementedError``) or a crash counts as failed."""
    import nbformat
    import pandas as pd

    global _RECORD
    rows = []
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        for i, grade_id in exercise_cells(nb):
            _RECORD, buf = [], io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    exec(compile(nb.cells[i].source, f"{path.name}[{i}]", "exec"), {})
                passed = bool(_RECORD) and all(ok for _, ok in _RECORD)
                verdict = buf.getvalue().strip().splitlines()[0] if buf.getvalue().strip() \
                    else "no course.check call"
            except NotImplementedError:
                passed, verdict = False, "not answered (NotImplementedError)"
            except Exception as err:
                passed, verdict = False, f"{type(err).__name__}: {err}"
            finally:
                _RECORD = None
            rows.append({"notebook": path.name, "exercise": grade_id, "passed": passed,
                         "verdict": verdict})
    return pd.DataFrame(rows, columns=["notebook", "exercise", "passed", "verdict"])


def cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m trm_lib course",
        description="Write course/student/ (answers removed, nbgrader ClearSolutions) and "
                    "course/solutions/, or grade handed-in notebooks.")
    ap.add_argument("--out", default=None, help="course folder (default: course/)")
    ap.add_argument("--grade", nargs="+", metavar="NOTEBOOK",
                    help="run the exercise cells of these notebooks and print the scores")
    args = ap.parse_args(argv)
    if args.grade:
        missing = [p for p in args.grade if not Path(p).is_file()]
        if missing:
            print(f"error: --grade: no such notebook {missing[0]}", file=sys.stderr)
            return 2
        table = grade(args.grade)
        print(table.to_string(index=False))
        print(f"score: {int(table['passed'].sum())} / {len(table)}")
        return 0
    written = build(args.out)
    n = sum(len(exercise_cells(_read(p))) for p in written["solutions"])
    print(f"{len(written['student'])} student notebooks ({n} exercises) in "
          f"{written['student'][0].parent}; solutions in {written['solutions'][0].parent}")
    return 0


def _read(path: Path) -> Any:
    import nbformat

    return nbformat.read(path, as_version=4)
