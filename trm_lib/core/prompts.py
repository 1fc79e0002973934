"""CoOp-style learnable prompts through the frozen CLIP text tower.

DualCoOp and TRM-ML's learned text contexts splice trainable context vectors in front of each
class's word embeddings and run CLIP's own text forward on them. The frozen tower is held in a
plain attribute, never registered, so a checkpoint holds the context vectors alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from open_clip.transformer import text_global_pool
from torch import nn

from trm_lib.utils.errors import BackboneError

if TYPE_CHECKING:
    from trm_lib.backbone.clip import FrozenCLIP


def _text_tower(model: nn.Module) -> dict[str, Any]:
    src = model.text if hasattr(model, "text") else model
    if not hasattr(src, "token_embedding") or getattr(src, "cls_emb", None) is not None:
        raise BackboneError(f"{type(model).__name__}: only CLIP-style text towers "
                            f"(token embedding + causal transformer) are supported here")
    return {
        "token_embedding": src.token_embedding,
        "positional_embedding": src.positional_embedding,
        "transformer": src.transformer,
        "ln_final": src.ln_final,
        "text_projection": src.text_projection,
        "attn_mask": src.attn_mask,
        "pool_type": getattr(src, "pool_type", getattr(model, "text_pool_type", "argmax")),
    }


def _text_from_embeddings(tower: dict[str, Any], embeds: torch.Tensor,
                          tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's text forward from token *embeddings* (so learnable context can be spliced in);
    identical to ``CLIP.encode_text`` when ``embeds = token_embedding(tokens)``.

    With CLIP's causal mask and end-of-text pooling nothing after the last end-of-text token can
    reach the pooled feature, so the padding is cut off first: a prompt of ~20 tokens then costs
    a quarter of the 77-token context (DualCoOp runs this twice per training step)."""
    cast = tower["transformer"].get_cast_dtype()
    mask, pos = tower["attn_mask"], tower["positional_embedding"]
    if mask is not None and tower["pool_type"] == "argmax":
        n = int(tokens.argmax(dim=-1).max()) + 1
        embeds, tokens, pos, mask = embeds[:, :n], tokens[:, :n], pos[:n], mask[:n, :n]
    x = embeds.to(cast) + pos.to(cast)
    x = tower["transformer"](x, attn_mask=mask)
    x = tower["ln_final"](x)
    x = text_global_pool(x, tokens, tower["pool_type"])
    proj = tower["text_projection"]
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj



class PromptEncoder(nn.Module):
    """Learnable context vectors run through the frozen text tower (CoOp):
    ``[SOS] ctx_1 ... ctx_n <class words> . [EOS]``.

    Only ``ctx`` is a parameter; the backbone is held in a plain attribute so it never enters
    ``state_dict()`` or ``parameters()`` (checkpoints hold the context alone). ``init``: words
    whose token embeddings initialise the context (their token count must equal ``n_ctx``);
    None = N(0, 0.02) as in CoOp.
    """

    def __init__(self, backbone: FrozenCLIP, class_names: Sequence[str], n_ctx: int = 16,
                 class_specific: bool = True, init: str | None = None,
                 name_map: Callable[[str], str] | None = None):
        super().__init__()
        object.__setattr__(self, "_backbone", backbone)
        tower = _text_tower(backbone.model)
        if tower["pool_type"] != "argmax" or not hasattr(backbone.tokenizer, "encode"):
            raise BackboneError("PromptEncoder needs a CLIP BPE text tower (argmax pooling)")
        if n_ctx < 1:
            raise BackboneError(f"n_ctx must be >= 1, got {n_ctx}")
        names = [name_map(c) if name_map else c for c in class_names]
        n_cls = len(names)
        if init is not None:
            n_init = len(backbone.tokenizer.encode(init))
            if n_init != n_ctx:
                raise BackboneError(f"init {init!r} has {n_init} tokens but n_ctx={n_ctx}")
        placeholder = " ".join(["X"] * n_ctx)
        tokens = backbone.tokenize([f"{placeholder} {n}." for n in names]).to(backbone.device)
        with torch.no_grad():
            embeds = tower["token_embedding"](tokens)
            if init is not None:
                init_tokens = backbone.tokenize([init]).to(backbone.device)
                ctx = tower["token_embedding"](init_tokens)[0, 1:1 + n_ctx]
                ctx = ctx.expand(n_cls if class_specific else 1, -1, -1).clone()
            else:
                ctx = torch.empty(n_cls if class_specific else 1, n_ctx, embeds.shape[-1],
                                  device=backbone.device).normal_(std=0.02)
        self.ctx = nn.Parameter(ctx.float())
        self.n_ctx, self.class_specific, self.class_names = n_ctx, class_specific, list(names)
        # derived from frozen weights and the class names: never saved
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("token_prefix", embeds[:, :1].clone(), persistent=False)
        self.register_buffer("token_suffix", embeds[:, 1 + n_ctx:].clone(), persistent=False)

    @property
    def backbone(self) -> FrozenCLIP:
        return self._backbone

    def embeddings(self) -> torch.Tensor:
        """``(C, n_tokens, width)`` token embeddings with the context spliced in."""
        ctx = self.ctx.expand(self.tokens.shape[0], -1, -1)
        return torch.cat([self.token_prefix, ctx.to(self.token_prefix.dtype),
                          self.token_suffix], dim=1)

    def forward(self) -> torch.Tensor:
        """Unnormalised class text features ``(C, D)``; gradients reach ``ctx`` only."""
        return _text_from_embeddings(_text_tower(self._backbone.model), self.embeddings(),
                                     self.tokens)


def encode_together(*encoders: PromptEncoder) -> list[torch.Tensor]:
    """Each encoder's ``forward()``, from one pass through their shared text tower: DualCoOp's
    positive and negative prompts as one batch of 2C texts instead of two passes of C (the
    tower's products are small, so one pass costs less than two)."""
    backbone = encoders[0].backbone
    if any(e.backbone is not backbone for e in encoders):
        return [e() for e in encoders]
    out = _text_from_embeddings(_text_tower(backbone.model),
                                torch.cat([e.embeddings() for e in encoders]),
                                torch.cat([e.tokens for e in encoders]))
    return list(out.split([len(e.tokens) for e in encoders]))


__all__ = ["PromptEncoder", "encode_together"]
