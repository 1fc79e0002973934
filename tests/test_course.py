"""Course mode (trm_lib.reports.course, .exercises, .grading): the exercises marked in the
notebooks, their checkers, the nbgrader course folder (nbgrader's own generate_assignment and
validate), and grading handed-in notebooks in separate processes."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import nbformat
import numpy as np
import pytest

from trm_lib.reports import course
from trm_lib.utils.paths import notebooks_dir

NB01 = "01_data_and_masking.ipynb"


def _solutions():
    """grade_id -> the solution cell's source, over every notebook."""
    found = {}
    for path in sorted(notebooks_dir().glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, name in course.exercise_cells(nb):
            found[name] = nb.cells[i].source
    return found


def _answer(name, body=None):
    """The solution cell's function, or one whose answer (between the markers) is ``body``."""
    src = _solutions()[name]
    if body is not None:
        head, rest = src.split("### BEGIN SOLUTION")
        src = head + body + rest.split("### END SOLUTION")[1]
    ns = {}
    exec(compile(src, name, "exec"), ns)
    return ns[name]


def test_every_exercise_is_a_solution_cell_and_a_locked_graded_test_cell():
    found, per_notebook = {}, {}
    for path in sorted(notebooks_dir().glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        tests = {i: (gid, pts) for i, gid, pts in course.graded_cells(nb)}
        for i, name in course.exercise_cells(nb):
            src = nb.cells[i].source
            assert "### BEGIN SOLUTION" in src and "### END SOLUTION" in src, (path.name, i)
            assert f"def {name}(" in src and "course" not in src, (path.name, name)
            test = nb.cells[i + 1]
            meta = test.metadata["nbgrader"]
            assert tests[i + 1] == (f"{name}_test", course.EXERCISES[name].points)
            assert meta["locked"] and meta["grade"] and not meta["solution"]
            assert f'course.check("{name}", {name})' in test.source
            assert nb.cells[i].get("id") and test.get("id")
            found[name] = path.name
            per_notebook[path.name] = per_notebook.get(path.name, 0) + 1
    assert found == {name: ex.notebook for name, ex in course.EXERCISES.items()}
    assert sorted(per_notebook) == sorted(p.name for p in notebooks_dir().glob("*.ipynb"))


def test_exercise_texts_state_inputs_and_address_students():
    for path in sorted(notebooks_dir().glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        ids = {c.get("id"): c.source for c in nb.cells}
        intro = ids["ex-intro"]
        assert "your answer" in intro and "python -m trm_lib" not in intro, path.name
        for _, name in course.exercise_cells(nb):
            text = ids[f"ex-{name}-text"]
            assert "*Inputs*" in text and "*Return*" in text, name
    nb05 = nbformat.read(notebooks_dir() / "05_attention_maps.ipynb", as_version=4)
    text = {c.get("id"): c.source for c in nb05.cells}["ex-pointing_game-text"]
    assert "`(H, W)`: height first" in text and '{"class": name, "box": [x0, y0, x1, y1]}' in text


@pytest.mark.parametrize("name", sorted(course.EXERCISES))
def test_solution_passes_its_check(name, capsys):
    assert course.check(name, _answer(name)) is True
    assert capsys.readouterr().out.startswith(f"✓ {name}: all ")


# --------------------------------------------------------------------- plausible wrong answers
def _hill_mask(Y, p, rng):  # drops only positives (Hill / SPLC), not protocol A
    return np.where((Y == 1) & (rng.random(Y.shape) >= p), 0, Y).astype(np.int8)


def _map_ignoring_ties(scores, targets):
    aps = []
    for c in range(scores.shape[1]):
        t = targets[np.argsort(-scores[:, c], kind="stable"), c] == 1
        if t.any():
            prec = np.cumsum(t) / np.arange(1, len(t) + 1)
            aps.append(prec[t].mean())
    return float(np.mean(aps)) if aps else float("nan")


def _asl_mean_over_observed(logits, targets, gamma_pos=1.0, gamma_neg=2.0, clip=0.05):
    p = 1 / (1 + np.exp(-logits))
    p_m = np.maximum(p - clip, 0)
    loss = np.where(targets > 0, -(1 - p) ** gamma_pos * np.log(p), 0) + np.where(
        targets < 0, -p_m ** gamma_neg * np.log(np.minimum(1 - p + clip, 1)), 0)
    return float(loss.sum() / max((targets != 0).sum(), 1))


def _logits_unnormalised(feats, text, scale):
    return scale * (feats * text[None]).sum(-1)


def _kd_summed_over_classes(z, r):
    cos = (z * r).sum(-1) / (np.linalg.norm(z, axis=-1) * np.linalg.norm(r, axis=-1))
    return float((1 - cos).sum(-1).mean())


def _mcl_text_only(feats, labels, text_protos, visual_protos, temp_proto=0.07, temp_feat=0.2):
    if len(feats) == 0:
        return 0.0
    z = feats / np.linalg.norm(feats, axis=-1, keepdims=True)
    t = text_protos / np.linalg.norm(text_protos, axis=-1, keepdims=True)
    sim = z @ t.T / temp_proto
    log_prob = sim - np.log(np.exp(sim).sum(1, keepdims=True))
    return float(-log_prob[np.arange(len(z)), labels].mean())


def _pseudo_strict(scores, observed, full, high, low):
    pseudo = np.zeros(scores.shape, np.int8)
    pseudo[(observed == 0) & (scores > high)] = 1
    pseudo[(observed == 0) & (scores < low)] = -1
    n = (pseudo == 1).sum()
    return pseudo, float(((pseudo == 1) & (full == 1)).sum() / n) if n else float("nan")


def _pointing(maps, grid, labels, objects, class_names, image_size, swap_size=False,
              swap_grid=False):
    H, W = (image_size, image_size) if np.isscalar(image_size) else image_size
    if swap_size:
        H, W = W, H
    h, w = grid
    hits, pairs = np.zeros(len(class_names), np.int64), np.zeros(len(class_names), np.int64)
    for i, c in zip(*np.nonzero(labels == 1)):
        boxes = [o["box"] for o in objects[i] if o["class"] == class_names[c]]
        if boxes:
            row, col = divmod(int(np.argmax(maps[i, c])), w)
            x, y = ((row + 0.5) * W / h, (col + 0.5) * H / w) if swap_grid else \
                ((col + 0.5) * W / w, (row + 0.5) * H / h)
            pairs[c] += 1
            hits[c] += any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in boxes)
    return hits, pairs


def _pointing_row_col_swapped(**inputs):
    return _pointing(**inputs, swap_grid=True)


def _pointing_reads_size_as_wh(**inputs):  # the answer issue 27 found passing on one seed
    return _pointing(**inputs, swap_size=True)


def _interval_normal_quantile(a, b, confidence=0.95):  # z instead of t
    from scipy.stats import norm

    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return (float(d.mean()) if len(d) else math.nan), math.nan, math.nan, len(d)
    half = norm.ppf(0.5 + confidence / 2) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half), len(d)


def _soft_bce(logits, q, mask=None):  # the BCE with soft targets: off by q's entropy
    p = 1 / (1 + np.exp(-logits))
    bce = -(q * np.log(p) + (1 - q) * np.log(1 - p))
    m = np.ones(q.shape, bool) if mask is None else mask
    return float(bce[m].sum() / max(m.sum(), 1))


def _pstats_over_all_entries(pseudo, observed, full):  # coverage over every entry
    pos, neg, hidden = pseudo == 1, pseudo == -1, (observed == 0) & (full == 1)

    def r(a, b):
        return float(a / b) if b else math.nan

    return (r((pos & hidden).sum(), pos.sum()), r((pos & hidden).sum(), hidden.sum()),
            r((pos | neg).sum(), pseudo.size), r((neg & hidden).sum(), hidden.sum()))


WRONG = {"protocol_a_mask": [_hill_mask], "mean_average_precision": [_map_ignoring_ties],
         "partial_asl": [_asl_mean_over_observed], "text_region_logits": [_logits_unnormalised],
         "region_query_distillation": [_kd_summed_over_classes],
         "multimodal_contrastive": [_mcl_text_only], "pseudo_label_threshold": [_pseudo_strict],
         "pointing_game": [_pointing_row_col_swapped, _pointing_reads_size_as_wh],
         "paired_interval": [_interval_normal_quantile],
         "soft_pseudo_label_loss": [_soft_bce], "pseudo_label_stats": [_pstats_over_all_entries]}


def test_every_exercise_has_a_wrong_answer_below():
    assert set(WRONG) == set(course.EXERCISES)


@pytest.mark.parametrize("name,wrong", [(n, f) for n, fs in sorted(WRONG.items()) for f in fs])
def test_checker_rejects_a_plausible_wrong_answer(name, wrong):
    with pytest.raises(course.ExerciseFailed) as info:
        course.check(name, wrong)
    msg = str(info.value)
    assert msg.startswith(f"✗ {name}: case 'seed ") and msg.count("✗") == 1
    assert "got:      raised" not in msg  # a wrong number, not a crash
    assert "\n  input:\n" in msg and "\n  expected: " in msg and "\n  got:      " in msg
    assert info.value._render_traceback_() == msg.splitlines()  # shown without a traceback


def test_wh_reading_fails_on_every_seed():
    """Issue 27: the (W, H) reading of image_size passed the old default seed; now a fixed
    wide-image case catches it whatever the seed."""
    for seed in range(4):
        with pytest.raises(course.ExerciseFailed, match="image_size is"):
            course.check("pointing_game", _pointing_reads_size_as_wh, seeds=(seed,))


def test_an_answer_calling_the_reference_fails_saying_so():
    from sklearn.metrics import average_precision_score

    import trm_lib.core.metrics as metrics

    def via_trm_lib(scores, targets):
        return metrics.mean_average_precision(scores, targets).value

    def via_sklearn(scores, targets):
        cols = [c for c in range(targets.shape[1]) if targets[:, c].any()]
        return float(np.mean([average_precision_score(targets[:, c], scores[:, c])
                              for c in cols])) if cols else math.nan

    cell = {}  # a notebook cell that imports the reference into its globals
    exec("from trm_lib.core.metrics import mean_average_precision as m\n"
         "def via_globals(scores, targets):\n    return m(scores, targets).value\n", cell)
    for answer, name in ((via_trm_lib, "trm_lib.core.metrics.mean_average_precision"),
                         (via_sklearn, "sklearn.metrics.average_precision_score"),
                         (cell["via_globals"], "trm_lib.core.metrics.mean_average_precision")):
        with pytest.raises(course.ExerciseFailed) as info:
            course.check("mean_average_precision", answer)
        assert f"raised ReferenceBlocked: {name} is off limits" in str(info.value)
    # restored afterwards: the notebook's own cells keep working
    assert cell["m"] is metrics.mean_average_precision
    assert metrics.mean_average_precision(np.array([[0.9], [0.1]]),
                                          np.array([[1], [0]])).value == 1.0
    assert average_precision_score([1, 0], [0.9, 0.1]) == 1.0


def test_check_reports_a_crash_and_an_unanswered_exercise():
    def crashes(**_):
        raise ValueError("boom")

    with pytest.raises(course.ExerciseFailed, match="got:      raised ValueError: boom"):
        course.check("partial_asl", crashes)

    def unanswered(**_):
        raise NotImplementedError()

    with pytest.raises(course.ExerciseFailed, match="not answered yet"):
        course.check("partial_asl", unanswered)
    with pytest.raises(KeyError, match="no exercise 'nope'"):
        course.check("nope", unanswered)


# ------------------------------------------------------------------------ the nbgrader course
def _short_notebook(folder):
    """Notebook 01 cut to its parameters cell and its exercises (validate executes every cell;
    the full notebook would build the dataset first)."""
    nb = nbformat.read(notebooks_dir() / NB01, as_version=4)
    start = next(i for i, c in enumerate(nb.cells) if c.get("id") == "ex-intro")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    nb.cells = params + nb.cells[start:]
    folder.mkdir()
    nbformat.write(nb, folder / NB01)
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    written = course.build(root / "course", notebooks=_short_notebook(root / "notebooks"))
    return root / "course", written


def _nbgrader(args, cwd):
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd,
                          capture_output=True, text=True, env=course.nbgrader_env(), timeout=600)


