"""Losses against hand computations and torch reference ops (docs/METHOD_CHOICES.md: the loss rows)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trm_lib.core.losses import (
    distillation_loss,
    multimodal_contrastive_loss,
    partial_asl,
    partial_bce,
    soft_label_loss,
)

torch.set_num_threads(1)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_asl_hand_computed_2x2():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    targets = torch.tensor([[1, -1], [0, 1]])
    # by hand: positive -(1-p)^1 log p; negative -(p-0.05)^2 log(1-(p-0.05)); unknown 0
    p00, p01, p11 = _sig(0.0), _sig(2.0), _sig(1.0)
    pm = p01 - 0.05
    expected = ((1 - p00) * -math.log(p00) + pm**2 * -math.log(1 - pm)
                + (1 - p11) * -math.log(p11)) / 2
    got = partial_asl(logits, targets, gamma_pos=1, gamma_neg=2, clip=0.05)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_asl_margin_makes_easy_negatives_free():
    logits = torch.tensor([[math.log(0.04 / 0.96)]])  # p = 0.04 < clip
    assert partial_asl(logits, torch.tensor([[-1]])).item() == 0.0


def test_asl_reduces_to_bce_and_matches_torch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=gen) * 3
    targets = torch.randint(-1, 2, (5, 7), generator=gen)
    asl = partial_asl(logits, targets, gamma_pos=0, gamma_neg=0, clip=0)
    bce = partial_bce(logits, targets)
    mask = targets != 0
    ref = F.binary_cross_entropy_with_logits(logits[mask], (targets[mask] > 0).float(),
                                             reduction="sum") / 5
    assert asl.item() == pytest.approx(ref.item(), rel=1e-6)
    assert bce.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("fn", [partial_asl, partial_bce])
def test_unknown_entries_have_zero_loss_and_gradient(fn):
    targets = torch.tensor([[1, 0, -1], [0, 0, 1]])
    logits = torch.tensor([[0.3, 80.0, -0.2], [-90.0, 0.0, 1.0]], requires_grad=True)
    loss = fn(logits, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert (logits.grad[targets == 0] == 0).all()
    assert (logits.grad[targets != 0] != 0).all()
    moved = logits.detach().clone()
    moved[targets == 0] = torch.tensor([-5.0, 7.0, 3.0])
    assert fn(moved, targets).item() == loss.item()


def test_focal_weight_carries_no_gradient():
    # d/dx of -(1-p) log p with the weight detached is -(1-p)(1-p) = -(1-p)^2
    x = torch.tensor([[0.7]], requires_grad=True)
    partial_asl(x, torch.tensor([[1]]), gamma_pos=1, gamma_neg=0, clip=0).backward()
    p = _sig(0.7)
    assert x.grad.item() == pytest.approx(-(1 - p) ** 2, rel=1e-6)


def test_weights_scale_entries():
    logits = torch.tensor([[0.5, -0.5]])
    targets = torch.tensor([[1, -1]])
    w = torch.tensor([[0.0, 2.0]])
    full = partial_asl(logits, targets, weights=torch.ones(1, 2))
    neg_only = partial_asl(torch.tensor([[-0.5]]), torch.tensor([[-1]]))
    assert partial_asl(logits, targets, weights=w).item() == pytest.approx(2 * neg_only.item())
    assert full.item() == pytest.approx(partial_asl(logits, targets).item())


def test_pair_softmax_is_sigmoid_of_difference():
    """DualCoOp's "ASL on the softmax over (neg, pos)" is partial_asl(pos - neg)."""
    gen = torch.Generator().manual_seed(1)
    pos, neg = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    pair = torch.softmax(torch.stack([neg, pos]), dim=0)[1]
    assert torch.allclose(pair, torch.sigmoid(pos - neg), atol=1e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        partial_asl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_distillation_hand_cases():
    z = torch.tensor([[[1.0, 0.0], [2.0, 0.0]]])  # (B=1, C=2, D=2)
    r = torch.tensor([[[0.0, 3.0], [5.0, 0.0]]])
    assert distillation_loss(z, r, "cosine").item() == pytest.approx(0.5)  # (1 + 0) / 2
    # normalised: ([1,0]-[0,1])^2 = 2 over 2 elements, 0 for the second pair -> mean 0.5
    assert distillation_loss(z, r, "mse").item() == pytest.approx(0.5)
    lz, lr = torch.tensor([[0.0]]), torch.tensor([[math.log(3.0)]])  # p = 0.5, q = 0.75
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert distillation_loss(z, r, "kl", lz, lr).item() == pytest.approx(kl, rel=1e-6)
    assert distillation_loss(z, r, "kl", lr, lr).item() == pytest.approx(0.0, abs=1e-7)
    # ensemble: target (0.5 + 0.75) / 2 = 0.625
    ens = 0.625 * math.log(0.625 / 0.5) + 0.375 * math.log(0.375 / 0.5)
    assert distillation_loss(z, r, "ensemble", lz, lr).item() == pytest.approx(ens, rel=1e-5)


def test_masked_distillation_averages_over_the_mask():
    lz = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    lr = torch.tensor([[1.0, -3.0], [0.5, 0.0]])
    z = torch.zeros(2, 2, 4)
    mask = torch.tensor([[True, False], [False, True]])
    per = [distillation_loss(z[:1, :1], z[:1, :1], "ensemble", lz[i:i + 1, j:j + 1],
                             lr[i:i + 1, j:j + 1]).item() for i, j in ((0, 0), (1, 1))]
    got = distillation_loss(z, z, "ensemble", lz, lr, mask=mask).item()
    assert got == pytest.approx(sum(per) / 2, rel=1e-6)
    empty = distillation_loss(z, z, "kl", lz, lr, mask=torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="mask"):
        distillation_loss(z, z, "kl", lz, lr, mask=torch.ones(3, dtype=torch.bool))


def test_ensemble_gradient_is_student_minus_the_branch_mean():
    lz = torch.tensor([[0.3, -1.2, 2.0]], requires_grad=True)
    lr = torch.tensor([[1.0, 0.5, -2.0]], requires_grad=True)
    distillation_loss(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), "ensemble", lz, lr).backward()
    q = 0.5 * (torch.sigmoid(lz.detach()) + torch.sigmoid(lr.detach()))
    assert torch.allclose(lz.grad, (torch.sigmoid(lz.detach()) - q) / 3, atol=1e-7)
    assert lr.grad is None


