"""The course's exercises: for each, the library function it is checked against, its inputs
(edge cases first, then random ones, drawn for several seeds) and how an answer is compared.

Pure data and numpy: no student code runs here. :mod:`trm_lib.reports.course` checks an answer
inside the student's kernel (feedback while working); :mod:`trm_lib.reports.grading` runs a
handed-in notebook in a separate process and compares its outputs with the ones computed here.
``Exercise.blocked`` names what must be out of reach while an answer runs: the reference itself,
where it is re-exported, and the scikit-learn function it equals.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CHECK_SEEDS", "EXERCISES", "GRADE_SEEDS", "Exercise", "all_cases", "compare",
           "same", "show"]

Case = tuple[str, dict[str, Any]]

#: seeds of the random cases: the in-kernel check runs these, the grader more of them
CHECK_SEEDS = (0, 1, 2)
GRADE_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Exercise:
    """One exercise: the library function it is checked against and its test inputs."""

    name: str
    notebook: str  # the solution notebook that holds it
    reference: str  # what the answer is compared with (shown in messages)
    expected: Callable[..., Any]  # the same inputs as the student's function -> the answer
    cases: Callable[[np.random.Generator], list[Case]]  # edge cases first, then random ones
    blocked: tuple[str, ...] = ()  # "module:qualname" out of reach while an answer runs
    points: int = 1
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
                                 "targets": np.array([[1], [1], [0]], np.int8)}),
            ("worst ranking", {"scores": np.array([[0.1], [0.8], [0.9]]),
                               "targets": np.array([[1], [0], [0]], np.int8)}),
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
    # a wide image (H 40, W 80): the hottest cell (row 0, col 1) of a 2x2 grid is the point
    # (x 60, y 10); read as (W, H) it would be (30, 20), inside the dog's box instead of the cat's
    wide = {"maps": np.array([[[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]], np.float32),
            "grid": (2, 2), "labels": np.array([[1, 1, -1]], np.int8),
            "objects": [[{"class": "cat", "box": [50, 0, 80, 15]},
                         {"class": "dog", "box": [25, 15, 35, 25]}]],
            "class_names": names, "image_size": (40, 80)}
    return [("box ends are exclusive; a constant map points at its first cell", edge),
            ("image_size is (H, W): a wide image", wide),
            ("an image that is not square", case(4, (3, 5), (48, 80))),
            *[(f"random {k}", case(n, g, s)) for k, (n, g, s) in
              enumerate([(10, (4, 4), 64), (20, (7, 7), 112), (5, (2, 3), (30, 60))])]]


def _interval_expected(a: np.ndarray, b: np.ndarray,
                       confidence: float = 0.95) -> tuple[float, float, float, int]:
    from trm_lib.experiments.stats import t_interval

    mean, low, high, n = t_interval(np.asarray(a, float) - np.asarray(b, float), confidence)
    return float(mean), float(low), float(high), int(n)


def _interval_cases(rng: np.random.Generator) -> list[Case]:
    nan = math.nan

    def case(s: int, confidence: float) -> dict[str, Any]:
        b = rng.normal(0.6, 0.05, s)
        return {"a": b + rng.normal(0.01, 0.02, s), "b": b, "confidence": confidence}

    return [("one seed: the mean, a NaN interval", {"a": np.array([0.62]),
                                                    "b": np.array([0.60])}),
            ("identical differences: a zero-width interval",
             {"a": np.array([0.52, 0.61, 0.70]), "b": np.array([0.50, 0.59, 0.68])}),
            ("a seed missing (NaN) on either side is left out",
             {"a": np.array([0.60, nan, 0.70, 0.65, 0.66]),
              "b": np.array([0.58, 0.60, nan, 0.61, 0.60])}),
            ("every pair missing: n = 0, all NaN", {"a": np.array([nan, 0.5]),
                                                    "b": np.array([0.4, nan])}),
            ("two seeds, 90 % interval", {"a": np.array([0.55, 0.61]),
                                          "b": np.array([0.50, 0.60]), "confidence": 0.9}),
            *[(f"random {k}", case(s, float(rng.choice([0.8, 0.9, 0.95, 0.99]))))
              for k, s in enumerate([3, 5, int(rng.integers(2, 12))])]]


def _soft_expected(logits: np.ndarray, q: np.ndarray, mask: np.ndarray | None = None) -> float:
    from trm_lib.core.losses import soft_label_loss

    return float(soft_label_loss(_torch(logits), _torch(q),
                                 None if mask is None else _torch(mask)))


def _soft_cases(rng: np.random.Generator) -> list[Case]:
    def case(b: int, c: int, masked: bool = True) -> dict[str, Any]:
        return {"logits": 3 * rng.normal(size=(b, c)), "q": rng.random((b, c)),
                "mask": (rng.random((b, c)) < 0.5) if masked else None}

    logits = rng.normal(size=(3, 4))
    return [("a student equal to its target costs zero",
             {"logits": logits, "q": 1 / (1 + np.exp(-logits)), "mask": None}),
            ("hard targets (q = 0 or 1): the KL is the BCE",
             {"logits": rng.normal(size=(4, 3)), "q": rng.integers(0, 2, (4, 3)).astype(float),
              "mask": None}),
            ("an empty mask: zero", {**case(3, 5), "mask": np.zeros((3, 5), bool)}),
            ("mask None: the mean over every entry", case(5, 2, masked=False)),
            ("confident logits", {"logits": np.array([[20.0, -20.0, 8.0, -8.0]]),
                                  "q": np.array([[0.5, 0.5, 1.0, 0.0]]),
                                  "mask": np.array([[True, True, True, False]])}),
            *[(f"random {k}", case(b, c)) for k, (b, c) in enumerate([(8, 5), (16, 20), (1, 1)])]]


_PSTATS = ("pseudo_precision", "pseudo_recall", "pseudo_coverage", "pseudo_pos_lost")


def _pstats_expected(pseudo: np.ndarray, observed: np.ndarray,
                     full: np.ndarray) -> tuple[float, ...]:
    from trm_lib.core.prototypes import PseudoLabeler

    labeler = PseudoLabeler(*pseudo.shape)
    labeler.record(_torch(pseudo), _torch(observed), _torch(full))
    stats = labeler.stats()
    return tuple(float(stats[k]) for k in _PSTATS)


def _pstats_cases(rng: np.random.Generator) -> list[Case]:
    def case(n: int, c: int, known: float = 0.3) -> dict[str, Any]:
        full = np.where(rng.random((n, c)) < 0.3, 1, -1).astype(np.int8)
        observed = np.where(rng.random((n, c)) < known, full, 0).astype(np.int8)
        draw = rng.random((n, c))
        pseudo = np.where(draw < 0.2, 1, np.where(draw > 0.5, -1, 0)).astype(np.int8)
        return {"pseudo": np.where(observed == 0, pseudo, 0).astype(np.int8),
                "observed": observed, "full": full}

    no_pos = case(4, 3)
    no_pos["pseudo"] = np.where(no_pos["pseudo"] == 1, 0, no_pos["pseudo"]).astype(np.int8)
    no_hidden = case(5, 4)
    no_hidden["full"] = np.where(no_hidden["observed"] == 0, -1,
                                 no_hidden["full"]).astype(np.int8)
    known = case(2, 3)
    known["observed"], known["pseudo"] = known["full"].copy(), np.zeros((2, 3), np.int8)
    right = case(6, 3)
    right["pseudo"] = np.where(right["observed"] == 0, right["full"], 0).astype(np.int8)
    return [("no pseudo-positive: precision NaN", no_pos),
            ("no hidden positive among the unknowns: recall and loss NaN", no_hidden),
            ("no unknown entry at all: every ratio NaN", known),
            ("every unknown entry labelled, all correctly", right),
            *[(f"random {k}", case(n, c)) for k, (n, c) in enumerate([(20, 5), (40, 10), (7, 2)])]]


M, L, S, P = ("trm_lib.core.metrics", "trm_lib.core.losses", "trm_lib.experiments.stats",
              "trm_lib.core.prototypes:PseudoLabeler")
EXERCISES: dict[str, Exercise] = {e.name: e for e in (
    Exercise("protocol_a_mask", "01_data_and_masking.ipynb", "trm_lib.datasets.labels.keep_proportion",
             _mask_expected, _mask_cases,
             blocked=tuple(f"trm_lib.datasets.labels:{f}" for f in (
                 "keep_proportion", "mask_proportion", "observed_labels"))),
    Exercise("mean_average_precision", "01_data_and_masking.ipynb",
             "trm_lib.core.metrics.mean_average_precision (= scikit-learn)", _map_expected,
             _map_cases, points=2, rtol=1e-9, atol=1e-12,
             blocked=(*(f"{M}:{f}" for f in ("mean_average_precision", "average_precision",
                                            "_average_precision", "evaluate_scores")),
                      "sklearn.metrics:average_precision_score",
                      "sklearn.metrics:label_ranking_average_precision_score")),
    Exercise("partial_asl", "02_train_trm_ml.ipynb", f"{L}.partial_asl", _asl_expected,
             _asl_cases, blocked=(f"{L}:partial_asl",)),
    Exercise("text_region_logits", "02_train_trm_ml.ipynb", "trm_lib.core.model.one_to_one_logits",
             _logits_expected, _logits_cases, rtol=1e-4, atol=1e-4,
             blocked=("trm_lib.core.model:one_to_one_logits",)),
    Exercise("region_query_distillation", "02_train_trm_ml.ipynb",
             f"{L}.distillation_loss(kind='cosine')", _kd_expected, _kd_cases,
             blocked=(f"{L}:distillation_loss",)),
    Exercise("multimodal_contrastive", "02_train_trm_ml.ipynb", f"{L}.multimodal_contrastive_loss",
             _mcl_expected, _mcl_cases, points=2, rtol=1e-4, atol=1e-5,
             blocked=(f"{L}:multimodal_contrastive_loss", f"{L}:_supcon")),
    Exercise("pseudo_label_threshold", "02_train_trm_ml.ipynb",
             "trm_lib.core.prototypes.PseudoLabeler.label + stats", _pseudo_expected, _pseudo_cases,
             blocked=(f"{P}.label", f"{P}.assign", f"{P}.stats")),
    Exercise("paired_interval", "03_label_proportions.ipynb", f"{S}.t_interval",
             _interval_expected, _interval_cases, rtol=1e-6, atol=1e-9,
             blocked=(f"{S}:t_interval", f"{S}:paired_differences", "scipy.stats:ttest_rel",
                      "scipy.stats:ttest_1samp")),
    Exercise("soft_pseudo_label_loss", "04_ablations.ipynb", f"{L}.soft_label_loss",
             _soft_expected, _soft_cases, rtol=1e-4, atol=1e-5,
             blocked=(f"{L}:soft_label_loss", f"{L}:distillation_loss")),
    Exercise("pointing_game", "05_attention_maps.ipynb", "trm_lib.viz.pointing_game",
             _pointing_expected, _pointing_cases, points=2,
             blocked=("trm_lib.viz.attention:pointing_game",)),
    Exercise("pseudo_label_stats", "06_explorer.ipynb",
             "trm_lib.core.prototypes.PseudoLabeler.record + stats", _pstats_expected,
             _pstats_cases, blocked=(f"{P}.record", f"{P}.stats")),
)}


# ------------------------------------------------------------------------------------ comparing
def all_cases(ex: Exercise, seeds: Sequence[int] = CHECK_SEEDS) -> list[Case]:
    """The exercise's cases for every seed, labelled ``seed s: …``; each input is a fresh copy."""
    return [(f"seed {s}: {label}", copy.deepcopy(case))
            for s in seeds for label, case in ex.cases(np.random.default_rng(s))]


