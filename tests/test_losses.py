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
    # one image, positive logit 2, negative logit -1, eps 0.2: Cole et al.'s targets 0.8 and 0.2
    x = torch.tensor([[2.0, -1.0]])
    got = partial_bce(x, torch.tensor([[1.0, -1.0]]), smoothing=0.2)
    want = -(0.8 * math.log(_sig(2)) + 0.2 * math.log(1 - _sig(2))) \
        - (0.2 * math.log(_sig(-1)) + 0.8 * math.log(1 - _sig(-1)))
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
    # official share of all 6 entries: ceil(0.4 * 6) = 3 assumed negatives, 5.0, 3.0 and 0.3
    keep = large_loss_rejection(loss, assumed, rate=0.4)
    assert keep.tolist() == [[False, True, False], [True, True, False]]
    # share of the 5 assumed negatives: ceil(0.4 * 5) = 2, 5.0 and 3.0
    keep = large_loss_rejection(loss, assumed, rate=0.4, share="assumed_negatives")
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
    # LL-R at epoch 3 with delta 0.3 (max rate 1): rate 0.6. Official share of all B*C = 4
    # entries: ceil(0.6 * 4) = 3, every assumed negative rejected
    cfg = MethodConfig(cls_loss="bce", loss="ll_r", ll_delta=0.3, ll_max_rate=1.0)
    assert float(classification_loss(cfg, x, t, epoch=3)) == pytest.approx(bce(2, 1), rel=1e-6)
    # share of the 3 assumed negatives: ceil(0.6 * 3) = 2 rejected, the largest (logits 3 and 1)
    cfg = MethodConfig(cls_loss="bce", loss="ll_r", ll_delta=0.3, ll_max_rate=1.0,
                       ll_r_share="assumed_negatives")
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
                {"an_neg_weight": -1.0}, {"ll_r_share": "assumed"}):
        with pytest.raises(ConfigError, match="method."):
            MethodConfig(**bad).validate()
    MethodConfig(loss="an", cls_loss="bce", label_smoothing=0.1).validate()


# ------------------------------------------------- the peers' own code, transcribed and compared
# Each peer function below is transcribed from its repository (cited), only unpacked from the
# batch / P dictionaries; ours must agree on seeded random inputs up to the peers' reduction
# (a mean over all B*C entries; ours divides the sum by B, so ours = C * theirs).

_COLE_LOG_EPSILON = 1e-5  # elijahcole/single-positive-multi-label losses.py: LOG_EPSILON


def _cole_neg_log(x, log_epsilon=_COLE_LOG_EPSILON):
    return - torch.log(x + log_epsilon)


def _cole_an_ls(preds, observed_labels, ls_coef, log_epsilon=_COLE_LOG_EPSILON):
    """elijahcole/single-positive-multi-label, losses.py: loss_an_ls, then compute_batch_loss's
    ``(loss_mtx / loss_denom_mtx).sum()`` with ``loss_denom_mtx = B * C``."""
    def neg_log(x):
        return _cole_neg_log(x, log_epsilon)
    assert torch.min(observed_labels) >= 0
    loss_mtx = torch.zeros_like(observed_labels)
    loss_mtx[observed_labels == 1] = (1.0 - ls_coef) * neg_log(preds[observed_labels == 1]) + ls_coef * neg_log(1.0 - preds[observed_labels == 1])  # noqa: E501
    loss_mtx[observed_labels == 0] = (1.0 - ls_coef) * neg_log(1.0 - preds[observed_labels == 0]) + ls_coef * neg_log(preds[observed_labels == 0])  # noqa: E501
    batch_size, num_classes = int(preds.size(0)), int(preds.size(1))
    loss_denom_mtx = (num_classes * batch_size) * torch.ones_like(preds)
    return (loss_mtx / loss_denom_mtx).sum()