def test_build_writes_an_nbgrader_course(built):
    root, written = built
    assert written["source"] == [root / "source" / "01_data_and_masking" / NB01]
    assert written["release"] == [root / "release" / "01_data_and_masking" / NB01]
    assert (root / "nbgrader_config.py").is_file() and (root / "gradebook.db").is_file()
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        assignment = gb.find_assignment("01_data_and_masking")
        assert [n.name for n in assignment.notebooks] == ["01_data_and_masking"]
        assert assignment.max_score == sum(course.EXERCISES[n].points
                                           for n in ("protocol_a_mask", "mean_average_precision"))
    sol, stu = (nbformat.read(p, as_version=4) for p in (written["source"][0],
                                                         written["release"][0]))
    assert len(sol.cells) == len(stu.cells)
    exercises = dict(course.exercise_cells(sol))
    for i, (a, b) in enumerate(zip(sol.cells, stu.cells)):
        if i in exercises:
            assert "raise NotImplementedError()" in b.source and "SOLUTION" not in b.source
            before = a.source.split("### BEGIN SOLUTION")[0]
            assert b.source.startswith(before)
        else:
            assert a.source == b.source, f"cell {i} changed"
    for nb in (sol, stu):  # the copies' figures go beside them, not into the repository
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert 'report_dir: str = "reports"' in params.source
    locked = [c for c in stu.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(locked) == 2 and all(c.metadata["nbgrader"]["locked"] for c in locked)


def test_nbgrader_validate_fails_blank_and_passes_solutions(built):
    root, written = built
    blank = _nbgrader(["validate", str(written["release"][0])], root)
    assert "VALIDATION FAILED ON 2 CELL(S)!" in blank.stdout, blank.stdout + blank.stderr
    assert "not answered yet" in blank.stdout
    solved = _nbgrader(["validate", str(written["source"][0])], root)
    assert "Success! Your notebook passes all the tests." in solved.stdout, solved.stdout


def test_nbgrader_autograde_and_feedback_score_two_students(built):
    import shutil

    from nbgrader.api import Gradebook

    root, written = built
    for student, src in (("alice", written["source"][0]), ("bob", written["release"][0])):
        folder = root / "submitted" / student / "01_data_and_masking"
        folder.mkdir(parents=True)
        shutil.copy(src, folder / NB01)
    graded = _nbgrader(["autograde", "01_data_and_masking"], root)
    assert graded.returncode == 0, graded.stdout + graded.stderr
    feedback = _nbgrader(["generate_feedback", "01_data_and_masking"], root)
    assert feedback.returncode == 0, feedback.stdout + feedback.stderr
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        scores = {s: gb.find_submission("01_data_and_masking", s).score for s in ("alice", "bob")}
    assert scores == {"alice": 3.0, "bob": 0.0}
    html = (root / "feedback" / "bob" / "01_data_and_masking" / "01_data_and_masking.html")
    assert "not answered yet" in html.read_text()


# ------------------------------------------------------------------- grading in other processes
def _with(nb, name, body=None, before="", after=""):
    """A copy of ``nb`` whose exercise ``name`` has ``body`` as its answer, plus code before or
    after the function in the same cell."""
    nb = copy.deepcopy(nb)
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade_id") == name and meta.get("solution"):
            src = c.source
            if body is not None:
                head, rest = src.split("### BEGIN SOLUTION")
                src = head + body + rest.split("### END SOLUTION")[1]
            c.source = before + src + after
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory, built):
    """One grading call over six students (notebook 01's exercises): solutions, the blank
    copy, an infinite loop, an answer calling trm_lib's mAP, and two forgery attempts."""
    root, written = built
    out = tmp_path_factory.mktemp("handed_in")
    sol = nbformat.read(notebooks_dir() / NB01, as_version=4)
    students = {
        "good": sol,
        "loop": _with(sol, "protocol_a_mask", "while True:\n        pass\n    "),
        "cheat": _with(sol, "mean_average_precision",
                       "from trm_lib.core.metrics import mean_average_precision as m\n"
                       "    return m(scores, targets).value\n    "),
        "forge": _with(_with(sol, "protocol_a_mask", "raise NotImplementedError()\n    ",
                             before="from trm_lib.reports import course, exercises\n"
                                    "course.check = lambda *a, **k: True\n"
                                    "exercises.same = lambda *a, **k: True\n",
                             after="\nimport sys\nsys.exit(0)\n"),
                       "mean_average_precision", "import os\n    os._exit(0)\n    "),
    }
    paths = []
    for label, nb in students.items():
        (out / label).mkdir()
        nbformat.write(nb, out / label / NB01)
        paths.append(out / label / NB01)
    paths.append(written["release"][0])  # the blank student copy
    return course.grade(paths, limit=8), paths


