"""Course mode (trm_lib.reports.course): the exercises marked in the notebooks, their checkers, the
student copies nbgrader's ClearSolutions makes, and grading."""

from __future__ import annotations

import nbformat
import numpy as np
import pytest

from trm_lib.reports import course
from trm_lib.utils.paths import notebooks_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    return out, course.build(out)


def test_every_exercise_is_marked_in_its_notebook():
    found = {}
    for path in sorted(notebooks_dir().glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, grade_id in course.exercise_cells(nb):
            src = nb.cells[i].source
            assert "### BEGIN SOLUTION" in src and "### END SOLUTION" in src, (path.name, i)
            assert nb.cells[i].get("id"), (path.name, i)
            assert f'course.check("{grade_id}",' in src, (path.name, grade_id)
            found[grade_id] = path.name
    assert found == {name: ex.notebook for name, ex in course.EXERCISES.items()}
    assert len(found) >= 8


def test_solution_copies_pass_every_checker(built, capsys):
    _, written = built
    table = course.grade(written["solutions"])
    assert sorted(table["exercise"]) == sorted(course.EXERCISES)
    assert table["passed"].all(), table[~table["passed"]].to_string()
    assert table["verdict"].str.startswith("✓").all()


def test_student_copies_raise_exactly_at_their_exercises(built):
    _, written = built
    for solution, student in zip(written["solutions"], written["student"], strict=True):
        sol, stu = (nbformat.read(p, as_version=4) for p in (solution, student))
        exercises = dict(course.exercise_cells(sol))
        assert len(sol.cells) == len(stu.cells)
        for i, (a, b) in enumerate(zip(sol.cells, stu.cells)):
            if i not in exercises:
                assert a.source == b.source, f"{student.name}: cell {i} changed"
                continue
            assert "raise NotImplementedError()" in b.source and "SOLUTION" not in b.source
            before, rest = a.source.split("### BEGIN SOLUTION")
            after = rest.split("### END SOLUTION")[1]
            assert b.source.startswith(before) and b.source.endswith(after)  # only the answer
        graded = course.grade([student])
        assert list(graded["exercise"]) == list(exercises.values())
        assert (graded["verdict"] == "not answered (NotImplementedError)").all()


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


def _pointing_row_col_swapped(maps, grid, labels, objects, class_names, image_size):
    H, W = (image_size, image_size) if np.isscalar(image_size) else image_size
    h, w = grid
    hits, pairs = np.zeros(len(class_names), np.int64), np.zeros(len(class_names), np.int64)
    for i, c in zip(*np.nonzero(labels == 1)):
        boxes = [o["box"] for o in objects[i] if o["class"] == class_names[c]]
        if boxes:
            row, col = divmod(int(np.argmax(maps[i, c])), w)
            x, y = (row + 0.5) * W / h, (col + 0.5) * H / w
            pairs[c] += 1
            hits[c] += any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in boxes)
    return hits, pairs


WRONG = {"protocol_a_mask": _hill_mask, "mean_average_precision": _map_ignoring_ties,
         "partial_asl": _asl_mean_over_observed, "text_region_logits": _logits_unnormalised,
         "region_query_distillation": _kd_summed_over_classes,
         "multimodal_contrastive": _mcl_text_only, "pseudo_label_threshold": _pseudo_strict,
         "pointing_game": _pointing_row_col_swapped}


def test_every_exercise_has_a_wrong_answer_below():
    assert set(WRONG) == set(course.EXERCISES)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_checker_rejects_a_plausible_wrong_answer(name, capsys):
    assert course.check(name, WRONG[name]) is False
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {name}: case '") and out.count("✗") == 1
    assert "\n  input:\n" in out and "\n  expected: " in out and "\n  got:      " in out


def test_check_reports_a_crash_and_lets_not_implemented_through(capsys):
    def crashes(**_):
        raise ValueError("boom")

    assert course.check("partial_asl", crashes) is False
    assert "got:      raised ValueError: boom" in capsys.readouterr().out

    def unanswered(**_):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        course.check("partial_asl", unanswered)
    with pytest.raises(KeyError, match="no exercise 'nope'"):
        course.check("nope", unanswered)


def test_cli_builds_and_grades(tmp_path, capsys):
    assert course.cli(["--out", str(tmp_path)]) == 0
    assert "8 exercises" in capsys.readouterr().out
    student = tmp_path / "student" / "01_data_and_masking.ipynb"
    assert course.cli(["--grade", str(student)]) == 0
    out = capsys.readouterr().out
    assert "score: 0 / 2" in out
    assert course.cli(["--grade", str(tmp_path / "missing.ipynb")]) == 2
    assert capsys.readouterr().err.startswith("error: --grade: no such notebook")
