"""Loss functions: partial ASL / BCE, distillation, multimodal contrastive (their switches:
docs/METHOD_CHOICES.md, the loss rows).

Pure functions, no method logic and no state: the methods (:mod:`trm_lib.core.model`,
:mod:`trm_lib.core.baselines`) decide *what* to feed them. Label convention everywhere: targets in
{1, -1, 0} with 0 = unknown; an unknown entry contributes exactly zero loss and zero gradient.

Reduction: classification losses are *summed* over the observed entries and divided by the batch
size B. The peers differ only by a constant factor, which no per-entry comparison hides:
Alibaba-MIIL/ASL's ``AsymmetricLoss`` and DualCoOp's ASL return the plain sum (ours is theirs ÷ B);
Cole et al.'s ``compute_batch_loss`` (AN, AN-LS, WAN), Zhou et al.'s (EM) and LargeLossMatters'
(LL-R) take the mean over all B·C entries (ours is theirs × C). Dividing by B keeps the loss
independent of the batch size; like the peers' conventions, the sum (not a mean over observed
entries) lets the loss scale grow with the label proportion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["LL_R_SHARES", "assume_negative", "distillation_loss", "entropy_maximization",
           "large_loss_rejection", "multimodal_contrastive_loss", "partial_asl", "partial_bce",
           "rejection_rate", "soft_label_loss"]


def _check_targets(logits: torch.Tensor, targets: torch.Tensor, where: str) -> None:
    if logits.shape != targets.shape:
        raise ValueError(f"{where}: logits {tuple(logits.shape)} and targets "
                         f"{tuple(targets.shape)} must have the same shape")
    if logits.dim() < 1 or logits.shape[0] == 0:
        raise ValueError(f"{where}: empty batch")


def partial_asl(logits: torch.Tensor, targets: torch.Tensor, gamma_pos: float = 1.0,
                gamma_neg: float = 2.0, clip: float = 0.05,
                weights: torch.Tensor | None = None, reduction: str = "sum") -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., 2021) on the observed entries only.

    With ``p = sigmoid(logits)`` and the shifted negative probability ``p_m = max(p - clip, 0)``::

        positive (y = 1):  -(1 - p)^gamma_pos   * log(p)
        negative (y = -1): -(p_m)^gamma_neg     * log(1 - p_m)
        unknown  (y = 0):  0

    summed and divided by the batch size (Alibaba-MIIL/ASL and DualCoOp return the plain sum: the
    ÷ B is ours, a constant scale factor). Logs come from ``logsigmoid`` (exact, no eps clamp as
    in the lineage's ``log(p.clamp(min=1e-8))``, which only differs for logits below -18). The
    focal factors are computed without gradient (the lineage's
    ``disable_torch_grad_focal_loss=True``): they re-weight entries, they are not a target to
    optimise. The margin ``clip`` makes easy negatives (p < clip) cost exactly nothing,
    which is what protects against the many false negatives of partial labels.
    ``weights`` (same shape, >= 0) scales each entry, e.g. to down-weight pseudo-labels.

    DualCoOp's "ASL on the softmax over the (neg, pos) pair" is this function applied to
    ``pos_logit - neg_logit``, because ``softmax([n, p])[1] == sigmoid(p - n)``.
    With ``gamma_pos = gamma_neg = 0`` and ``clip = 0`` it equals :func:`partial_bce`.
    ``reduction="none"`` returns the (B, C) per-entry losses instead (for large-loss rejection).
    """
    _check_targets(logits, targets, "partial_asl")
    x = logits.float()
    pos = targets > 0
    neg = targets < 0
    log_p = F.logsigmoid(x)
    if clip > 0:
        # log(1 - p_m) = log(min(1 - p + clip, 1)) >= log(clip): finite without an eps clamp.
        log_1m = torch.log((torch.sigmoid(-x) + clip).clamp(max=1.0))
    else:
        log_1m = F.logsigmoid(-x)
    with torch.no_grad():
        p = torch.sigmoid(x)
        p_m = (p - clip).clamp(min=0.0) if clip > 0 else p
        w_pos = (1.0 - p).pow(gamma_pos) if gamma_pos else torch.ones_like(p)
        w_neg = p_m.pow(gamma_neg) if gamma_neg else torch.ones_like(p)
    zero = torch.zeros_like(x)
    # torch.where (not multiplication by a 0/1 mask) so unknown entries get an exact 0 gradient
    # even where a log would be -inf.
    loss = torch.where(pos, -w_pos * log_p, zero)
    loss = loss + torch.where(neg, -w_neg * log_1m, zero)
    if weights is not None:
        loss = loss * weights.to(loss.dtype)
    return _reduce(loss, reduction, "partial_asl")


