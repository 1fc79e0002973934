"""Training diagnostics: pseudo-label target change and per-term gradient norms."""

from __future__ import annotations

import copy
import dataclasses
import math

import pandas as pd
import pytest
import torch
from test_model import _batch, _cfg, _ctx

from trm_lib.core.diagnostics import (
    gradient_norms,
    gradient_ratios,
    target_change,
    target_change_history,
)
from trm_lib.core.losses import soft_label_loss
from trm_lib.core.model import TRMML


def test_target_change_hand_computed():
    q = torch.tensor([[0.9, 0.2, 0.6, 0.0]])
    p = torch.tensor([[0.8, 0.7, 0.4, 0.9]])
    mask = torch.tensor([[True, True, True, False]])
    flip, gap = target_change(q, p, mask)
    assert flip == pytest.approx(2 / 3)  # entries 2 and 3 change the verdict
    assert gap == pytest.approx((0.1 + 0.5 + 0.2) / 3)
    assert all(math.isnan(v) for v in target_change(q, p, torch.zeros_like(mask)))
    with pytest.raises(ValueError, match="shapes"):
        target_change(q, p[:, :2], mask)


def test_gradient_norms_match_manual_gradients():
    z = torch.randn(3, 4, requires_grad=True)
    a, b = (z ** 2).sum(), 3.0 * z.sum()
    norms = gradient_norms({"a": a, "b": b, "const": torch.tensor(1.0)}, z)
    assert norms["a"] == pytest.approx(float((2 * z).detach().norm()), rel=1e-6)
    assert norms["b"] == pytest.approx(3.0 * math.sqrt(12), rel=1e-6)
    assert norms["const"] == 0.0
    (a + b).backward()  # the graph is still there for the real backward
    assert z.grad is not None


def test_gradient_ratios_and_target_change_history_are_tidy():
    hist = pd.DataFrame({"epoch": [0, 1, 2], "train_grad_cls": [math.nan, 2.0, 4.0],
                         "train_grad_kd": [math.nan, 1.0, 1.0],
                         "train_pseudo_flip": [math.nan, math.nan, 0.1],
                         "train_pseudo_gap": [math.nan, math.nan, 0.2]})
    ratios = gradient_ratios(hist)
    assert ratios.to_dict("list") == {"epoch": [1, 2], "term": ["kd", "kd"],
                                      "ratio": [0.5, 0.25]}
    change = target_change_history(hist)
    assert change["epoch"].tolist() == [2, 2] and change["value"].tolist() == [0.1, 0.2]
    with pytest.raises(ValueError, match="train_grad_cls"):
        gradient_ratios(hist.drop(columns="train_grad_cls"))
    assert target_change_history(hist.drop(columns="train_pseudo_gap")).empty


def test_trm_ml_logs_gradient_norms_of_each_weighted_term():
    torch.manual_seed(0)
    m = TRMML(_cfg(kd_weight=0.5, pseudo=False, mcl=False, kd="cosine"), _ctx())
    m.train()
    b = _batch(8)
    out = m(b)
    _, logs = m.loss(out, b, 1)
    # the kd term alone: 0.5 * cosine distillation, differentiated by hand through z
    ref = copy.deepcopy(m)
    out2 = ref(b)
    z = out2["z"]
    kd = 0.5 * (1 - torch.nn.functional.cosine_similarity(z, out2["r"].detach(), dim=-1)).mean()
    (g,) = torch.autograd.grad(kd, z)
    assert logs["grad_kd"] == pytest.approx(float(g.norm()), rel=1e-4)
    assert logs["grad_cls"] > 0 and "grad_mcl" not in logs
    with torch.no_grad():
        m.eval()
        _, logs = m.loss(m(b), b, 1)
    assert not any(k.startswith("grad_") for k in logs)


def test_trm_ml_logs_how_often_soft_pseudo_labels_overrule_the_classifier():
    torch.manual_seed(0)
    m = TRMML(dataclasses.replace(_cfg(pseudo_warmup=1, pseudo_k=1, pseudo_bank=8, kd="none",
                                       mcl=False)), _ctx())
    m.train()
    batches = [{**_batch(4, seed=s), "index": torch.arange(4) + 4 * s} for s in range(3)]
    m.epoch_start(1)
    for b in batches:
        _, logs = m.loss(m(b), b, 1)
        assert "pseudo_flip" not in logs
    m.epoch_start(2)
    b = batches[0]
    out = m(b)
    ref = copy.deepcopy(m)
    scores, valid = ref._pseudo_scores(out, b["observed"], b["index"], ref.class_text())
    mask = (b["observed"] == 0) & valid
    _, logs = m.loss(out, b, 2)
    want = target_change(scores, torch.sigmoid(out["logits"].detach()), mask)
    assert (logs["pseudo_flip"], logs["pseudo_gap"]) == pytest.approx(want)
    assert logs["pseudo"] == pytest.approx(float(soft_label_loss(out["logits"], scores,
                                                                 mask).detach()), abs=1e-6)