def _spml_case(seed: int, b: int, c: int, dtype=torch.float32):
    """Seeded logits and single-positive labels (one observed positive per image, 0 elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(b, c, generator=g)).to(dtype)
    labels = torch.zeros(b, c, dtype=dtype)
    labels[torch.arange(b), torch.randint(c, (b,), generator=g)] = 1.0
    return logits, labels


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("eps", [0.1, 0.2, 0.45])
def test_an_ls_equals_cole_loss_an_ls(seed, eps):
    from trm_lib.config.run_config import MethodConfig
    from trm_lib.core.model import classification_loss

    b, c = 3 + seed, 4 + seed % 3
    logits, labels = _spml_case(seed, b, c, torch.float64)
    cfg = MethodConfig(cls_loss="bce", loss="an", label_smoothing=eps)
    ours = float(classification_loss(cfg, logits, labels))
    preds = torch.sigmoid(logits)
    # exact logs: identical up to the reduction
    assert ours == pytest.approx(c * float(_cole_an_ls(preds, labels, eps, 0.0)), rel=1e-6)
    # their eps-shifted log only moves each entry by ~1e-5 / p
    assert ours == pytest.approx(c * float(_cole_an_ls(preds, labels, eps)), rel=2e-3)


def test_an_ls_hand_computed_b1_c3():
    # B = 1, C = 3, eps = 0.2, positive logit 1.5, assumed negatives 0.5 and -2: targets 0.8 / 0.2
    x = torch.tensor([[1.5, 0.5, -2.0]])
    bce = lambda v, y: -(y * math.log(_sig(v)) + (1 - y) * math.log(1 - _sig(v)))  # noqa: E731
    want = bce(1.5, 0.8) + bce(0.5, 0.2) + bce(-2.0, 0.2)  # sum / B
    from trm_lib.config.run_config import MethodConfig
    from trm_lib.core.model import classification_loss

    cfg = MethodConfig(cls_loss="bce", loss="an", label_smoothing=0.2)
    got = float(classification_loss(cfg, x, torch.tensor([[1.0, 0.0, 0.0]])))
    assert got == pytest.approx(want, rel=1e-6)
    assert want == pytest.approx(3.0 * float(_cole_an_ls(torch.sigmoid(x.double()),
                                                          torch.tensor([[1.0, 0.0, 0.0]]).double(),
                                                          0.2, 0.0)), rel=1e-9)
    # the old 1 - eps/2, eps/2 targets give a different loss (the issue's discrepancy)
    old = bce(1.5, 0.9) + bce(0.5, 0.1) + bce(-2.0, 0.1)
    assert abs(got - old) > 0.1


def _llm_compute_batch_loss(preds, label_vec, clean_rate):
    """snucml/LargeLossMatters, losses.py (commit 5025d16): loss_an + compute_batch_loss with
    ``P['mod_scheme'] = 'LL-R'``; ``preds`` are logits. Returns (main_loss, final_loss_matrix)."""
    batch_size = int(preds.size(0))
    num_classes = int(preds.size(1))
    unobserved_mask = (label_vec == 0)
    observed_labels = label_vec.clip(0)
    loss_matrix = F.binary_cross_entropy_with_logits(preds, observed_labels, reduction='none')
    if clean_rate == 1:  # if epoch is 1, do not modify losses
        final_loss_matrix = loss_matrix
    else:
        k = math.ceil(batch_size * num_classes * (1 - clean_rate))
        unobserved_loss = unobserved_mask.bool() * loss_matrix
        topk = torch.topk(unobserved_loss.flatten(), k)
        topk_lossvalue = topk.values[-1]
        zero_loss_matrix = torch.zeros_like(loss_matrix)
        final_loss_matrix = torch.where(unobserved_loss < topk_lossvalue, loss_matrix,
                                        zero_loss_matrix)
    main_loss = final_loss_matrix.mean()
    return main_loss, final_loss_matrix


def _llm_clean_rate(epoch: int, delta_rel: float) -> float:
    """snucml/LargeLossMatters train.py: ``clean_rate = 1``, ``-= delta_rel`` after each epoch."""
    clean_rate = 1
    for _ in range(1, epoch):
        clean_rate -= delta_rel
    return clean_rate


@pytest.mark.parametrize("seed", range(12))
def test_ll_r_equals_large_loss_matters(seed):
    from trm_lib.config.run_config import MethodConfig
    from trm_lib.core.model import classification_loss

    rng = torch.Generator().manual_seed(100 + seed)
    b, c = 2 + seed % 5, 3 + seed % 7
    logits, labels = _spml_case(seed, b, c)
    if seed % 2:  # partial labels: some observed negatives too
        neg = (torch.rand(b, c, generator=rng) < 0.3) & (labels == 0)
        labels[neg] = -1.0
    n_unobserved = int((labels == 0).sum())
    compared = 0
    for delta in (0.01, 0.05, 0.1, 0.2):
        for epoch in range(1, 9):
            clean_rate = _llm_clean_rate(epoch, delta)
            if math.ceil(b * c * (1 - clean_rate)) > n_unobserved:
                continue  # theirs then drops observed entries too (test below)
            theirs, _ = _llm_compute_batch_loss(logits, labels, clean_rate)
            cfg = MethodConfig(cls_loss="bce", loss="ll_r", ll_delta=delta, ll_max_rate=1.0)
            ours = classification_loss(cfg, logits, labels, epoch=epoch)
            assert float(ours) == pytest.approx(c * float(theirs), rel=1e-5, abs=1e-7), \
                (delta, epoch)
            compared += 1
    assert compared >= 16


def test_ll_r_issue_case_b4_c5_delta005_epoch7():
    from trm_lib.core.losses import large_loss_rejection, rejection_rate

    logits, labels = _spml_case(7, 4, 5)
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    assumed = labels == 0  # 16 unknowns
    rate = rejection_rate(7, 0.05)
    assert rate == 1 - _llm_clean_rate(7, 0.05)
    # official: ceil(20 * 0.30000000000000027) = 7 (float drift of clean_rate -= 0.05; exact: 6)
    keep = large_loss_rejection(loss, assumed, rate)
    assert int((~keep).sum()) == 7
    _, final = _llm_compute_batch_loss(logits, labels, _llm_clean_rate(7, 0.05))
    assert torch.equal(~keep, final == 0)
    # the earlier rule, a share of the 16 assumed negatives: ceil(0.3 * 16) = 5
    old = large_loss_rejection(loss, assumed, rate, share="assumed_negatives")
    assert int((~old).sum()) == 5
    with pytest.raises(ValueError, match="share"):
        large_loss_rejection(loss, assumed, rate, share="nope")


def test_ll_r_never_drops_observed_entries_where_the_official_code_would():
    from trm_lib.core.losses import large_loss_rejection

    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    labels = torch.tensor([[1.0, -1.0, 0.0, -1.0]])  # one unknown of 4 entries
    loss = F.binary_cross_entropy_with_logits(logits, labels.clip(0), reduction="none")
    # rate 0.5 of 4 entries = 2 > 1 unknown: the official threshold becomes 0 ...
    _, final = _llm_compute_batch_loss(logits, labels, 0.5)
    assert bool((final == 0).all())
    # ... ours rejects the one unknown and keeps every observed entry
    keep = large_loss_rejection(loss, labels == 0, 0.5)
    assert keep.tolist() == [[True, True, False, True]]


def _miil_asl(x, y, gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8):
    """Alibaba-MIIL/ASL, src/loss_functions/losses.py: AsymmetricLoss.forward (y in {0, 1})."""
    x_sigmoid = torch.sigmoid(x)
    xs_pos = x_sigmoid
    xs_neg = 1 - x_sigmoid
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        pt0 = xs_pos * y
        pt1 = xs_neg * (1 - y)
        pt = pt0 + pt1
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        one_sided_w = torch.pow(1 - pt, one_sided_gamma)
        loss *= one_sided_w
    return -loss.sum()


@pytest.mark.parametrize("seed", range(4))
def test_asl_is_alibaba_miil_asl_divided_by_the_batch_size(seed):
    logits, _ = _spml_case(seed, 6, 7, torch.float64)
    g = torch.Generator().manual_seed(seed)
    y01 = (torch.rand(6, 7, generator=g) < 0.3).double()
    for gn, gp, clip in ((2.0, 1.0, 0.05), (4.0, 0.0, 0.05), (0.0, 0.0, 0.0)):
        theirs = float(_miil_asl(logits, y01, gn, gp, clip))
        ours = float(partial_asl(logits, 2 * y01 - 1, gp, gn, clip))
        assert ours * 6 == pytest.approx(theirs, rel=1e-6)  # theirs is the plain sum
