"""The TRM-ML head: category queries, cross-attention, MLP, one-to-one matching (its switches:
docs/METHOD_CHOICES.md, the head, loss and pseudo-label rows).

Data flow for one image (C classes, L = h·w dense tokens, D = joint embedding width)::

    Q (C, D) ──LN──W_q──┐
                        ├─ A = softmax_L(q kᵀ/√d_h), head-averaged → maps (C, L)   [Figure 4]
    F (L, d) ──LN──W_k──┘
    Q̂ = W_o · A_h (LN(F) W_v)                 (per head, concatenated)
    Z = MLP(Q̂)          (C, D)  query-level features (student, trained)
    R = A · F̃           (C, D)  region-level features (teacher, CLIP space, only A is learned)
    s_c = λ cos(z_c, t_c)        one-to-one text-region logits (class c sees only its own text)

Only Q, the cross-attention and the MLP (and λ) are trained; the CLIP towers are frozen and
their outputs arrive as a feature batch (see :mod:`trm_lib.core.methods`). The training loss is
``L = L_cls + α L_kd + β L_mcl`` with pseudo-labels from :mod:`trm_lib.core.prototypes` after warm-up.

The region branch's cosines cos(r_c, t_c) are all positive and nearly alike (≈ 0.25–0.6 on the
embedded world), so σ(λ cos) is ≈ 1 for every class: its probabilities mean nothing until
calibrated. :class:`RegionCalibrator` turns them into log-odds from the observed labels; the
``ensemble`` / ``kl`` distillation and the ``query+region`` inference score use those.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from trm_lib.utils.errors import ConfigError

from .cross_attention import CategoryCrossAttention
from .diagnostics import gradient_norms, target_change
from .losses import (
    assume_negative,
    distillation_loss,
    entropy_maximization,
    large_loss_rejection,
    multimodal_contrastive_loss,
    partial_asl,
    partial_bce,
    rejection_rate,
    soft_label_loss,
)
from .methods import Method, MethodContext, register_method
from .prototypes import InstanceMemory, PrototypeMemory, PseudoLabeler

if TYPE_CHECKING:
    from trm_lib.config.run_config import MethodConfig

__all__ = ["CategoryCrossAttention", "RegionCalibrator", "TRMML", "classification_loss",
           "one_to_one_logits", "probabilities", "text_features"]

#: CLIP's own cap on the logit scale (exp(λ) ≤ 100), so a learnable λ cannot run away.
MAX_LOGIT_SCALE = 100.0


#: weight of the order-keeping term of :func:`probabilities` (its largest change of a probability)
RANK_EPS = 1e-6


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """σ(s) in float64, made strictly increasing in s everywhere.

    λ ≈ 50 puts confident logits beyond ±37, where even a float64 sigmoid rounds to exactly 1,
    so confident images tie and AP drops (measured: zero-shot TinyCLIP 48.9 instead of the 50.3
    its cosines rank to). ``(1 - 2ε) σ(s) + ε (1 + tanh(s / 100))`` keeps those images apart
    (tanh(s/100) is far from saturating for |s| ≤ λ ≤ 100), stays in [0, 1], is exactly 0.5 at
    s = 0 (thresholded metrics unchanged) and differs from σ(s) by at most 2ε = 2e-6."""
    s = logits.double()
    return (1 - 2 * RANK_EPS) * torch.sigmoid(s) + RANK_EPS * (1 + torch.tanh(s / 100))


def one_to_one_logits(feats: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float
                      ) -> torch.Tensor:
    """(B, C) ``s_c = λ cos(feats_c, t_c)``: class c's feature (B, C, D) meets only its own text
    (the one-to-one text–region matching); ``text`` (C, D) is already L2-normalised."""
    return scale * (F.normalize(feats.float(), dim=-1) * text).sum(-1)


def classification_loss(cfg: MethodConfig, logits: torch.Tensor, targets: torch.Tensor,
                        weights: torch.Tensor | None = None, epoch: int = 1) -> torch.Tensor:
    """``method.cls_loss`` (partial ASL or BCE per entry) with ``method.loss`` deciding what the
    unknown entries are: nothing (``partial``), negatives (``an``), negatives minus the
    largest-loss ones (``ll_r``, the rate grows with ``epoch``), or undecided (``em``)."""
    if cfg.loss == "em":
        return entropy_maximization(logits, targets, cfg.em_weight, weights)
    assumed = None
    if cfg.loss in ("an", "ll_r"):
        assumed = targets == 0
        targets, weights = assume_negative(targets, weights, cfg.an_neg_weight)
    if cfg.cls_loss == "asl":
        per = partial_asl(logits, targets, cfg.asl_gamma_pos, cfg.asl_gamma_neg, cfg.asl_clip,
                          weights=weights, reduction="none")
    else:
        per = partial_bce(logits, targets, weights, cfg.label_smoothing, reduction="none")
    if cfg.loss == "ll_r":
        rate = rejection_rate(epoch, cfg.ll_delta, cfg.ll_max_rate)
        keep = large_loss_rejection(per, assumed, rate, cfg.ll_r_share)
        per = torch.where(keep, per, torch.zeros_like(per))
    return per.sum() / per.shape[0]


def batch_key(batch: dict[str, torch.Tensor], key: str, hint: str = "") -> torch.Tensor:
    """``batch[key]`` or one clear error naming the missing key."""
    if key not in batch:
        raise KeyError(f"feature batch has no {key!r} (keys: {sorted(batch)}){hint}")
    return batch[key]


def text_features(ctx: MethodContext) -> torch.Tensor:
    """Validated, L2-normalised ``ctx.text_embeddings`` (C, D)."""
    t = ctx.text_embeddings
    if t is None or t.dim() != 2 or t.shape[0] != len(ctx.class_names):
        shape = None if t is None else tuple(t.shape)
        raise ValueError(f"MethodContext.text_embeddings must be (C={len(ctx.class_names)}, D), "
                         f"got {shape}")
    if t.shape[1] != ctx.embed_dim:
        raise ValueError(f"MethodContext.text_embeddings width {t.shape[1]} != "
                         f"MethodContext.embed_dim {ctx.embed_dim}")
    return F.normalize(t.detach().float(), dim=-1)


class RegionCalibrator(nn.Module):
    """Per-class log-odds for the region branch, fitted on the *observed* labels as training runs.

    Each class gets a 1-D Gaussian class-conditional model of its region cosine x = cos(r_c, t_c)
    (means μ⁺, μ⁻ for observed positives / negatives, one pooled variance σ², prior π = share of
    positives among the observed entries), whose posterior log-odds is the logistic

        ℓ(x) = (μ⁺ − μ⁻)/σ² · (x − (μ⁺ + μ⁻)/2) + log(π / (1 − π))

    (linear discriminant analysis in one dimension). The statistics are sums decayed by ``decay``
    per training step, so they follow the region branch while its attention learns (0.99: a memory
    of ~100 steps) and rare classes still collect enough entries. Nothing here has a gradient: the
    calibration reads the branch, it does not train it. A class is *fitted* once it has seen both
    a positive and a negative; until then its users fall back to the query branch alone. Under
    the single-positive protocol nothing is ever observed absent, so a batch without any observed
    negative counts its unknown entries as negatives (the "assume negative" reading of protocol
    B: most unknown entries are absent classes); protocol A batches always hold observed ones.
    """

    def __init__(self, num_classes: int, decay: float = 0.99):
        super().__init__()
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"RegionCalibrator: decay must be in (0, 1], got {decay}")
        self.decay = decay
        # rows: count, sum, sum of squares; columns 0 = positives, 1 = negatives
        self.register_buffer("stats", torch.zeros(3, 2, num_classes, dtype=torch.float64))

    @torch.no_grad()
    def update(self, cos: torch.Tensor, observed: torch.Tensor,
               valid: torch.Tensor | None = None) -> None:
        """Add a batch of region cosines (B, C) with their observed labels {1, -1, 0}; entries
        outside ``valid`` (B, C) bool, if given, are left out (the memory score calibrated with
        the same model does not exist everywhere)."""
        x = cos.detach().double()
        negative = observed < 0
        if not negative.any():  # single-positive labels: nothing says "absent"
            negative = observed == 0
        masks = torch.stack([observed > 0, negative])  # (2, B, C)
        if valid is not None:
            masks = masks & valid.to(masks.device)[None]
        masks = masks.to(x.dtype)
        batch = torch.stack([masks.sum(1), (masks * x).sum(1), (masks * x * x).sum(1)])
        self.stats.mul_(self.decay).add_(batch)

    def fitted(self) -> torch.Tensor:
        """(C,) bool: classes with observed positives and negatives and a positive variance."""
        n = self.stats[0]
        return (n[0] > 0) & (n[1] > 0) & (self._variance() > 0)

    def _variance(self) -> torch.Tensor:
        n, s, q = self.stats
        within = (q - s * s / n.clamp(min=1e-12)).sum(0)  # Σ over both groups of Σ (x − μ)²
        return within.clamp(min=0) / n.sum(0).clamp(min=1e-12)

    def logits(self, cos: torch.Tensor) -> torch.Tensor:
        """Calibrated log-odds (B, C) of the region branch; 0 for classes not fitted yet."""
        n, s, _ = self.stats
        fitted = self.fitted()
        mu = s / n.clamp(min=1e-12)
        var = self._variance().clamp(min=1e-12)
        prior = (n[0] / n.sum(0).clamp(min=1e-12)).clamp(1e-6, 1 - 1e-6)
        slope = (mu[0] - mu[1]) / var
        out = slope * (cos.double() - 0.5 * (mu[0] + mu[1])) + torch.log(prior / (1 - prior))
        return torch.where(fitted, out, torch.zeros_like(out)).to(cos.dtype)


@register_method("trm_ml", label="TRM-ML")
class TRMML(Method):
    """Text-Region Matching for Multi-Label recognition with missing labels.

    Switches (``MethodConfig``): ``query_init`` (text | random), ``num_heads``, ``num_layers``,
    ``kv_source`` (projected F̃ | raw F for keys/values; R always uses F̃), ``matching``,
    ``inference``, ``learn_logit_scale``, ``learn_text_context``, the loss and prototype switches.

    ``matching="image"`` is the **text-image ablation** (the paper's Figure 1, left): one
    image-level feature — CLIP's own global embedding g — is matched with every class text,
    ``z = g + MLP_img(g)`` with the MLP's last layer starting at zero, so the untrained head *is*
    zero-shot CLIP and training can only move it from there; there are no category-aware regions
    and the queries are unused (the region branch R is the uniform mean of the dense tokens).
    Before this, the ablation pooled the head's value projections through the region MLP and
    started far below zero-shot: it measured a broken model, not image-level matching.

    Initialisation switches: ``attn_init="clip"`` (default) starts the attention as
    CLIP's text-pixel similarity (see :class:`CategoryCrossAttention`); ``mlp_residual=True``
    makes ``Z = Q̂ + MLP(Q̂)`` with the MLP's last layer, W_v and W_o starting at zero / identity,
    so that the untrained head *is* text-region zero-shot matching (like the linear probe, which
    starts as zero-shot CLIP); default False: ``Z = MLP(Q̂)`` as in the paper's figure.

    With ``num_layers > 1`` the query is refined ``Q ← Q + Q̂`` between layers (a decoder stack
    without self-attention); maps, Q̂ and R come from the last layer.

    Output of :meth:`forward`: ``logits`` (B, C) s_c; ``maps`` (B, C, L) head-averaged attention;
    ``z`` (B, C, D); ``r`` (B, C, D); ``region_logits`` (B, C) λ cos(r_c, t_c).
    """

    # soft pseudo-labels, distillation, the contrastive loss and its two halves
    loss_terms = ("cls", "pseudo", "kd", "mcl", "mcl_proto", "mcl_feat")
    #: train.precision=bf16 autocasts its CPU training steps: measured 1.45x faster a step on
    #: an AVX-512-BF16 CPU (`python -m trm_lib bench train`); the matching stays fp32 (forward)
    cpu_bf16 = True

    def __init__(self, cfg: MethodConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        text = text_features(ctx)
        num_classes, dim = text.shape
        self.num_classes, self.dim = num_classes, dim
        self.register_buffer("text", text)
        self.prompt = None
        if cfg.learn_text_context:
            self.prompt = make_prompt_encoder(cfg, ctx)
        self._text_cache: torch.Tensor | None = None
        if cfg.query_init == "text":
            init = text.clone()
        else:
            init = torch.randn(num_classes, dim) / math.sqrt(dim)
        self.queries = nn.Parameter(init)
        kv_dim = dim if cfg.kv_source == "projected" else ctx.dense_dim
        attn_init = cfg.attn_init
        self.mlp_residual = bool(cfg.mlp_residual)
        self.layers = nn.ModuleList(
            CategoryCrossAttention(dim, kv_dim, cfg.num_heads, attn_init, self.mlp_residual)
            for _ in range(cfg.num_layers))
        hidden = max(1, int(cfg.mlp_hidden * dim))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(hidden, dim))
        if self.mlp_residual:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)),
                                        requires_grad=cfg.learn_logit_scale)
        self.memory = PrototypeMemory(num_classes, dim, cfg.memory_size, cfg.proto_update,
                                      cfg.proto_momentum, cfg.proto_gate)
        # only the users of calibrated region probabilities carry one (older checkpoints of the
        # other settings stay loadable)
        self.calibrator = None
        if (cfg.kd in ("ensemble", "kl") and cfg.kd_weight > 0) or cfg.inference == "query+region":
            self.calibrator = RegionCalibrator(num_classes)
        self.pseudo = None
        self.instances = self.memory_calibrator = None
        # every training label known: nothing to pseudo-label, so the k-NN score, its
        # calibration and the instance memory (a fifth of a step) would be computed for nothing
        self.pseudo_possible = not ctx.all_observed
        if cfg.pseudo:
            self.pseudo = PseudoLabeler(ctx.num_train, num_classes, cfg.pseudo_high,
                                        cfg.pseudo_low, cfg.pseudo_temp, cfg.pseudo_score,
                                        cfg.pseudo_warmup,
                                        agree=cfg.pseudo_agree and not cfg.pseudo_soft)
            if cfg.pseudo_source == "memory":
                self.instances = InstanceMemory(num_classes, dim, cfg.pseudo_bank, cfg.pseudo_k)
                # the k-NN score is a difference of cosines: the same 1-D calibration as the
                # region branch turns it into a probability fitted on the observed labels
                self.memory_calibrator = RegionCalibrator(num_classes)
        self.image_mlp = None  # built last: the other settings draw the same initial weights
        if cfg.matching == "image":
            self.image_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(),
                                           nn.Dropout(cfg.dropout), nn.Linear(hidden, dim))
            nn.init.zeros_(self.image_mlp[-1].weight)
            nn.init.zeros_(self.image_mlp[-1].bias)

    # ------------------------------------------------------------------ text side
    def class_text(self) -> torch.Tensor:
        """(C, D) normalised class texts t_c: fixed, or from the learnable prompt encoder.

        Outside training (eval mode, no grad) the prompt encoder's output is cached until the
        next ``train()`` / ``load_state_dict``, so evaluation does not re-run the text tower per
        batch."""
        if self.prompt is None:
            return self.text
        if not self.training and not torch.is_grad_enabled():
            if self._text_cache is None:
                self._text_cache = F.normalize(self.prompt().float(), dim=-1)
            return self._text_cache
        return F.normalize(self.prompt().float(), dim=-1)

    def train(self, mode: bool = True) -> TRMML:
        self._text_cache = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._text_cache = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def scale(self) -> torch.Tensor:
        """λ = exp(log-scale), capped at 100 like CLIP's."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dense = batch_key(batch, "dense")
        if self.cfg.kv_source == "raw":
            kv = batch_key(batch, "dense_raw",
                           "; method.kv_source=raw needs backbone.cache_raw=true")
        else:
            kv = dense
        b, L, _ = dense.shape
        if self.image_mlp is not None:
            # text-image ablation: CLIP's global image embedding, shared by all classes
            g = F.normalize(batch_key(batch, "global").float(), dim=-1).unsqueeze(1)  # (B, 1, D)
            z = (g + self.image_mlp(g)).expand(-1, self.num_classes, -1)
            maps = dense.new_full((b, self.num_classes, L), 1.0 / L)
        else:
            queries = self.queries
            for i, layer in enumerate(self.layers):
                q_hat, attn = layer(queries, kv)
                if i + 1 < len(self.layers):
                    queries = queries + q_hat
            maps = attn.mean(1)  # (B, C, L), average over heads
            z = q_hat + self.mlp(q_hat) if self.mlp_residual else self.mlp(q_hat)
        # The matching itself runs in float32 even under autocast: a bf16 cosine has ~3
        # significant digits, which would make many images tie in the ranking.
        with torch.autocast(dense.device.type, enabled=False):
            maps = maps.float()
            r = maps @ dense.float()  # region features in CLIP space, only A is learned
            text = self.class_text().float()
            lam = self.scale()
            logits = one_to_one_logits(z, text, lam)
            region_logits = one_to_one_logits(r, text, lam)
        return {"logits": logits, "maps": maps, "z": z, "r": r, "region_logits": region_logits}

    def region_cosines(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, C) cos(r_c, t_c): the region logits without the shared scale λ."""
        return out["region_logits"].float() / self.scale().detach()

    def scores(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """σ(s) (``inference="query"``), or (``"query+region"``) the mean of σ(s) and the
        calibrated region probability for every class the calibrator has fitted (σ(s) alone for
        the others), in float64 (see :func:`probabilities`)."""
        p = probabilities(out["logits"])
        if self.cfg.inference == "query+region":
            region = probabilities(self.calibrated_region_logits(out))
            p = torch.where(self.calibrator.fitted(), 0.5 * (p + region), p)
        return p

    def calibrated_region_logits(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, C) region-branch logits through the per-class calibration (needs a calibrator;
        meaningful only for the classes it has fitted)."""
        return self.calibrator.logits(self.region_cosines(out))

    @torch.no_grad()
    def entry_views(self, out: dict[str, torch.Tensor], index: torch.Tensor | None = None
                    ) -> dict[str, torch.Tensor]:
        """(B, C) probability of every entry under each view this head holds: ``query`` σ(s),
        and where built the calibrated ``region`` branch (σ(s) on classes it has not fitted),
        their mean ``ensemble`` (the distillation target), the ``prototype`` score and the
        calibrated instance-``memory`` score (σ(s) where it does not exist; ``index`` = the
        batch's training-sample indices keeps an image from matching itself). For analysing
        pseudo-label sources (:func:`trm_lib.core.metrics.unknown_entry_quality`); training never
        calls it."""
        views = {"query": torch.sigmoid(out["logits"].double())}
        if self.calibrator is not None:
            region = torch.sigmoid(self.calibrated_region_logits(out).double())
            region = torch.where(self.calibrator.fitted(), region, views["query"])
            views["region"] = region
            views["ensemble"] = 0.5 * (views["query"] + region)
        if self.pseudo is not None:
            views["prototype"] = self.pseudo.score(out["z"], self.class_text(), self.memory.visual,
                                                   self.memory.visual_valid).double()
        if self.instances is not None:
            memory, valid = self.memory_probabilities(out, index)
            views["memory"] = torch.where(valid, memory.double(), views["query"])
        return views

    def _pseudo_targets(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                        observed: torch.Tensor, text: torch.Tensor, epoch: int,
                        logs: dict[str, float]
                        ) -> tuple[torch.Tensor, torch.Tensor | None,
                                   tuple[torch.Tensor, torch.Tensor] | None]:
        """The classification targets after pseudo-labelling (step 1 of :meth:`loss`):
        ``(targets, weights, soft)``. Hard pseudo-labels overwrite unknown targets with weight
        ``pseudo_weight``; soft ones come back as ``(scores, where)`` for their own term.
        Counters go into ``logs``."""
        cfg, logits = self.cfg, out["logits"]
        targets, weights, soft = observed.float(), None, None
        if self.pseudo is None or not self.training or not self.pseudo_possible:
            return targets, weights, soft
        index = batch_key(batch, "index", "; pseudo-labels need the sample index "
                                          "(or set method.pseudo=false)")
        # the memory's calibration learns from every step, warm-up included
        active = self.pseudo.active(epoch)
        source = self._pseudo_scores(out, observed, index, text) \
            if active or self.instances is not None else None
        if not active:
            return targets, weights, soft
        scores, valid = source
        probs = None if cfg.pseudo_soft else torch.sigmoid(logits.detach().float())
        pseudo = self.pseudo.label(scores, valid, observed, index, full=batch.get("full"),
                                   probs=probs)
        logs["n_pseudo_pos"] = float((pseudo > 0).sum())
        logs["n_pseudo_neg"] = float((pseudo < 0).sum())
        if cfg.pseudo_soft:
            soft = (scores, (observed == 0) & valid.expand_as(observed))
            change = target_change(scores, torch.sigmoid(logits.detach()), soft[1])
        else:
            is_pseudo = pseudo != 0
            change = target_change((pseudo > 0).float(), torch.sigmoid(logits.detach()),
                                   is_pseudo)
            targets = torch.where(is_pseudo, pseudo.float(), targets)
            weights = torch.where(is_pseudo, torch.full_like(targets, cfg.pseudo_weight),
                                  torch.ones_like(targets))
        if math.isfinite(change[0]):  # how often the target overrules the classifier
            logs["pseudo_flip"], logs["pseudo_gap"] = change
        return targets, weights, soft

    # ------------------------------------------------------------------ training
    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
             epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """``L = L_cls + α L_kd + β L_mcl``; pseudo-labels and memory updates in training only.

        Order within a step: (1) pseudo-label the unknown entries with the prototypes as they
        were *before* this batch, (2) losses, (3) push this batch's confident observed positives
        into the memory (no grad). Observed entries have weight 1, pseudo-labelled entries
        ``pseudo_weight``."""
        cfg = self.cfg
        logits, z = out["logits"], out["z"]
        observed = batch_key(batch, "observed").to(logits.device)
        if observed.shape != logits.shape:
            raise ValueError(f"batch['observed'] has shape {tuple(observed.shape)}, expected "
                             f"{tuple(logits.shape)} (batch, classes)")
        logs: dict[str, float] = {}
        text = self.class_text()
        targets, weights, soft = self._pseudo_targets(out, batch, observed, text, epoch, logs)
        l_cls = classification_loss(cfg, logits, targets, weights, epoch)
        total = l_cls
        terms = {"cls": l_cls}  # weighted terms, for the gradient-norm diagnostic
        logs["cls"] = float(l_cls.detach())
        if soft is not None:
            l_pseudo = soft_label_loss(logits, *soft)
            terms["pseudo"] = cfg.pseudo_weight * l_pseudo
            total = total + terms["pseudo"]
            logs["pseudo"] = float(l_pseudo.detach())
        region_logits, kd_mask = out["region_logits"], None
        if self.calibrator is not None:
            cos_r = self.region_cosines(out)
            if self.training:
                self.calibrator.update(cos_r, observed)
            region_logits = self.calibrator.logits(cos_r)
            if cfg.kd in ("ensemble", "kl"):
                # distil only classes whose calibration exists, and (ensemble) only the entries
                # that labels and pseudo-labels leave unknown
                kd_mask = self.calibrator.fitted().expand_as(logits)
                if cfg.kd == "ensemble":
                    kd_mask = kd_mask & (targets == 0)
        if cfg.kd != "none" and cfg.kd_weight > 0:
            l_kd = distillation_loss(z, out["r"], cfg.kd, logits, region_logits, mask=kd_mask)
            terms["kd"] = cfg.kd_weight * l_kd
            total = total + terms["kd"]
            logs["kd"] = float(l_kd.detach())
        if cfg.mcl and cfg.mcl_weight > 0:
            pos = targets > 0
            bank, bank_labels = self.memory.bank_features()
            # float32 even under autocast: the anchors change in number every step, and bf16
            # products of a new shape each leave a cached oneDNN primitive behind (a bf16 run's
            # memory grew ~140 MB an epoch), for products too small to gain from bf16
            with torch.autocast(z.device.type, enabled=False):
                l_proto, l_feat = multimodal_contrastive_loss(
                    z[pos].float(), pos.nonzero()[:, 1], text, self.memory.visual,
                    self.memory.visual_valid, bank, bank_labels, cfg.mcl_temp_proto,
                    cfg.mcl_temp_feat, return_terms=True)
            l_mcl = l_proto + l_feat
            terms["mcl"] = cfg.mcl_weight * l_mcl
            total = total + terms["mcl"]
            logs.update(mcl=float(l_mcl.detach()), mcl_proto=float(l_proto.detach()),
                        mcl_feat=float(l_feat.detach()))
        if self.training and z.requires_grad:  # each term's pull on the query features
            logs.update(self._grad_logs(terms, z))
        if self.training:
            probs = torch.sigmoid(logits.detach().float())
            logs["n_memory_in"] = float(self.memory.update(z, probs, observed))
            if self.instances is not None and self.pseudo_possible:
                self.instances.update(out["r"], observed, batch_key(batch, "index"))
        logs["logit_scale"] = float(self.scale().detach())
        return total, logs

    #: the gradient-norm diagnostic is measured every this many training steps (~10 % of a
    #: step's time when measured every step); the steps between repeat the last measurement
    GRAD_EVERY = 8

    def _grad_logs(self, terms: dict[str, torch.Tensor], z: torch.Tensor) -> dict[str, float]:
        step = getattr(self, "_grad_step", 0)
        self._grad_step = step + 1
        last = getattr(self, "_grad_last", {})
        if step % self.GRAD_EVERY == 0 or set(last) != {f"grad_{k}" for k in terms}:
            last = {f"grad_{k}": v for k, v in gradient_norms(terms, z).items()}
            self._grad_last = last
        return dict(last)

    @torch.no_grad()
    def _pseudo_scores(self, out: dict[str, torch.Tensor], observed: torch.Tensor,
                       index: torch.Tensor, text: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C) pseudo-label score of every entry (a probability) and where it exists.

        ``memory``: the instance memory's k-NN score (other images only), through the
        calibration that this call also updates with the batch's observed entries, so it runs
        every training step, warm-up included. ``prototype``: the prototype score, valid for the
        classes that have a visual prototype."""
        if self.instances is None:
            scores = self.pseudo.score(out["z"], text, self.memory.visual,
                                       self.memory.visual_valid)
            return scores, self.memory.visual_valid.to(scores.device)[None, :]
        return self.memory_probabilities(out, index, observed)

    @torch.no_grad()
    def memory_probabilities(self, out: dict[str, torch.Tensor], index: torch.Tensor | None,
                             observed: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C) calibrated instance-memory probability and where it exists (needs
        ``pseudo_source=memory``). ``index``: the batch's training-sample indices (an image is
        never its own neighbour); ``observed`` (training) first adds the batch's observed entries
        to the calibration."""
        knn, valid = self.instances.score(out["r"], index)
        if observed is not None:
            self.memory_calibrator.update(knn, observed, valid)
        valid = valid & self.memory_calibrator.fitted()
        return torch.sigmoid(self.memory_calibrator.logits(knn)), valid

    def epoch_start(self, epoch: int) -> None:
        # the gradient-norm diagnostic counts steps within the epoch, so a run resumed from
        # an epoch's checkpoint measures the same steps as an uninterrupted one
        self._grad_step = 0
        if self.pseudo is not None:
            self.pseudo.reset_stats()

    def epoch_end(self, epoch: int) -> dict[str, float]:
        logs = {"proto_classes": float(self.memory.visual_valid.sum()),
                "memory_fill": float(self.memory.bank_count.float().mean()
                                     / max(1, self.memory.memory_size))}
        if self.pseudo is not None and self.pseudo_possible and self.pseudo.active(epoch):
            logs.update(self.pseudo.stats())
        return logs


def make_prompt_encoder(cfg: MethodConfig, ctx: MethodContext, init_words: bool = True
                        ) -> nn.Module:
    """A CoOp-style :class:`trm_lib.core.prompts.PromptEncoder` for the classes of ``ctx``, prompted
    with ``ctx.prompt_words()``; its context starts from the words ``cfg.ctx_init`` when set and
    ``init_words`` (else random)."""
    if ctx.backbone is None:
        raise ValueError("learnable prompt contexts need MethodContext.backbone (the FrozenCLIP "
                         "text tower); it is None")
    from trm_lib.utils.errors import BackboneError

    from .prompts import PromptEncoder

    init = cfg.ctx_init if (init_words and cfg.ctx_init) else None
    try:  # the words the fixed text embeddings were encoded from ("dining table")
        return PromptEncoder(ctx.backbone, ctx.prompt_words(), n_ctx=cfg.n_ctx,
                             class_specific=cfg.class_specific_ctx, init=init)
    except BackboneError as err:
        if init is None:
            raise
        raise ConfigError(f"method.ctx_init={init!r} / method.n_ctx={cfg.n_ctx}: {err}") from None