def _reduce(loss: torch.Tensor, reduction: str, where: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction != "sum":
        raise ValueError(f"{where}: reduction must be sum|none, got {reduction!r}")
    return loss.sum() / loss.shape[0]


def partial_bce(logits: torch.Tensor, targets: torch.Tensor,
                weights: torch.Tensor | None = None, smoothing: float = 0.0,
                reduction: str = "sum") -> torch.Tensor:
    """Binary cross-entropy on the observed entries only, summed and divided by the batch size
    (same convention as :func:`partial_asl`, so switching ``method.cls_loss`` changes only the
    per-entry loss, not its scale).

    ``smoothing`` ε: label smoothing as Cole et al. 2021 compute it (elijahcole/
    single-positive-multi-label ``losses.py``, ``loss_an_ls`` / ``loss_bce_ls``): a positive costs
    ``(1 − ε)·(−log p) + ε·(−log(1 − p))`` and a negative the mirror image, i.e. BCE against the
    targets **1 − ε and ε**. After :func:`assume_negative` this is their AN-LS. (Their sum is
    divided by B·C, ours by B, and their ``−log(x + 1e-5)`` differs from the exact log by
    < 1e-4 for p in [0.1, 0.9].) The symmetric two-class form 1 − ε/2, ε/2 that this function
    used before is the same loss at ε/2, so it needs no switch of its own."""
    _check_targets(logits, targets, "partial_bce")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"partial_bce: smoothing must lie in [0, 1), got {smoothing}")
    x = logits.float()
    observed = targets != 0
    y = torch.where(targets > 0, 1.0 - smoothing, smoothing).to(x.dtype)
    per = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    loss = torch.where(observed, per, torch.zeros_like(per))
    if weights is not None:
        loss = loss * weights.to(loss.dtype)
    return _reduce(loss, reduction, "partial_bce")


