"""Metrics against independent references: sklearn, a loop port of the ML-GCN evaluation code,
and a hand-computed AP."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from trm_lib.core.metrics import (
    MetricError,
    average_precision,
    evaluate_scores,
    mean_average_precision,
    prf_metrics,
    roc_auc,
    unknown_entry_quality,
)


def _random_case(seed: int, n: int = 300, c: int = 12, decimals: int = 1, neg: int = -1):
    """Scores rounded to ``decimals`` (many ties) and targets with ~25 % positives."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n, c)), decimals)
    targets = np.where(rng.random((n, c)) < 0.25, 1, neg)
    targets[rng.integers(n), :] = 1  # every class has a positive
    return scores, targets


def _sk_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.array([average_precision_score(targets[:, j] == 1, scores[:, j])
                     for j in range(targets.shape[1])])


def _mlgcn(scores: np.ndarray, targets: np.ndarray, k: int | None = None) -> dict[str, float]:
    """Loop port of ML-GCN's AveragePrecisionMeter.evaluation / overall_topk on logits
    (Megvii-Nanjing/ML-GCN, util.py, commit 5517d6f): ``Np[Np == 0] = 1`` before pooling.

    ``scores`` are logits (threshold 0); with ``k`` only the row's top-k may be positive.
    """
    n, c = scores.shape
    if k is not None:
        signs = np.zeros((n, c)) - 1
        for i in range(n):
            for ind in np.argsort(-scores[i], kind="stable")[:k]:
                signs[i, ind] = 1 if scores[i, ind] >= 0 else -1
        scores = signs
    t = targets.copy()
    t[t == -1] = 0
    Nc, Np, Ng = np.zeros(c), np.zeros(c), np.zeros(c)
    for j in range(c):
        Ng[j] = np.sum(t[:, j] == 1)
        Np[j] = np.sum(scores[:, j] >= 0)
        Nc[j] = np.sum(t[:, j] * (scores[:, j] >= 0))
    Np[Np == 0] = 1
    OP, OR = np.sum(Nc) / np.sum(Np), np.sum(Nc) / np.sum(Ng)
    CP, CR = np.sum(Nc / Np) / c, np.sum(Nc / Ng) / c
    return {"CP": CP, "CR": CR, "CF1": 2 * CP * CR / (CP + CR),
            "OP": OP, "OR": OR, "OF1": 2 * OP * OR / (OP + OR)}


# --------------------------------------------------------------------------------------------- AP