def test_mse_is_scaled_cosine():
    gen = torch.Generator().manual_seed(2)
    z, r = torch.randn(3, 4, 16, generator=gen), torch.randn(3, 4, 16, generator=gen)
    assert distillation_loss(z, r, "mse").item() == pytest.approx(
        2 / 16 * distillation_loss(z, r, "cosine").item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["cosine", "mse", "kl", "ensemble"])
def test_distillation_teacher_gets_no_gradient(kind):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 3, 8, generator=gen, requires_grad=True)
    r = torch.randn(2, 3, 8, generator=gen, requires_grad=True)
    lz = torch.randn(2, 3, generator=gen, requires_grad=True)
    lr = torch.randn(2, 3, generator=gen, requires_grad=True)
    distillation_loss(z, r, kind, lz, lr).backward()
    assert r.grad is None and lr.grad is None
    student = lz.grad if kind in ("kl", "ensemble") else z.grad
    assert student is not None and student.abs().sum() > 0


def test_distillation_errors():
    with pytest.raises(ValueError, match="method.kd"):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), "l1")
    with pytest.raises(ValueError, match="logits"):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), "kl")


def _reference_mcl(z, y, text, vis, valid, bank, bank_y, tp, tf):
    """Loop implementation of the docstring formula, written independently of the vectorised one."""
    z = F.normalize(z, dim=-1)
    text, vis, bank = (F.normalize(t, dim=-1) for t in (text, vis, bank))
    protos = [(text[c], c) for c in range(len(text))] + \
             [(vis[c], c) for c in range(len(vis)) if valid[c]]
    lp, lf = [], []
    for i in range(len(z)):
        denom = sum(math.exp(float(z[i] @ p) / tp) for p, _ in protos)
        pos = [float(z[i] @ p) / tp for p, c in protos if c == y[i]]
        lp.append(-sum(s - math.log(denom) for s in pos) / len(pos))
        cands = [(z[j], y[j]) for j in range(len(z)) if j != i] + list(zip(bank, bank_y))
        denom = sum(math.exp(float(z[i] @ h) / tf) for h, _ in cands)
        pos = [float(z[i] @ h) / tf for h, c in cands if c == y[i]]
        if pos:
            lf.append(-sum(s - math.log(denom) for s in pos) / len(pos))
    return sum(lp) / len(lp) + (sum(lf) / len(lf) if lf else 0.0)


def test_contrastive_matches_loop_reference():
    gen = torch.Generator().manual_seed(4)
    C, D = 4, 8
    z, y = torch.randn(6, D, generator=gen), torch.tensor([0, 1, 1, 2, 3, 3])
    text, vis = torch.randn(C, D, generator=gen), torch.randn(C, D, generator=gen)
    valid = torch.tensor([True, False, True, True])
    bank, bank_y = torch.randn(5, D, generator=gen), torch.tensor([0, 0, 2, 1, 3])
    got = multimodal_contrastive_loss(z, y, text, vis, valid, bank, bank_y, 0.07, 0.2)
    ref = _reference_mcl(z, y.tolist(), text, vis, valid.tolist(), bank, bank_y.tolist(), 0.07,
                         0.2)
    assert got.item() == pytest.approx(ref, rel=1e-5)
    lp, lf = multimodal_contrastive_loss(z, y, text, vis, valid, bank, bank_y, return_terms=True)
    assert (lp + lf).item() == pytest.approx(got.item(), rel=1e-6)