# ------------------------------------------------------------------ single-positive losses
def assume_negative(targets: torch.Tensor, weights: torch.Tensor | None = None,
                    neg_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """"Assume negative" (AN, Cole et al. 2021): every unknown entry becomes a negative of
    weight ``neg_weight`` (1: AN; 1/(C−1): the weak negatives of WAN). Returns the completed
    targets in {1, −1} and the per-entry weights (observed entries keep ``weights`` or 1).
    Under protocol B nothing is observed absent, so without this a partial loss sees only
    positives and every logit can grow without bound."""
    t = targets.float()
    w = torch.ones_like(t) if weights is None else weights.float()
    unknown = t == 0
    return (torch.where(unknown, torch.full_like(t, -1.0), t),
            torch.where(unknown, torch.full_like(w, float(neg_weight)), w))


#: ``method.ll_r_share``: what LL-R's rate is a share of (docs/METHOD_CHOICES.md)
LL_R_SHARES = ("all", "assumed_negatives")


def rejection_rate(epoch: int, delta: float, max_rate: float = 1.0) -> float:
    """LL-R's schedule (Kim et al. 2022): no rejection in epoch 1, then ``delta`` more per
    epoch, at most ``max_rate``.

    Computed as snucml/LargeLossMatters does (``clean_rate = 1``, ``clean_rate -= delta_rel``
    after every epoch, rate = ``1 - clean_rate``), float rounding included, so that the number of
    rejected entries matches theirs exactly: e.g. δ = 0.05 at epoch 7 gives 0.30000000000000027,
    and ceil(20 · rate) = 7 where the exact 0.3 would give 6."""
    clean = 1.0
    for _ in range(max(0, int(epoch) - 1)):
        clean -= delta
    return float(min(max_rate, max(0.0, 1.0 - clean)))


def large_loss_rejection(entry_loss: torch.Tensor, assumed: torch.Tensor, rate: float,
                         share: str = "all") -> torch.Tensor:
    """Bool keep-mask of "large loss matters" rejection (LL-R, Kim et al. CVPR 2022): the
    ``assumed`` (unknown-as-negative) entries of the batch with the largest loss are dropped — a
    large loss on an assumed negative is most likely a missed positive that the model has
    started to recognise. Ranking is on the detached loss; ties at the cut are dropped together.

    How many, ``k``:

    - ``share="all"`` (default; snucml/LargeLossMatters ``losses.py``, ``compute_batch_loss``):
      ``k = ceil(B·C · rate)``, a share of *all* B·C entries of the batch, taken among the
      unobserved ones. Where k exceeds the number of unobserved entries the official code's
      threshold falls to 0 and drops observed entries too (it only ran single-positive labels,
      where that cannot happen below rate (C−1)/C); here k stops at the unobserved count and an
      observed entry is never dropped.
    - ``share="assumed_negatives"`` (this package's earlier rule): ``k = ceil(rate ·
      n_assumed)``, a share of the assumed negatives. Under partial labels the two differ by the
      factor 1 / (1 − p): at p = 0.9 ``all`` rejects ten times as many unknowns.
    """
    if entry_loss.shape != assumed.shape:
        raise ValueError(f"large_loss_rejection: loss {tuple(entry_loss.shape)} and mask "
                         f"{tuple(assumed.shape)} must have the same shape")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"large_loss_rejection: rate must lie in [0, 1], got {rate}")
    if share not in LL_R_SHARES:
        raise ValueError(f"large_loss_rejection: share must be one of {LL_R_SHARES} "
                         f"(method.ll_r_share), got {share!r}")
    keep = torch.ones_like(assumed, dtype=torch.bool)
    n = int(assumed.sum())
    if share == "all":
        k = min(n, math.ceil(assumed.numel() * rate))  # the official count, float rounding too
    else:
        k = min(n, math.ceil(rate * n - 1e-9))
    if k <= 0:
        return keep
    loss = entry_loss.detach().float()
    cut = torch.topk(loss[assumed], k).values[-1]
    return keep & ~(assumed & (loss >= cut))


