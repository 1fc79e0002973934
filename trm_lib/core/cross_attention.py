"""The cross-attention of TRM-ML's head: C category queries attend to L dense tokens, and the
attention maps come back with the attended features (they are the paper's Figure 4 and the
region branch's weights; see :mod:`trm_lib.core.model` for the data flow around it)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trm_lib.utils.errors import ConfigError


class _NormedTokenProducts(torch.autograd.Function):
    """``K = LN(F) Q_k`` and ``V = LN(F) W_vᵀ + b_v`` for frozen tokens F, with the layer norm's
    affine gradients taken from the products the weight gradients compute anyway.

    Why: F is frozen, so ``dL/dLN(F)`` is needed only for the norm's gain γ and bias β, and
    autograd gets it from two (B·L)-row products (``dK Q_kᵀ`` and ``dV W_v``, ~12 % of a step's
    FLOPs). With x̂ the normalised tokens, ``dW_v = (dVᵀ x̂) diag γ + (Σ dV) βᵀ`` and
    ``dγ_j = Σ_k (dVᵀ x̂)_kj W_v,kj`` (the same for Q_k): one product per branch gives both.
    The forward is the module's own (bitwise); gradients equal autograd's up to float rounding
    (``tests/test_model.py`` checks them against it)."""

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
                q_k: torch.Tensor, w_v: torch.Tensor, b_v: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        d = tokens.shape[-1]
        normed = F.layer_norm(tokens, (d,), gamma, beta, eps)
        x_hat = F.layer_norm(tokens, (d,), None, None, eps)
        ctx.save_for_backward(x_hat, gamma, beta, q_k, w_v)
        return normed @ q_k, F.linear(normed, w_v, b_v)

    @staticmethod
    def backward(ctx, d_k: torch.Tensor, d_v: torch.Tensor):  # type: ignore[override]
        x_hat, gamma, beta, q_k, w_v = ctx.saved_tensors
        n_k = x_hat.t() @ d_k  # (d, H·C)
        s_k = d_k.sum(0)
        m_v = d_v.t() @ x_hat  # (D, d)
        s_v = d_v.sum(0)
        d_gamma = (n_k * q_k).sum(1) + (m_v * w_v).sum(0)
        d_beta = q_k @ s_k + s_v @ w_v
        d_qk = gamma[:, None] * n_k + beta[:, None] * s_k[None, :]
        d_wv = m_v * gamma[None, :] + s_v[:, None] * beta[None, :]
        return None, d_gamma, d_beta, None, d_qk, d_wv, s_v


class CategoryCrossAttention(nn.Module):
    """Multi-head cross-attention from C category queries to L dense tokens that *returns its
    attention maps* (``nn.MultiheadAttention`` with fused kernels does not expose them reliably,
    and open_clip never returns them).

    Pre-norm on both inputs: CLIP dense tokens have image-dependent norms, and the normalised keys
    keep the attention temperature independent of the backbone.

    ``init="clip"`` starts W_q and W_k as the identity (zero bias), so that with text-initialised
    queries and projected tokens each head's map starts as CLIP's own text-pixel similarity
    ``softmax_L(LN(t_c)·LN(F̃_l)/√d_h)`` over its slice of the channels: the queries' text
    initialisation then means something from the first step instead of passing through a random
    projection. ``"random"``: PyTorch's default Linear init. ``identity_values=True`` also starts
    W_v and W_o as the identity, so that Q̂ starts as the attention-pooled (normalised) tokens, a
    region feature in CLIP space. Projections whose input width differs (``kv_source="raw"``)
    keep the default init.
    """

    def __init__(self, dim: int, kv_dim: int, num_heads: int, init: str = "clip",
                 identity_values: bool = False):
        super().__init__()
        if init not in ("clip", "random"):
            raise ValueError(f"method.attn_init must be clip|random, got {init!r}")
        if dim % num_heads:
            raise ConfigError(f"method.num_heads={num_heads} must divide the embedding width "
                              f"{dim} of the backbone")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(kv_dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        # no key bias: the forward folds W_k into the queries and the softmax over L drops q·b_k,
        # so b_k would get no gradient. Removed after construction so that every other layer's
        # random init draws the same numbers as before (same runs, same results).
        self.k_proj.register_parameter("bias", None)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        identity = [self.q_proj, self.k_proj] if init == "clip" else []
        identity += [self.v_proj, self.out_proj] if identity_values else []
        with torch.no_grad():
            for lin in identity:
                if lin.in_features == lin.out_features:
                    nn.init.eye_(lin.weight)
                    if lin.bias is not None:
                        nn.init.zeros_(lin.bias)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        """Checkpoints written before the key bias was dropped still load: its stale entry
        (never trained, and cancelled by the softmax) is discarded."""
        state_dict.pop(f"{prefix}k_proj.bias", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def values(self, kv: torch.Tensor) -> torch.Tensor:
        """(B, L, D) value vectors ``LN(F) W_v`` (used directly by the uniform-pooling ablation)."""
        return self.v_proj(self.norm_kv(kv))

    def _token_products(self, kv: torch.Tensor, q_k: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(LN(F) Q_k, LN(F) W_vᵀ + b_v)``: through :class:`_NormedTokenProducts` when the
        tokens are frozen, the queries shared and autocast off (the common training step), else
        through autograd."""
        norm, lin = self.norm_kv, self.v_proj
        fused = (torch.is_grad_enabled() and not kv.requires_grad and q_k.dim() == 2
                 and norm.weight is not None and norm.bias is not None and lin.bias is not None
                 and not torch.is_autocast_enabled(kv.device.type))
        if not fused:
            kvn = norm(kv)
            return kvn @ q_k, lin(kvn)
        k, v = _NormedTokenProducts.apply(kv.reshape(-1, kv.shape[-1]), norm.weight, norm.bias,
                                          norm.eps, q_k, lin.weight, lin.bias)
        # explicit widths: a rank's share of a global batch may hold no image (0 rows)
        return k.view(*kv.shape[:-1], q_k.shape[-1]), v.view(*kv.shape[:-1], lin.out_features)

    def forward(self, queries: torch.Tensor, kv: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``queries`` (C, D) shared or (B, C, D) per image, ``kv`` (B, L, d).

        Returns ``(Q̂ (B, C, D), A (B, H, C, L))`` with every row of A summing to 1 over L."""
        b, L, _ = kv.shape
        h, dh = self.num_heads, self.head_dim
        # Queries are projected before being broadcast over the batch (they are shared), and the
        # key projection is folded into them: q·(W_k x + b_k) = (W_kᵀ q)·x + q·b_k, and q·b_k is
        # the same for every token, so the softmax over L drops it. That scores the normalised
        # tokens directly with one (B·L, d) x (d, H·C) product instead of projecting all B·L
        # tokens through W_k -- the same maps, ~10 % less compute per training step.
        q = self.q_proj(self.norm_q(queries))  # (C, D) or (B, C, D)
        w_k = self.k_proj.weight.view(h, dh, -1)  # (H, dh, d)
        c = q.shape[-2]
        # (d, H·C) shared by the batch, or (B, d, H·C) per image
        q_k = torch.einsum("...chd,hde->...ehc", q.unflatten(-1, (h, dh)), w_k).flatten(-2)
        logits, v = self._token_products(kv, q_k)
        logits = logits.view(b, L, h, c)
        attn = torch.softmax(logits / math.sqrt(dh), dim=1).permute(0, 2, 3, 1)  # (B, H, C, L)
        v = v.view(b, L, h, dh).transpose(1, 2)
        out = (attn @ v).transpose(1, 2).reshape(b, c, h * dh)
        return self.out_proj(out), attn


__all__ = ["CategoryCrossAttention"]