def test_contrastive_clustered_beats_shuffled_and_is_finite():
    gen = torch.Generator().manual_seed(5)
    C, D = 5, 32
    centres = F.normalize(torch.randn(C, D, generator=gen), dim=-1)
    y = torch.arange(C).repeat(4)
    z = centres[y] + 0.1 * torch.randn(len(y), D, generator=gen)
    shuffled = y[torch.randperm(len(y), generator=gen)]
    clustered = multimodal_contrastive_loss(z, y, centres, centres, torch.ones(C, dtype=bool))
    mixed = multimodal_contrastive_loss(z, shuffled, centres, centres, torch.ones(C, dtype=bool))
    assert torch.isfinite(clustered) and torch.isfinite(mixed)
    assert clustered.item() < mixed.item()


def test_contrastive_gradient_only_into_anchors():
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(4, 8, generator=gen, requires_grad=True)
    vis = torch.randn(3, 8, generator=gen, requires_grad=True)
    bank = torch.randn(2, 8, generator=gen, requires_grad=True)
    text = torch.randn(3, 8, generator=gen)
    loss = multimodal_contrastive_loss(z, torch.tensor([0, 0, 1, 2]), text, vis, None, bank,
                                       torch.tensor([1, 2]))
    loss.backward()
    assert z.grad.abs().sum() > 0 and vis.grad is None and bank.grad is None


def test_contrastive_without_anchors_or_positives():
    z = torch.randn(0, 8, requires_grad=True)
    out = multimodal_contrastive_loss(z, torch.zeros(0, dtype=torch.long), torch.randn(3, 8))
    assert out.item() == 0.0
    out.backward()  # still part of the graph
    one = torch.randn(1, 8, requires_grad=True)  # no other feature of its class: prototype term
    val = multimodal_contrastive_loss(one, torch.tensor([1]), torch.randn(3, 8))
    assert torch.isfinite(val) and val.item() > 0


def test_soft_label_loss_is_the_bernoulli_kl_against_a_direct_formula():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) * 3
    q = torch.rand(6, 4, generator=g, dtype=torch.float64)
    q[0, 0], q[1, 1] = 0.0, 1.0  # the KL must stay finite at hard targets
    p = torch.sigmoid(x)
    # KL(q || p) written out, with 0 log 0 = 0
    ref = torch.xlogy(q, q) - q * torch.log(p) + torch.xlogy(1 - q, 1 - q) - (1 - q) * torch.log1p(-p)
    torch.testing.assert_close(soft_label_loss(x, q).double(), ref.mean(), rtol=1e-5, atol=1e-6)
    mask = torch.rand(6, 4, generator=g) < 0.5
    torch.testing.assert_close(soft_label_loss(x, q, mask).double(), ref[mask].mean(),
                               rtol=1e-5, atol=1e-6)
    # a student that already agrees costs nothing; an empty mask costs nothing
    assert abs(float(soft_label_loss(x, torch.sigmoid(x)))) < 1e-6
    assert float(soft_label_loss(x, q, torch.zeros(6, 4, dtype=torch.bool))) == 0.0


def test_soft_label_loss_gradient_is_p_minus_q_on_the_mask_only():
    x = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    q = torch.tensor([[0.9, 0.1, 0.3]], requires_grad=True)
    mask = torch.tensor([[True, False, True]])
    soft_label_loss(x, q, mask).backward()
    want = (torch.sigmoid(x.detach()) - q.detach()) * mask / mask.sum()
    torch.testing.assert_close(x.grad, want)
    assert q.grad is None or not q.grad.any()  # the target is not trained
    with pytest.raises(ValueError, match="target"):
        soft_label_loss(x, q[:, :2])


# ------------------------------------------------------------------ single-positive losses
def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_assume_negative_completes_targets_with_weak_weights():
    from trm_lib.core.losses import assume_negative

    t = torch.tensor([[1.0, 0.0, -1.0]])
    targets, weights = assume_negative(t, neg_weight=0.25)
    assert targets.tolist() == [[1.0, -1.0, -1.0]] and weights.tolist() == [[1.0, 0.25, 1.0]]
    _, w2 = assume_negative(t, torch.tensor([[0.5, 7.0, 2.0]]), neg_weight=0.1)
    assert w2[0].tolist() == pytest.approx([0.5, 0.1, 2.0])


