"""Baselines that run in the same harness as TRM-ML (docs/METHOD_CHOICES.md, their rows).

- :class:`ZeroShotCLIP` — text-image matching with no training at all.
- :class:`LinearProbe` — a partial-label (ASL/BCE) linear classifier on the global embedding,
  initialised to the zero-shot classifier so epoch 0 *is* zero-shot CLIP.
- :class:`DualCoOp` — text-pixel matching with learnable positive/negative prompt contexts
  (Sun et al., NeurIPS 2022, as re-implemented by the TRM-ML authors); the model Figure 4
  compares TRM-ML's attention maps against.

They share the classification losses with TRM-ML (:func:`trm_lib.core.model.classification_loss`),
so a comparison differs only in the model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .methods import Method, MethodContext, register_method
from .model import (
    MAX_LOGIT_SCALE,
    batch_key,
    classification_loss,
    make_prompt_encoder,
    probabilities,
    text_features,
)

if TYPE_CHECKING:
    from trm_lib.config.run_config import MethodConfig

__all__ = ["DualCoOp", "LinearProbe", "ZeroShotCLIP"]


class _Baseline(Method):
    """Shared by the baselines: float64 probabilities (see :func:`trm_lib.core.model.probabilities`)
    and the classification loss on observed entries."""

    def scores(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return probabilities(out["logits"])

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
             epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss = classification_loss(self.cfg, out["logits"], _observed(out, batch),
                                   epoch=epoch)
        return loss, {"cls": float(loss.detach())}


def _observed(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    observed = batch_key(batch, "observed").to(out["logits"].device)
    if observed.shape != out["logits"].shape:
        raise ValueError(f"batch['observed'] has shape {tuple(observed.shape)}, expected "
                         f"{tuple(out['logits'].shape)} (batch, classes)")
    return observed.float()


@register_method("zero_shot", label="zero-shot CLIP")
class ZeroShotCLIP(_Baseline):
    """``s_c = λ cos(g, t_c)`` with the global image embedding g and fixed λ = exp(logit_scale_init).

    Nothing is trained (``trainable = False``): the trainer only evaluates it. :meth:`loss` still
    returns the classification loss (without gradient) so validation-loss curves are comparable.
    """

    trainable = False

    def __init__(self, cfg: MethodConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.register_buffer("text", text_features(ctx))
        self.register_buffer("logit_scale", torch.tensor(float(cfg.logit_scale_init)))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        g = F.normalize(batch_key(batch, "global").float(), dim=-1)
        lam = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        with torch.autocast(g.device.type, enabled=False):  # float32 cosines, see TRMML
            return {"logits": lam * g @ self.text.t()}


@register_method("linear_probe", label="linear probe")
class LinearProbe(_Baseline):
    """``s = W ĝ + b`` on the normalised global embedding, trained with partial ASL / BCE.

    ``W`` starts as ``λ₀ · T`` (λ₀ = exp(logit_scale_init), T the class texts) and ``b`` at 0, so
    before the first step the probe reproduces :class:`ZeroShotCLIP` exactly — the probe can only
    improve on zero-shot by what the partial labels teach it."""


    def __init__(self, cfg: MethodConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        text = text_features(ctx)
        scale = min(math.exp(cfg.logit_scale_init), MAX_LOGIT_SCALE)
        self.weight = nn.Parameter(text * scale)
        self.bias = nn.Parameter(torch.zeros(text.shape[0]))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        g = F.normalize(batch_key(batch, "global").float(), dim=-1)
        with torch.autocast(g.device.type, enabled=False):  # float32 logits, see TRMML
            return {"logits": F.linear(g, self.weight, self.bias)}


@register_method("dualcoop", label="DualCoOp")
class DualCoOp(_Baseline):
    """Text-pixel matching with a pair of learnable prompts per class.

    Two CoOp prompt encoders (``n_ctx`` tokens, class-specific if ``class_specific_ctx``) give a
    positive and a negative text t⁺_c, t⁻_c. Every dense token F̃_l is compared with both::

        w_{c,l}  = softmax_l( τ_s · cos(F̃_l, t⁺_c) )            class-specific spatial weights
        s⁺_c     = λ Σ_l w_{c,l} cos(F̃_l, t⁺_c),   s⁻_c = λ Σ_l w_{c,l} cos(F̃_l, t⁻_c)
        logit_c  = s⁺_c − s⁻_c                                  (softmax([s⁻, s⁺])[1] = σ(logit))

    and trained with partial ASL on ``logit`` — i.e. ASL on the softmax over the (neg, pos)
    pair. λ (init exp(logit_scale_init) = 50) and the spatial temperature τ_s (init 20) are
    learnable when ``learn_logit_scale`` (as in the lineage). ``maps`` = w (rows sum to 1): the
    text-pixel saliency Figure 4 shows in its first row.

    ``method.ctx_init`` (e.g. ``"a photo of a"`` with ``n_ctx=4``) starts the positive context
    from those words, so t⁺ starts as the zero-shot prompt's text embedding. The negative
    context starts random (``neg_ctx_init="random"``) or as a copy of the positive one
    (``"positive"``): then t⁻ = t⁺, every logit starts at 0, the spatial weights start as
    zero-shot text–pixel maps, and since ∂logit/∂t⁻ = −∂logit/∂t⁺ the first steps pull the pair
    apart along what distinguishes each class's attended regions -- no random offset
    λ·cos(F̃, t⁻) to unlearn first. But then every logit starts at exactly 0: the ranking starts
    as a tie (chance-level mAP) and the first epochs spend themselves climbing back to what
    zero-shot CLIP already knew. ``method.dualcoop_prior`` adds zero-shot CLIP's logit
    ``λ cos(g, t_c)`` (g the global image embedding, t_c the fixed class text), so the untrained
    model *is* zero-shot CLIP:

    - ``"zero_shot"``: ``logit_c += λ cos(g, t_c)`` in training too, the pair learning a residual.
      It makes validation and test *worse* (docs/METHOD_CHOICES.md): λ = 50 makes the prior ~10x
      overconfident (first-batch loss 2.8 against 0.25 at the tie), and the pair spends its
      updates cancelling that with image-dependent shifts and fitting the few observed entries
      the prior gets wrong.
    - ``"zero_shot_score"`` (the fidelity preset's choice): the pair is trained on ``s⁺ − s⁻``
      alone, exactly as the lineage, and only the *scores* add the prior,
      ``logit_c = s⁺_c − s⁻_c + w λ cos(g, t_c)``. The one weight ``w = exp(prior_weight)``
      (init 1) is fitted by the same loss on the scored logit, which reaches nothing else (both
      terms detached there): a late fusion of the text–pixel model with zero-shot CLIP, whose
      mix the observed labels set (w ends near 0.1 on the embedded world).
    """

    #: spatial softmax temperature of the lineage (their ``spatial_T`` init 3.0 = ln 20)
    SPATIAL_SCALE_INIT = math.log(20.0)

    def __init__(self, cfg: MethodConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.num_classes = len(ctx.class_names)
        self.prompt_pos = make_prompt_encoder(cfg, ctx)
        self.prompt_neg = make_prompt_encoder(cfg, ctx, init_words=False)
        if cfg.neg_ctx_init == "positive":
            with torch.no_grad():
                self.prompt_neg.ctx.copy_(self.prompt_pos.ctx)
        learn = cfg.learn_logit_scale
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)),
                                        requires_grad=learn)
        self.spatial_scale = nn.Parameter(torch.tensor(self.SPATIAL_SCALE_INIT),
                                          requires_grad=learn)
        self._text_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.dualcoop_prior != "none":  # the fixed class texts of zero-shot CLIP
            self.register_buffer("zero_shot_text", text_features(ctx))
        if cfg.dualcoop_prior == "zero_shot_score":  # log-weight of the prior in the scores
            self.prior_weight = nn.Parameter(torch.zeros(()))

    def texts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (t⁺, t⁻), each (C, D); cached in eval mode without grad (cleared by
        ``train()`` and ``load_state_dict``) so evaluation runs the text tower once."""
        if not self.training and not torch.is_grad_enabled() and self._text_cache is not None:
            return self._text_cache
        from .prompts import encode_together

        t_pos, t_neg = encode_together(self.prompt_pos, self.prompt_neg)
        pair = (F.normalize(t_pos.float(), dim=-1), F.normalize(t_neg.float(), dim=-1))
        if not self.training and not torch.is_grad_enabled():
            self._text_cache = pair
        return pair

    def train(self, mode: bool = True) -> DualCoOp:
        self._text_cache = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._text_cache = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dense = F.normalize(batch_key(batch, "dense").float(), dim=-1)  # (B, L, D)
        t_pos, t_neg = self.texts()
        with torch.autocast(dense.device.type, enabled=False):  # float32 cosines, see TRMML
            out = self._pixel_logits(dense, t_pos.float(), t_neg.float())
            if self.cfg.dualcoop_prior != "none":
                g = F.normalize(batch_key(batch, "global").float(), dim=-1)
                lam = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
                prior = lam * g @ self.zero_shot_text.float().t()
                if self.cfg.dualcoop_prior == "zero_shot_score":  # the pair never sees it
                    out["train_logits"] = out["logits"]
                    out["logits"] = out["logits"].detach()
                    prior = self.prior_weight.exp() * prior.detach()
                out["logits"] = out["logits"] + prior
            return out

    def _pixel_logits(self, dense: torch.Tensor, t_pos: torch.Tensor, t_neg: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        if t_pos.shape[0] != self.num_classes:
            raise ValueError(f"prompt encoder returned {t_pos.shape[0]} classes, expected "
                             f"{self.num_classes}")
        cos_pos = (dense @ t_pos.t()).transpose(1, 2)  # (B, C, L)
        cos_neg = (dense @ t_neg.t()).transpose(1, 2)
        maps = torch.softmax(self.spatial_scale.exp() * cos_pos, dim=-1)
        lam = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        pos_logits = lam * (maps * cos_pos).sum(-1)
        neg_logits = lam * (maps * cos_neg).sum(-1)
        return {"logits": pos_logits - neg_logits, "maps": maps, "pos_logits": pos_logits,
                "neg_logits": neg_logits}

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
             epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        if "train_logits" in out:  # dualcoop_prior=zero_shot_score: train s+ - s- alone
            pair, logs = super().loss({**out, "logits": out["train_logits"]}, batch, epoch)
            mix, _ = super().loss(out, batch, epoch)  # reaches prior_weight only
            logs["prior_weight"] = float(self.prior_weight.exp().detach())
            return pair + mix, {**logs, "logit_scale": float(self.logit_scale.exp().detach())}
        loss, logs = super().loss(out, batch, epoch)
        logs["logit_scale"] = float(self.logit_scale.exp().detach())
        return loss, logs