def test_ap_hand_computed_with_a_tie():
    # thresholds 0.9 (P=1, R=1/3), 0.8 tie of a neg and a pos (P=2/3, R=2/3), 0.1 (P=3/4, R=1)
    ap = average_precision([0.9, 0.8, 0.8, 0.1], [1, -1, 1, 1])
    assert ap == pytest.approx((1 + 2 / 3 + 3 / 4) / 3, abs=1e-12)
    # the tie is one threshold: swapping the tied pair must not change the value
    assert average_precision([0.9, 0.8, 0.8, 0.1], [1, 1, -1, 1]) == pytest.approx(ap, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("neg", [-1, 0])
@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_ap_matches_sklearn_with_ties(seed, neg, decimals):
    scores, targets = _random_case(seed, decimals=decimals, neg=neg)
    ap = average_precision(scores, targets)
    np.testing.assert_allclose(ap, _sk_ap(scores, targets), atol=1e-6)
    res = mean_average_precision(scores, targets)
    assert res.value == pytest.approx(_sk_ap(scores, targets).mean(), abs=1e-6)
    assert res.n_excluded == 0 and res.excluded.size == 0


def test_ap_accepts_logits_bool_targets_and_1d():
    scores, targets = _random_case(7, decimals=2)
    logits = np.log(scores + 1e-3) * 3.0  # monotone transform: same ranking, same AP
    np.testing.assert_allclose(average_precision(logits, targets == 1),
                               _sk_ap(scores, targets), atol=1e-6)
    single = average_precision(scores[:, 0], targets[:, 0])
    assert isinstance(single, float)
    assert single == pytest.approx(average_precision_score(targets[:, 0] == 1, scores[:, 0]))


def test_ap_all_tied_scores_is_the_positive_rate():
    targets = np.array([1, -1, -1, 1, -1])
    assert average_precision(np.full(5, 0.3), targets) == pytest.approx(0.4)


def test_empty_classes_excluded_or_zero():
    scores, targets = _random_case(3, neg=-1)
    targets[:, [2, 5]] = -1
    ref = _sk_ap(np.delete(scores, [2, 5], 1), np.delete(targets, [2, 5], 1))
    res = mean_average_precision(scores, targets)
    assert res.n_excluded == 2 and res.excluded.tolist() == [2, 5]
    assert np.isnan(res.per_class[[2, 5]]).all()
    assert res.value == pytest.approx(ref.mean(), abs=1e-6)
    zero = mean_average_precision(scores, targets, empty="zero")
    assert zero.value == pytest.approx(ref.sum() / targets.shape[1], abs=1e-6)
    assert zero.per_class[[2, 5]].tolist() == [0.0, 0.0] and zero.n_excluded == 0
    assert zero.value < res.value
    allempty = mean_average_precision(scores, -np.ones_like(targets))
    assert np.isnan(allempty.value) and allempty.n_excluded == targets.shape[1]


def test_bad_inputs_raise():
    scores, targets = _random_case(0, n=20, c=3)
    with pytest.raises(MetricError, match="shape"):
        mean_average_precision(scores[:, :2], targets)
    bad = scores.copy()
    bad[4, 1] = np.nan
    with pytest.raises(MetricError, match="image 4, class 1"):
        mean_average_precision(bad, targets)
    partial = targets.copy()
    partial[0, 0] = 0  # 1, -1 and 0 together: an observed mask, not full labels
    with pytest.raises(MetricError, match="partially observed"):
        mean_average_precision(scores, partial)
    with pytest.raises(MetricError, match="value 2"):
        mean_average_precision(scores, np.where(targets == 1, 2, -1))
    with pytest.raises(MetricError, match="empty"):
        mean_average_precision(scores, targets, empty="nan")


# ---------------------------------------------------------------------------- CP/CR/CF1/OP/OR/OF1

@pytest.mark.parametrize("seed", range(3))
def test_prf_matches_sklearn_and_mlgcn(seed):
    scores, targets = _random_case(seed, n=400, c=10, decimals=2)
    scores = np.clip(scores + 0.3 * (targets == 1) - 0.1, 0, 1)  # informative scores
    pred = scores >= 0.5
    got = prf_metrics(scores, targets)
    P, R = (targets == 1), pred
    macro = precision_recall_fscore_support(P, R, average="macro", zero_division=0)
    micro = precision_recall_fscore_support(P, R, average="micro", zero_division=0)
    assert got["CP"] == pytest.approx(macro[0], abs=1e-12)
    assert got["CR"] == pytest.approx(macro[1], abs=1e-12)
    assert got["CF1"] == pytest.approx(2 * macro[0] * macro[1] / (macro[0] + macro[1]))
    assert got["CF1"] != pytest.approx(macro[2], abs=1e-6)  # not sklearn's macro F1
    assert (got["OP"], got["OR"], got["OF1"]) == pytest.approx(micro[:3], abs=1e-12)
    # ML-GCN works on logits with threshold 0: the same decisions as probability >= 0.5
    logits = np.log(scores + 1e-12) - np.log1p(-scores + 1e-12)
    logits[scores == 0.5] = 0.0
    assert got == pytest.approx(_mlgcn(logits, targets), abs=1e-12)


def test_prf_top3_matches_mlgcn_overall_topk():
    scores, targets = _random_case(11, n=300, c=15, decimals=2)
    scores = np.round(0.6 * scores + 0.3 * (targets == 1), 2)  # some top-3 entries < 0.5
    logits = np.log(scores + 1e-12) - np.log1p(-scores + 1e-12)
    logits[scores == 0.5] = 0.0
    got = prf_metrics(scores, targets, top_k=3)
    assert got == pytest.approx(_mlgcn(logits, targets, k=3), abs=1e-12)
    # with threshold 0 every image predicts exactly its top 3: compare with sklearn micro
    pred = np.zeros(scores.shape, bool)
    np.put_along_axis(pred, np.argsort(-scores, axis=1, kind="stable")[:, :3], True, axis=1)
    micro = precision_recall_fscore_support(targets == 1, pred, average="micro")
    assert prf_metrics(scores, targets, threshold=0.0, top_k=3)["OP"] == pytest.approx(micro[0])
    # the threshold matters in the default variant: fewer than 3 predictions for some images
    assert micro[0] != pytest.approx(got["OP"]) and micro[1] > got["OR"]


def test_prf_class_without_prediction_and_without_positive():
    scores = np.array([[0.9, 0.1, 0.8], [0.2, 0.3, 0.7], [0.6, 0.2, 0.1]])
    targets = np.array([[1, 1, -1], [-1, 1, -1], [1, -1, -1]])
    got = prf_metrics(scores, targets)
    # class 0: P=1, R=1; class 1: no prediction -> P=0, R=0; class 2: no positive -> excluded
    assert got["CP"] == pytest.approx(0.5) and got["CR"] == pytest.approx(0.5)
    # overall pools everything, including class 2's two false positives; ML-GCN (default) counts
    # one prediction for class 1, which has none: OP = 2 / (4 + 1)
    assert got["OP"] == pytest.approx(2 / 5) and got["OR"] == pytest.approx(2 / 4)
    assert got["OF1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    pooled = prf_metrics(scores, targets, op_convention="pooled")
    assert pooled["OP"] == pytest.approx(2 / 4) and pooled["OF1"] == pytest.approx(0.5)
    assert {k: pooled[k] for k in ("CP", "CR", "CF1", "OR")} == \
        {k: got[k] for k in ("CP", "CR", "CF1", "OR")}
    sk = precision_recall_fscore_support(targets == 1, scores >= 0.5, labels=[0, 1],
                                         average="macro", zero_division=0)
    assert (got["CP"], got["CR"]) == pytest.approx(sk[:2])
    nothing = prf_metrics(np.zeros((3, 3)), targets)
    assert nothing["OP"] == 0.0 and nothing["OF1"] == 0.0 and nothing["CF1"] == 0.0
    with pytest.raises(MetricError, match="top_k"):
        prf_metrics(scores, targets, top_k=0)
    with pytest.raises(MetricError, match="op_convention"):
        prf_metrics(scores, targets, op_convention="micro")


@pytest.mark.parametrize("seed", range(5))
def test_op_of1_follow_mlgcn_when_a_class_has_no_prediction(seed):
    # N = 20, C = 8 (the size): every class has a positive, two classes never reach 0.5
    rng = np.random.default_rng(seed)
    targets = np.where(rng.random((20, 8)) < 0.3, 1, -1)
    targets[0, :] = 1
    scores = np.round(rng.random((20, 8)), 3)
    scores[:, [2, 5]] *= 0.4  # classes 2 and 5: no predicted positive
    logits = np.log(scores + 1e-12) - np.log1p(-scores + 1e-12)
    logits[scores == 0.5] = 0.0
    got = prf_metrics(scores, targets)
    assert got == pytest.approx(_mlgcn(logits, targets), abs=1e-12)
    pooled = prf_metrics(scores, targets, op_convention="pooled")
    micro = precision_recall_fscore_support(targets == 1, scores >= 0.5, average="micro",
                                            zero_division=0)
    assert (pooled["OP"], pooled["OR"], pooled["OF1"]) == pytest.approx(micro[:3], abs=1e-12)
    assert got["OP"] < pooled["OP"] and got["OF1"] < pooled["OF1"]  # the two conventions differ
    top3 = prf_metrics(scores, targets, top_k=3)
    assert top3 == pytest.approx(_mlgcn(logits, targets, k=3), abs=1e-12)


# ------------------------------------------------------------------------------------ evaluate

def test_evaluate_scores_keys_and_consistency():
    torch = pytest.importorskip("torch")
    scores, targets = _random_case(5, n=200, c=6, decimals=2)
    targets[:, 4] = -1
    names = [f"c{j}" for j in range(6)]
    out = evaluate_scores(torch.from_numpy(scores).float(), torch.from_numpy(targets), names)
    six = ["CP", "CR", "CF1", "OP", "OR", "OF1"]
    expected = {"mAP", "mAP_zero_empty", "n_empty_classes", *six, *(f"{k}_top3" for k in six),
                *(f"AP/{n}" for n in names)}
    assert set(out) == expected
    assert all(isinstance(v, float) for v in out.values())
    assert out["n_empty_classes"] == 1.0 and np.isnan(out["AP/c4"])
    s32 = scores.astype(np.float32)  # what the tensor carried
    assert out["mAP"] == pytest.approx(mean_average_precision(s32, targets).value, abs=1e-12)
    assert out["mAP_zero_empty"] == pytest.approx(out["mAP"] * 5 / 6, abs=1e-12)
    assert out["CP_top3"] == pytest.approx(prf_metrics(s32, targets, top_k=3)["CP"])
    assert out["OP"] == pytest.approx(prf_metrics(s32, targets)["OP"])
    pooled = evaluate_scores(s32, targets, op_convention="pooled")
    assert pooled["OP"] == pytest.approx(prf_metrics(s32, targets, op_convention="pooled")["OP"])
    with pytest.raises(MetricError, match="sigmoid"):
        evaluate_scores(scores * 4 - 2, targets)
    with pytest.raises(MetricError, match="class_names"):
        evaluate_scores(scores, targets, names[:3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.2
    s = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(roc_auc(s, np.zeros(500, dtype=bool)))


def test_unknown_entry_quality_counts_only_unknown_entries():
    full = np.array([[1, -1, 1], [-1, 1, -1]])
    observed = np.array([[1, 0, 0], [0, 0, -1]])  # unknown: (0,1)- (0,2)+ (1,0)- (1,1)+
    # observed entries get misleading scores: they must not count
    score = np.array([[0.0, 0.6, 0.95], [0.01, 0.3, 1.0]])
    q = unknown_entry_quality({"v": score}, observed, full, high=(0.5, 0.9), low=(0.02,))["v"]
    assert (q["n_unknown"], q["n_hidden_pos"]) == (4, 2)
    assert q["n@0.5"] == 2 and q["prec@0.5"] == pytest.approx(0.5)
    assert q["rec@0.5"] == pytest.approx(0.5)
    assert q["n@0.9"] == 1 and q["prec@0.9"] == 1.0
    assert q["neg_prec@0.02"] == 1.0 and q["pos_lost@0.02"] == 0.0
    y, v = np.array([0, 1, 0, 1]), np.array([0.6, 0.95, 0.01, 0.3])
    assert q["auc"] == pytest.approx(roc_auc_score(y, v))
    assert q["ap"] == pytest.approx(average_precision_score(y, v))


def test_unknown_entry_quality_where_narrows_the_entries():
    rng = np.random.default_rng(0)
    full = np.where(rng.random((50, 4)) < 0.3, 1, -1)
    observed = np.where(rng.random((50, 4)) < 0.4, full, 0)
    score = rng.random((50, 4))
    where = score < 0.6
    q = unknown_entry_quality({"v": score}, observed, full, where=where)["v"]
    keep = (observed == 0) & where
    assert q["n_unknown"] == keep.sum()
    assert q["ap"] == pytest.approx(average_precision_score(full[keep] > 0, score[keep]))
    assert q["n@0.7"] == 0
    with pytest.raises(MetricError, match="where: expected a bool array"):
        unknown_entry_quality({"v": score}, observed, full, where=score)


def test_unknown_entry_quality_rejects_bad_input():
    full = np.array([[1, -1]])
    with pytest.raises(MetricError, match="no unknown entry"):
        unknown_entry_quality({"v": np.zeros((1, 2))}, full, full)
    with pytest.raises(MetricError, match=r"views\['v'\] shape"):
        unknown_entry_quality({"v": np.zeros((1, 3))}, np.zeros((1, 2)), full)
    with pytest.raises(MetricError, match="observed shape"):
        unknown_entry_quality({"v": np.zeros((1, 2))}, np.zeros((1, 3)), full)


def _dualcoop_validate(output: np.ndarray, target: np.ndarray, thre: float = 0.5):
    """sunxm2357/DualCoOp, utils/validations.py: validate()'s per-class and overall numbers
    (in %), on the whole split at once."""
    pred = (output > thre).astype(int)
    tp = ((pred + target) == 2).sum(0)
    fp = ((pred - target) == 1).sum(0)
    fn = ((pred - target) == -1).sum(0)
    p_c = [float(tp[i] / (tp[i] + fp[i])) * 100.0 if tp[i] > 0 else 0.0 for i in range(len(tp))]
    r_c = [float(tp[i] / (tp[i] + fn[i])) * 100.0 if tp[i] > 0 else 0.0 for i in range(len(tp))]
    f_c = [2 * p_c[i] * r_c[i] / (p_c[i] + r_c[i]) if tp[i] > 0 else 0.0 for i in range(len(tp))]
    mean_p_c, mean_r_c, mean_f_c = sum(p_c) / len(p_c), sum(r_c) / len(r_c), sum(f_c) / len(f_c)
    p_o = tp.sum() / (tp + fp).sum() * 100.0
    r_o = tp.sum() / (tp + fn).sum() * 100.0
    return mean_p_c, mean_r_c, mean_f_c, p_o, r_o, 2 * p_o * r_o / (p_o + r_o)


def test_dualcoop_validation_is_not_our_convention():
    # the metrics docstring: DualCoOp thresholds with '>' and reports the mean of per-class F1s
    scores, targets = _random_case(4, n=200, c=6, decimals=1, neg=0)
    theirs = _dualcoop_validate(scores, targets)
    ours = prf_metrics(scores, targets, op_convention="pooled")
    # 0.5 exactly: a positive for us (>=), a negative for DualCoOp (>)
    at_half = prf_metrics(np.where(scores == 0.5, 0.49, scores), targets, op_convention="pooled")
    assert (theirs[0], theirs[1]) == pytest.approx((100 * at_half["CP"], 100 * at_half["CR"]))
    assert theirs[3] == pytest.approx(100 * at_half["OP"])
    assert theirs[3] != pytest.approx(100 * ours["OP"])
    # their class F1 is the mean of per-class F1s, ours the harmonic mean of CP and CR
    assert theirs[2] != pytest.approx(100 * at_half["CF1"], abs=1e-3)