def test_label_smoothed_bce_hand_computed():
    # one image, positive logit 2, negative logit -1, eps 0.2: targets 0.9 and 0.1
    x = torch.tensor([[2.0, -1.0]])
    got = partial_bce(x, torch.tensor([[1.0, -1.0]]), smoothing=0.2)
    want = -(0.9 * math.log(_sig(2)) + 0.1 * math.log(1 - _sig(2))) \
        - (0.1 * math.log(_sig(-1)) + 0.9 * math.log(1 - _sig(-1)))
    assert float(got) == pytest.approx(want, rel=1e-6)
    per = partial_bce(x, torch.tensor([[1.0, 0.0]]), reduction="none")
    assert per[0, 1] == 0 and float(per[0, 0]) == pytest.approx(-math.log(_sig(2)), rel=1e-6)


def test_rejection_rate_schedule():
    from trm_lib.core.losses import rejection_rate

    assert rejection_rate(1, 0.1) == 0.0
    assert rejection_rate(3, 0.1) == pytest.approx(0.2)
    assert rejection_rate(20, 0.1, max_rate=0.5) == 0.5


def test_large_loss_rejection_drops_the_largest_assumed_negatives():
    from trm_lib.core.losses import large_loss_rejection

    loss = torch.tensor([[5.0, 0.1, 3.0], [0.2, 9.0, 0.3]])
    assumed = torch.tensor([[True, True, True], [True, False, True]])  # 9.0 is observed
    keep = large_loss_rejection(loss, assumed, rate=0.4)  # ceil(0.4 * 5) = 2: drop 5.0 and 3.0
    assert keep.tolist() == [[False, True, False], [True, True, True]]
    assert large_loss_rejection(loss, assumed, 0.0).all()
    assert (large_loss_rejection(loss, assumed, 1.0) == ~assumed).all()
    with pytest.raises(ValueError, match="rate"):
        large_loss_rejection(loss, assumed, 1.5)


def test_entropy_maximization_hand_computed_and_gradient():
    from trm_lib.core.losses import entropy_maximization

    x = torch.tensor([[1.0, 0.5, -2.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0, -1.0]])
    got = entropy_maximization(x, t, alpha=0.3)
    p = _sig(0.5)
    h = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    want = -math.log(_sig(1.0)) - 0.3 * h - math.log(1 - _sig(-2.0))
    assert float(got.detach()) == pytest.approx(want, rel=1e-6)
    got.backward()
    # d(-alpha H)/dx = alpha * x * p (1 - p) for the unknown entry: it is pushed towards 0
    assert float(x.grad[0, 1]) == pytest.approx(0.3 * 0.5 * p * (1 - p), rel=1e-5)


def test_classification_loss_dispatches_method_loss():
    from trm_lib.config.run_config import MethodConfig
    from trm_lib.core.model import classification_loss

    x = torch.tensor([[2.0, 1.0, -1.0, 3.0]])
    t = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # protocol B: one positive
    bce = lambda v, y: -math.log(_sig(v)) if y > 0 else -math.log(1 - _sig(v))  # noqa: E731
    cfg = MethodConfig(cls_loss="bce", loss="partial")
    assert float(classification_loss(cfg, x, t)) == pytest.approx(bce(2, 1), rel=1e-6)
    cfg = MethodConfig(cls_loss="bce", loss="an", an_neg_weight=0.5)
    want = bce(2, 1) + 0.5 * (bce(1, -1) + bce(-1, -1) + bce(3, -1))
    assert float(classification_loss(cfg, x, t)) == pytest.approx(want, rel=1e-6)
    # LL-R at epoch 3 with delta 0.3: rate 0.6, ceil(0.6 * 3) = 2 of 3 assumed negatives
    # rejected: the two largest (logits 3 and 1)
    cfg = MethodConfig(cls_loss="bce", loss="ll_r", ll_delta=0.3)
    want = bce(2, 1) + bce(-1, -1)
    assert float(classification_loss(cfg, x, t, epoch=3)) == pytest.approx(want, rel=1e-6)
    assert float(classification_loss(cfg, x, t, epoch=1)) == pytest.approx(
        bce(2, 1) + bce(1, -1) + bce(-1, -1) + bce(3, -1), rel=1e-6)
    cfg = MethodConfig(loss="an")  # ASL on the assumed negatives: margin and focusing apply
    asl = partial_asl(x, torch.tensor([[1.0, -1.0, -1.0, -1.0]]))
    assert float(classification_loss(cfg, x, t)) == pytest.approx(float(asl), rel=1e-6)


def test_single_positive_loss_config_is_validated():
    from trm_lib.config.run_config import ConfigError, MethodConfig

    for bad in ({"loss": "nope"}, {"label_smoothing": 0.1}, {"ll_delta": 2.0},
                {"an_neg_weight": -1.0}):
        with pytest.raises(ConfigError, match="method."):
            MethodConfig(**bad).validate()
    MethodConfig(loss="an", cls_loss="bce", label_smoothing=0.1).validate()