def same(expected: Any, got: Any, rtol: float, atol: float) -> bool:
    """Whether an answer matches: tuples element by element, integers exactly, floats within
    tolerance (NaN matches NaN), shapes always."""
    if isinstance(expected, tuple):
        return (isinstance(got, tuple | list) and len(got) == len(expected)
                and all(same(e, g, rtol, atol) for e, g in zip(expected, got)))
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


def show(value: Any) -> str:
    """A short, readable rendering of an input or an answer for a verdict message."""
    if isinstance(value, np.ndarray):
        text = np.array2string(value, precision=4, threshold=24, edgeitems=2,
                               max_line_width=96)
        return f"array{value.shape} {value.dtype} {text}" if value.size > 6 else text
    if isinstance(value, tuple):
        return "(" + ", ".join(show(v) for v in value) + ")"
    if isinstance(value, list) and len(str(value)) > 120:
        return f"[{len(value)} items] {str(value)[:100]}…"
    if isinstance(value, np.random.Generator):
        return "np.random.Generator (the same stream for both)"
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "…"


def compare(ex: Exercise, label: str, case: dict[str, Any], expected: Any,
            got: Any, error: str | None = None) -> str | None:
    """None when ``got`` matches ``expected``; else the ✗ message (input, expected, got).
    ``error``: what the answer raised instead of returning."""
    if error is None and same(expected, got, ex.rtol, ex.atol):
        return None
    inputs = "\n".join(f"    {k} = {show(v)}" for k, v in case.items())
    return (f"✗ {ex.name}: case '{label}' differs from {ex.reference}\n  input:\n{inputs}\n"
            f"  expected: {show(expected)}\n  got:      {error if error else show(got)}")


def passed(ex: Exercise, n: int) -> str:
    return f"✓ {ex.name}: all {n} cases (edge cases and random inputs) match {ex.reference}"