def _row(table, student, exercise):
    sel = table[(table["notebook"].str.contains(f"/{student}/")) & (table["exercise"] == exercise)]
    assert len(sel) == 1, (student, exercise)
    return sel.iloc[0]


def test_grading_scores_each_notebook_in_its_own_process(graded):
    table, paths = graded
    assert list(dict.fromkeys(table["notebook"])) == [str(p) for p in paths]
    totals = table.groupby("notebook", sort=False)["points"].sum().tolist()
    assert totals == [3, 2, 1, 0, 0]  # good, loop, cheat, forge, blank
    assert _row(table, "good", "mean_average_precision")["verdict"].startswith("✓")
    loop = _row(table, "loop", "protocol_a_mask")
    assert loop["points"] == 0 and loop["verdict"] == "time limit exceeded (8 s): scored 0"
    assert _row(table, "loop", "mean_average_precision")["passed"]  # grading went on
    cheat = _row(table, "cheat", "mean_average_precision")["verdict"]
    assert ("raised ReferenceBlocked: trm_lib.core.metrics.mean_average_precision is off limits"
            in cheat)
    forge = _row(table, "forge", "protocol_a_mask")["verdict"]
    assert "SystemExit" in forge or "not answered" in forge
    assert "process running it ended (exit code 0)" in _row(
        table, "forge", "mean_average_precision")["verdict"]
    blank = table[table["notebook"] == str(paths[-1])]
    assert (blank["verdict"] == "not answered (NotImplementedError)").all()