def test_diagnostic_frames_carry_the_run_and_draw():
    from matplotlib.figure import Figure

    from trm_lib import viz

    hist = pd.DataFrame({"epoch": [1, 2, 1, 2], "run": ["seed 0", "seed 0", "seed 1", "seed 1"],
                         "train_grad_cls": [2.0, 4.0, 1.0, 1.0],
                         "train_grad_kd": [1.0, 1.0, 0.5, 0.1],
                         "train_pseudo_flip": [0.1, 0.2, 0.3, 0.4],
                         "train_pseudo_gap": [0.1, 0.2, 0.3, 0.4]})
    ratios = gradient_ratios(hist)
    assert ratios["run"].tolist() == ["seed 0", "seed 0", "seed 1", "seed 1"]
    assert ratios["ratio"].tolist() == pytest.approx([0.5, 0.25, 0.5, 0.1])
    fig = viz.plot_training_diagnostic(ratios, "ratio", "term", "KD pull", "ratio", reference=1)
    assert isinstance(fig, Figure)
    lines = [ln for ln in fig.axes[0].lines if len(ln.get_xdata()) == 2]
    assert len(lines) == 2 + 1  # one per seed, plus the reference line
    change = target_change_history(hist)
    assert set(change["run"]) == {"seed 0", "seed 1"} and len(change) == 8
    with pytest.raises(ValueError, match="nothing to draw"):
        viz.plot_training_diagnostic(change.iloc[:0], "value", "quantity", "t", "y")


def test_gains_vs_p_draws_one_line_per_component_with_bands():
    from trm_lib import viz
    from trm_lib.experiments.stats import paired_differences

    rows = [dict(grid="g", method="trm_ml", variant=v, protocol="proportion", proportion=p,
                 seed=s, split="test", metric="mAP", value=0.6 + (0.0 if v == "full" else -d)
                 + 0.01 * s * (v == "no_kd"))
            for p, d in ((0.1, 0.02), (0.5, 0.0)) for v in ("full", "no_kd") for s in range(3)]
    fig = viz.plot_gains_vs_p(paired_differences(pd.DataFrame(rows)))
    ax = fig.axes[0]
    line = next(ln for ln in ax.lines if ln.get_label().startswith("distillation"))
    assert list(line.get_xdata()) == [0.1, 0.5]
    assert list(line.get_ydata()) == pytest.approx([1.0, -1.0])  # 100 * (0.02 - 0.01), -0.01
    assert len(ax.collections) == 1  # the CI band


def test_describe_diagnostics_states_the_last_epochs_numbers():
    from trm_lib.core.diagnostics import describe_diagnostics

    hist = pd.DataFrame({"epoch": [1, 2, 1, 2], "run": ["a", "a", "b", "b"],
                         "train_grad_cls": [2.0, 4.0, 1.0, 1.0],
                         "train_grad_kd": [1.0, 1.0, 0.5, 0.5],
                         "train_pseudo_flip": [0.5, 0.02, 0.5, 0.04],
                         "train_pseudo_gap": [0.1, 0.1, 0.3, 0.3]})
    text = describe_diagnostics(hist)
    assert "kd: at the last epoch its gradient on the query features is 0.38×" in text
    assert "3.0 %" in text and "0.200" in text
    assert "No diagnostics" in describe_diagnostics(pd.DataFrame({"epoch": [1]}))


def test_precision_coverage_hand_computed():
    from trm_lib.core.diagnostics import precision_coverage, threshold_for_precision

    # unknown entries (mask) scored 0.9, 0.8, 0.8, 0.3 with truth 1, 1, 0, 1; the observed
    # entry (score 1.0) is left out
    scores = [[0.9, 0.8, 1.0], [0.8, 0.3, 0.1]]
    truth = [[1, 1, 1], [0, 1, 0]]
    mask = [[True, True, False], [True, True, True]]
    curve = precision_coverage(scores, truth, mask)
    assert curve["threshold"].tolist() == pytest.approx([0.9, 0.8, 0.3, 0.1])
    assert curve["n"].tolist() == [1, 3, 4, 5]  # ties at 0.8 enter together
    assert curve["precision"].tolist() == pytest.approx([1.0, 2 / 3, 3 / 4, 3 / 5])
    assert curve["coverage"].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert curve["share"].tolist() == pytest.approx([1 / 5, 3 / 5, 4 / 5, 1.0])
    fixed = precision_coverage(scores, truth, mask, thresholds=[0.95, 0.5])
    assert fixed["n"].tolist() == [0, 3] and math.isnan(fixed["precision"][0])
    assert threshold_for_precision(curve, 0.8)["threshold"] == pytest.approx(0.9)
    assert threshold_for_precision(curve, 0.7)["threshold"] == pytest.approx(0.3)  # 0.8 dips
    assert threshold_for_precision(curve, 0.6)["threshold"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no threshold"):
        threshold_for_precision(curve.iloc[1:], 0.9)
    with pytest.raises(ValueError, match="shapes"):
        precision_coverage(scores, truth, [[True]])
    from trm_lib.core.diagnostics import describe_precision_coverage

    text = describe_precision_coverage(pd.concat([curve.assign(curve="A"),
                                                  curve.iloc[1:].assign(curve="B")]), 0.8)
    assert text.splitlines() == [
        "A: score ≥ 0.9 labels 1 unknown entries at 100.0 % precision, 33.3 % of the hidden "
        "positives.",
        "B: no threshold keeps precision ≥ 80 % (at most 75.0 %, at t = 0.3 on 4 entries)."]


def test_precision_coverage_draws_one_line_per_curve_and_marks_the_target():
    from matplotlib.figure import Figure

    from trm_lib import viz
    from trm_lib.core.diagnostics import precision_coverage

    a = precision_coverage([0.9, 0.8, 0.2], [1, 1, 0]).assign(curve="protocol A")
    b = precision_coverage([0.9, 0.8, 0.2], [0, 1, 1]).assign(curve="protocol B")
    fig = viz.plot_precision_coverage(pd.concat([a, b]), target=0.9)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["protocol A", "protocol B"]
    marks = [ln for ln in ax.lines if ln.get_marker() == "o"]
    assert len(marks) == 1  # only A keeps 90 % precision (at t = 0.8, 100 % covered)
    assert marks[0].get_xdata()[0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="no curve"):
        viz.plot_precision_coverage(a.iloc[:0])