def entropy_maximization(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.1,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """EM loss (Zhou et al. ECCV 2022, "Acknowledging the unknown"): BCE on the observed
    entries plus ``−alpha · H(σ(x))`` on the unknown ones, summed and divided by the batch size.
    Maximising the entropy of the unknowns keeps them undecided instead of assuming them
    negative (AN) or leaving them free to drift (the partial loss)."""
    _check_targets(logits, targets, "entropy_maximization")
    x = logits.float()
    observed = partial_bce(x, targets, weights, reduction="none")
    p = torch.sigmoid(x)
    entropy = -(p * F.logsigmoid(x) + (1.0 - p) * F.logsigmoid(-x))
    unknown = torch.where(targets == 0, -alpha * entropy, torch.zeros_like(entropy))
    return (observed + unknown).sum() / x.shape[0]


def distillation_loss(z: torch.Tensor, r: torch.Tensor, kind: str = "cosine",
                      logits_z: torch.Tensor | None = None,
                      logits_r: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Region-level (teacher) → query-level (student) distillation; the teacher is detached.

    - ``cosine``: ``mean(1 - cos(z, sg(r)))`` over all (image, class) pairs.
    - ``mse``: ``mean((ẑ - sg(r̂))²)`` over all elements, on L2-normalised features. Note that
      ``|ẑ - r̂|² = 2 - 2 cos``, so this is the cosine loss scaled by ``2 / D``: the switch
      exists to show that the normalisation, not the distance, is what matters.
    - ``kl``: Bernoulli KL between the branches' class probabilities,
      ``KL(σ(sg(logits_r)) ‖ σ(logits_z))`` — the student copies the teacher. Zero iff the
      probabilities agree; its gradient equals that of BCE with soft targets.
    - ``ensemble``: the same KL towards the *mean of both branches*,
      ``q = (σ(sg(logits_z)) + σ(sg(logits_r))) / 2``. A teacher weaker than its student (the
      region branch on the embedded world) drags a copying student down to its level; the mean of
      two branches with partly independent errors is better than either, so the student moves
      towards that instead (online distillation from a branch ensemble, as in ONE / KDCL).

    ``logits_r`` must be calibrated log-odds for ``kl`` / ``ensemble`` (see
    :class:`trm_lib.core.model.RegionCalibrator`). ``mask`` (same shape as the logits, bool) limits
    ``kl`` / ``ensemble`` to its entries (mean over them; 0 when it is empty).
    """
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(z.float(), r.detach().float(), dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(F.normalize(z.float(), dim=-1), F.normalize(r.detach().float(), dim=-1))
    if kind in ("kl", "ensemble"):
        if logits_z is None or logits_r is None:
            raise ValueError(f"distillation_loss(kind={kind!r}) needs logits_z and logits_r")
        lz, lr = logits_z.float(), logits_r.detach().float()
        q = torch.sigmoid(lr)
        if kind == "ensemble":
            q = 0.5 * (q + torch.sigmoid(lz.detach()))
        return soft_label_loss(lz, q, mask, where="distillation_loss")
    raise ValueError(f"distillation_loss: kind must be cosine|mse|kl|ensemble (method.kd), "
                     f"got {kind!r}")


def soft_label_loss(logits: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None = None,
                    where: str = "soft_label_loss") -> torch.Tensor:
    """Bernoulli ``KL(q ‖ σ(logits))`` per entry, averaged over ``mask`` (all entries if None;
    0 when the mask is empty). ``q`` is a target probability and gets no gradient.

    The KL and not the BCE with soft targets, so a perfect student costs exactly 0 (the two
    differ by the target's entropy, which is constant in the student: same gradient). Shared by
    the probability forms of distillation and the soft pseudo-labels."""
    x, q = logits.float(), q.detach().float()
    if q.shape != x.shape:
        raise ValueError(f"{where}: target {tuple(q.shape)} must have the logits' shape "
                         f"{tuple(x.shape)}")
    bce = F.binary_cross_entropy_with_logits(x, q, reduction="none")
    entropy = -(torch.xlogy(q, q) + torch.xlogy(1 - q, 1 - q))
    kl = bce - entropy
    if mask is None:
        return kl.mean()
    if mask.shape != kl.shape:
        raise ValueError(f"{where}: mask {tuple(mask.shape)} must have the logits' "
                         f"shape {tuple(kl.shape)}")
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1.0)


def _supcon(sim: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-anchor supervised-contrastive term ``-mean_{p∈P} log softmax_{a∈A}(sim)[p]``.

    ``sim`` (M, K) already divided by the temperature; ``pos`` (M, K) bool positives; ``valid``
    (M, K) bool candidate set A (must include P). Returns (M,) with NaN-free zeros for anchors that
    have no positive (the caller excludes them from the mean)."""
    sim = sim.masked_fill(~valid, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    log_prob = torch.where(pos, log_prob, torch.zeros_like(log_prob))
    n_pos = pos.sum(1)
    return -log_prob.sum(1) / n_pos.clamp(min=1)


def multimodal_contrastive_loss(
        feats: torch.Tensor, labels: torch.Tensor, text_protos: torch.Tensor,
        visual_protos: torch.Tensor | None = None, proto_valid: torch.Tensor | None = None,
        bank_feats: torch.Tensor | None = None, bank_labels: torch.Tensor | None = None,
        temp_proto: float = 0.07, temp_feat: float = 0.2,
        return_terms: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Supervised contrastive loss pulling query-level features to their class across modalities.

    Inputs: ``feats`` (M, D) query-level features z_{n,c} of the (known or pseudo) positive
    entries — the anchors — with ``labels`` (M,) their class c; ``text_protos`` (C, D) t_c;
    ``visual_protos`` (C, D) with ``proto_valid`` (C,) bool (classes whose memory bank is still
    empty have no visual prototype); ``bank_feats`` (K, D) / ``bank_labels`` (K,) the memory bank.
    Everything is L2-normalised here. Memory bank and visual prototypes are treated as constants
    (detached); text prototypes carry gradient only if they are learnable upstream.

    For anchor i of class y_i, with ``s(a, b) = â·b̂``:

    *Prototype term* (τ_p = ``temp_proto``): candidates A_p = {t_c} ∪ {v_c : valid}, positives
    P_p = {t_{y_i}, v_{y_i}} ∩ A_p::

        L_p(i) = -1/|P_p| Σ_{p∈P_p} log( exp(s(z_i,p)/τ_p) / Σ_{a∈A_p} exp(s(z_i,a)/τ_p) )

    *Feature term* (τ_f = ``temp_feat``): candidates A_f = the other anchors of the batch and the
    memory bank, positives P_f(i) = those of class y_i; L_f(i) has the same form and is defined
    only for anchors with |P_f(i)| > 0.

    ``L = mean_i L_p(i) + mean_{i: P_f(i) ≠ ∅} L_f(i)`` (a term with no eligible anchor is 0).
    Intra-class pull = the numerators; inter-class push = other classes' prototypes and
    features in the denominators. Returns 0 (with a graph to ``feats``) if M = 0.
    ``return_terms=True`` returns the two terms ``(L_p, L_f)`` instead of their sum (for logs).
    """
    if feats.dim() != 2 or labels.shape != feats.shape[:1]:
        raise ValueError(f"multimodal_contrastive_loss: feats (M, D) and labels (M,) expected, got "
                         f"{tuple(feats.shape)} and {tuple(labels.shape)}")
    if feats.shape[0] == 0:
        zero = feats.sum() * 0.0
        return (zero, zero) if return_terms else zero
    z = F.normalize(feats.float(), dim=-1)
    labels = labels.long()
    num_classes = text_protos.shape[0]
    dev = z.device

    # --- prototype term: text prototypes of every class + valid visual prototypes ------------
    protos = [F.normalize(text_protos.float(), dim=-1)]
    proto_cls = [torch.arange(num_classes, device=dev)]
    proto_ok = [torch.ones(num_classes, dtype=torch.bool, device=dev)]
    if visual_protos is not None:
        protos.append(F.normalize(visual_protos.detach().float(), dim=-1))
        proto_cls.append(torch.arange(num_classes, device=dev))
        proto_ok.append(proto_valid.to(dev).bool() if proto_valid is not None
                        else torch.ones(num_classes, dtype=torch.bool, device=dev))
    P = torch.cat(protos)
    p_cls, p_ok = torch.cat(proto_cls), torch.cat(proto_ok)
    sim_p = z @ P.t() / temp_proto
    pos_p = (labels[:, None] == p_cls[None, :]) & p_ok[None, :]
    loss_proto = _supcon(sim_p, pos_p, p_ok[None, :].expand_as(pos_p)).mean()

    # --- feature term: other anchors in the batch + memory bank ------------------------------
    cand, cand_cls = [z], [labels]
    if bank_feats is not None and bank_feats.shape[0] > 0:
        cand.append(F.normalize(bank_feats.detach().float(), dim=-1))
        cand_cls.append(bank_labels.to(dev).long())
    H, h_cls = torch.cat(cand), torch.cat(cand_cls)
    m = z.shape[0]
    not_self = torch.ones(m, H.shape[0], dtype=torch.bool, device=dev)
    not_self[:, :m] &= ~torch.eye(m, dtype=torch.bool, device=dev)
    pos_f = (labels[:, None] == h_cls[None, :]) & not_self
    has_pos = pos_f.any(1)
    if has_pos.any():
        per = _supcon(z @ H.t() / temp_feat, pos_f, not_self)
        loss_feat = per[has_pos].mean()
    else:
        loss_feat = z.sum() * 0.0
    return (loss_proto, loss_feat) if return_terms else loss_proto + loss_feat