def test_cli_prints_one_row_per_notebook(built, graded, capsys, monkeypatch):
    table, paths = graded
    monkeypatch.setattr(course, "grade", lambda p, limit: table)
    assert course.cli(["--grade", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(k in lines[0] for k in ("protocol_a_mask", "mean_average_precision", "total"))
    rows = {line.split()[0]: line.split()[-1] for line in lines[2:2 + len(paths)]}
    assert rows == dict(zip(map(str, paths), ["3/3", "2/3", "1/3", "0/3", "0/3"]))
    assert "why points were lost:" in out and "time limit exceeded (8 s)" in out


@pytest.mark.parametrize("content", ["# README\n", "", json.dumps({"cells": 5})])
def test_grading_a_file_that_is_not_a_notebook_is_one_error_line(tmp_path, content):
    bad = tmp_path / "handed_in.ipynb"
    bad.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "trm_lib", "course", "--grade", str(bad)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {bad}: not a notebook the grader can read")
    assert proc.stderr.count("\n") == 1
    missing = subprocess.run([sys.executable, "-m", "trm_lib", "course", "--grade",
                              str(tmp_path / "nope.ipynb")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such notebook" in missing.stderr
    not_a_folder = subprocess.run([sys.executable, "-m", "trm_lib", "course", "--out", str(bad)],
                                  capture_output=True, text=True)
    assert not_a_folder.returncode == 2 and "not a folder" in not_a_folder.stderr
