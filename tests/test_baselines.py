"""Zero-shot CLIP, the linear probe and DualCoOp in the method contract (docs/METHOD_CHOICES.md: the baseline rows).

DualCoOp needs a real text tower: a random-weight TinyCLIP-RN built through FrozenCLIP (seconds
on a CPU, no download)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from trm_lib.backbone.clip import FrozenCLIP
from trm_lib.config.run_config import ConfigError, MethodConfig
from trm_lib.core import build_method
from trm_lib.core.baselines import DualCoOp, LinearProbe, ZeroShotCLIP
from trm_lib.core.losses import partial_asl
from trm_lib.core.methods import MethodContext

torch.set_num_threads(1)

NAMES = ["cat", "dog", "traffic light"]
L = 9


@pytest.fixture(scope="module")
def backbone() -> FrozenCLIP:
    return FrozenCLIP("TinyCLIP-RN", pretrained=None, seed=0)


@pytest.fixture(scope="module")
def ctx(backbone) -> MethodContext:
    text = backbone.encode_text(NAMES)
    return MethodContext(list(NAMES), text, backbone.embed_dim, 32, (3, 3), 8, backbone)


def _cfg(name: str, **kw) -> MethodConfig:
    return dataclasses.replace(MethodConfig(name=name), **kw)


def _batch(ctx: MethodContext, B: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    D, C = ctx.embed_dim, len(ctx.class_names)
    full = torch.where(torch.rand(B, C, generator=g) < 0.5, 1.0, -1.0)
    observed = torch.where(torch.rand(B, C, generator=g) < 0.6, full, torch.zeros_like(full))
    observed[0] = full[0]
    return {"global": torch.randn(B, D, generator=g), "dense": torch.randn(B, L, D, generator=g),
            "observed": observed, "full": full, "index": torch.arange(B)}


def test_factory_builds_every_baseline(ctx):
    assert isinstance(build_method(_cfg("zero_shot"), ctx), ZeroShotCLIP)
    assert isinstance(build_method(_cfg("linear_probe"), ctx), LinearProbe)
    assert isinstance(build_method(_cfg("dualcoop", n_ctx=4), ctx), DualCoOp)


def test_zero_shot_is_scaled_cosine_and_untrainable(ctx):
    m = ZeroShotCLIP(_cfg("zero_shot"), ctx)
    b = _batch(ctx)
    logits = m(b)["logits"]
    ref = 50.0 * F.cosine_similarity(b["global"][:, None], ctx.text_embeddings[None], dim=-1)
    assert torch.allclose(logits, ref, atol=1e-4)
    assert m.trainable is False and m.trainable_parameters() == []
    loss, logs = m.loss(m(b), b, 1)
    assert torch.isfinite(loss) and not loss.requires_grad and logs["cls"] == loss.item()


def test_linear_probe_starts_as_zero_shot_and_learns(ctx):
    zs = ZeroShotCLIP(_cfg("zero_shot"), ctx)
    lp = LinearProbe(_cfg("linear_probe"), ctx)
    b = _batch(ctx)
    assert torch.allclose(lp(b)["logits"], zs(b)["logits"], atol=1e-4)
    assert {n for n, _ in lp.named_parameters()} == {"weight", "bias"}
    opt = torch.optim.SGD(lp.trainable_parameters(), lr=0.1)
    first, _ = lp.loss(lp(b), b, 1)
    for _ in range(20):
        loss, _ = lp.loss(lp(b), b, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first.item()
    bce = LinearProbe(_cfg("linear_probe", cls_loss="bce"), ctx)
    assert bce.loss(bce(b), b, 1)[0].item() != pytest.approx(first.item())


@pytest.fixture(scope="module")
def dualcoop(ctx) -> DualCoOp:
    torch.manual_seed(0)
    return DualCoOp(_cfg("dualcoop", n_ctx=4), ctx)


def test_dualcoop_forward_matches_the_formula(dualcoop, ctx):
    b = _batch(ctx)
    out = dualcoop(b)
    C = len(NAMES)
    assert out["logits"].shape == (4, C) and out["maps"].shape == (4, C, L)
    assert torch.allclose(out["maps"].sum(-1), torch.ones(4, C), atol=1e-5)
    t_pos = F.normalize(dualcoop.prompt_pos(), dim=-1)
    t_neg = F.normalize(dualcoop.prompt_neg(), dim=-1)
    f = F.normalize(b["dense"], dim=-1)
    cos_p = torch.einsum("bld,cd->bcl", f, t_pos)
    cos_n = torch.einsum("bld,cd->bcl", f, t_neg)
    w = torch.softmax(20.0 * cos_p, dim=-1)
    assert torch.allclose(out["maps"], w, atol=1e-5)
    ref = 50.0 * ((w * cos_p).sum(-1) - (w * cos_n).sum(-1))
    assert torch.allclose(out["logits"], ref, atol=1e-3)
    # ASL on the softmax over the (neg, pos) pair = ASL on the logit difference
    pair = torch.stack([out["neg_logits"], out["pos_logits"]])
    assert torch.allclose(torch.softmax(pair, 0)[1], torch.sigmoid(out["logits"]), atol=1e-6)
    loss, _ = dualcoop.loss(out, b, 1)
    assert loss.item() == pytest.approx(partial_asl(out["logits"], b["observed"]).item(), rel=1e-6)


def test_dualcoop_trains_only_the_prompts(dualcoop, ctx, backbone):
    b = _batch(ctx)
    dualcoop.train()
    dualcoop.zero_grad(set_to_none=True)
    loss, _ = dualcoop.loss(dualcoop(b), b, 1)
    loss.backward()
    names = {n for n, p in dualcoop.named_parameters() if p.grad is not None}
    assert names == {"prompt_pos.ctx", "prompt_neg.ctx", "logit_scale", "spatial_scale"}
    assert dualcoop.prompt_pos.ctx.shape == (len(NAMES), 4, backbone.model.token_embedding.weight
                                             .shape[1])  # class-specific contexts
    assert all(p.grad is None for p in backbone.parameters())
    assert set(dualcoop.state_dict()) == set(names)  # the frozen text tower is not saved


def test_dualcoop_eval_cache_follows_the_weights(dualcoop, ctx, tmp_path):
    b = _batch(ctx)
    dualcoop.eval()
    with torch.no_grad():
        first = dualcoop(b)["logits"]
        assert torch.equal(first, dualcoop(b)["logits"])
        state = {k: v.clone() for k, v in dualcoop.state_dict().items()}
        state["prompt_pos.ctx"] += 0.5
        torch.save(state, tmp_path / "d.pt")
        dualcoop.load_state_dict(torch.load(tmp_path / "d.pt", weights_only=True))
        assert not torch.allclose(first, dualcoop(b)["logits"])
    dualcoop.train()


def test_dualcoop_generic_context_and_fixed_scales(ctx):
    m = DualCoOp(_cfg("dualcoop", n_ctx=4, class_specific_ctx=False, learn_logit_scale=False),
                 ctx)
    assert m.prompt_pos.ctx.shape[0] == 1
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"prompt_pos.ctx",
                                                                      "prompt_neg.ctx"}


def test_dualcoop_without_backbone_is_a_clear_error(ctx):
    bare = dataclasses.replace(ctx, backbone=None)
    with pytest.raises(ValueError, match="backbone"):
        DualCoOp(_cfg("dualcoop"), bare)


def test_trm_ml_with_learnable_text_context(ctx):
    torch.manual_seed(0)
    m = build_method(_cfg("trm_ml", learn_text_context=True, n_ctx=4, num_heads=4), ctx)
    b = _batch(ctx)
    m.train()
    loss, _ = m.loss(m(b), b, 1)
    loss.backward()
    assert m.prompt.ctx.grad is not None and m.prompt.ctx.grad.abs().sum() > 0
    assert "prompt.ctx" in m.state_dict()


def test_dualcoop_ctx_init_starts_the_positive_prompt_at_the_zero_shot_text(ctx, backbone):
    torch.manual_seed(0)
    m = DualCoOp(_cfg("dualcoop", n_ctx=4, ctx_init="a photo of a"), ctx).eval()
    with torch.no_grad():
        t_pos, t_neg = m.texts()
    torch.testing.assert_close(t_pos, backbone.encode_text(NAMES, ("a photo of a {}.",)),
                               rtol=1e-5, atol=1e-5)
    # by default the negative context stays random, so s⁺ − s⁻ does not start at exactly 0
    assert not torch.allclose(t_pos, t_neg, atol=1e-3)
    with pytest.raises(ConfigError, match="method.ctx_init.*has 4 tokens but n_ctx=16"):
        DualCoOp(_cfg("dualcoop", ctx_init="a photo of a"), ctx)


@pytest.mark.parametrize("words", ["a photo of a", ""])
def test_dualcoop_negative_context_can_start_as_the_positive_one(ctx, words):
    torch.manual_seed(0)
    m = DualCoOp(_cfg("dualcoop", n_ctx=4, ctx_init=words, neg_ctx_init="positive"), ctx)
    torch.testing.assert_close(m.prompt_neg.ctx, m.prompt_pos.ctx, rtol=0, atol=0)
    assert m.prompt_neg.ctx.data_ptr() != m.prompt_pos.ctx.data_ptr()  # a copy, not shared
    b = _batch(ctx)
    out = m(b)
    assert torch.equal(out["logits"], torch.zeros_like(out["logits"]))  # s⁺ − s⁻ = 0
    # the gradients of the pair are exact opposites, so the first step pulls them apart
    m.loss(out, b, 1)[0].backward()
    g_pos, g_neg = m.prompt_pos.ctx.grad, m.prompt_neg.ctx.grad
    assert g_pos.abs().sum() > 0
    torch.testing.assert_close(g_neg, -g_pos, rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="method.neg_ctx_init"):
        _cfg("dualcoop", neg_ctx_init="zero").validate()


def test_dualcoop_zero_shot_prior_starts_at_zero_shot_clip_and_learns_the_pair(ctx):
    """With t- = t+ the logits start at 0 (a tie); the zero-shot prior starts them at zero-shot
    CLIP's λ cos(g, t_c) exactly, and the prompt pair still gets its opposite gradients."""
    torch.manual_seed(0)
    cfg = _cfg("dualcoop", n_ctx=4, ctx_init="a photo of a", neg_ctx_init="positive",
               dualcoop_prior="zero_shot")
    m = DualCoOp(cfg, ctx)
    zs = ZeroShotCLIP(_cfg("zero_shot"), ctx)
    b = _batch(ctx)
    out = m(b)
    torch.testing.assert_close(out["logits"], zs(b)["logits"], rtol=1e-5, atol=1e-5)
    m.loss(out, b, 1)[0].backward()
    g_pos, g_neg = m.prompt_pos.ctx.grad, m.prompt_neg.ctx.grad
    assert g_pos.abs().sum() > 0
    torch.testing.assert_close(g_neg, -g_pos, rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="method.dualcoop_prior"):
        _cfg("dualcoop", dualcoop_prior="global").validate()


def test_dualcoop_zero_shot_score_trains_the_pair_as_the_lineage_and_learns_the_mix(ctx):
    """dualcoop_prior=zero_shot_score: untrained, the scores are zero-shot CLIP's; the prompt
    pair gets exactly the lineage's gradients (the prior never reaches it), and only the mixing
    weight w learns from the scored logit s+ - s- + w λ cos(g, t_c). A few steps on a batch whose
    labels follow the global feature lower w's loss."""
    torch.manual_seed(0)
    kw = dict(n_ctx=4, ctx_init="a photo of a", neg_ctx_init="positive")
    m = DualCoOp(_cfg("dualcoop", dualcoop_prior="zero_shot_score", **kw), ctx)
    torch.manual_seed(0)
    lineage = DualCoOp(_cfg("dualcoop", **kw), ctx)
    zs = ZeroShotCLIP(_cfg("zero_shot"), ctx)
    b = _batch(ctx, B=6)
    out = m(b)
    torch.testing.assert_close(out["logits"], zs(b)["logits"], rtol=1e-5, atol=1e-5)
    m.loss(out, b, 1)[0].backward()
    lo = lineage(b)
    lineage.loss(lo, b, 1)[0].backward()
    torch.testing.assert_close(m.prompt_pos.ctx.grad, lineage.prompt_pos.ctx.grad)
    torch.testing.assert_close(m.prompt_neg.ctx.grad, lineage.prompt_neg.ctx.grad)
    assert m.prior_weight.grad is not None and m.prior_weight.grad.abs() > 0
    # labels that zero-shot CLIP ranks perfectly: fitting w alone lowers the loss
    b["observed"] = torch.where(zs(b)["logits"] > zs(b)["logits"].median(), 1.0, -1.0)
    opt = torch.optim.SGD([m.prior_weight], lr=0.01)
    before = float(m.loss(m(b), b, 1)[0].detach())
    for _ in range(5):
        opt.zero_grad()
        m.loss(m(b), b, 1)[0].backward()
        opt.step()
    assert float(m.loss(m(b), b, 1)[0].detach()) < before


def test_dualcoop_starts_at_zero_shot_for_every_class_with_prompt_names(backbone):
    """Class names that are not words ("diningtable") are prompted with the dataset's prompt
    names, exactly as the fixed text embeddings were encoded: DualCoOp's positive branch starts
    as zero-shot text-pixel matching for every class."""
    names = ["diningtable", "tvmonitor", "cat"]
    words = ["dining table", "tv monitor", "cat"]
    mapping = dict(zip(names, words))
    text = backbone.encode_text(names, ("a photo of a {}.",), lambda c: mapping[c])
    ctx = MethodContext(names, text, backbone.embed_dim, 32, (3, 3), 8, backbone,
                        prompt_names=words)
    torch.manual_seed(0)
    m = DualCoOp(_cfg("dualcoop", n_ctx=4, ctx_init="a photo of a", neg_ctx_init="positive"),
                 ctx).eval()
    b = _batch(ctx)
    with torch.no_grad():
        out = m(b)
        t = F.normalize(text.float(), dim=-1)
        dense = F.normalize(b["dense"].float(), dim=-1)
        cos = (dense @ t.t()).transpose(1, 2)
        w = torch.softmax(m.spatial_scale.exp() * cos, dim=-1)
        zero_shot = m.logit_scale.exp() * (w * cos).sum(-1)
    torch.testing.assert_close(out["pos_logits"], zero_shot, rtol=1e-4, atol=1e-4)
    assert m.prompt_pos.class_names == words
    # the raw names would prompt "diningtable": a different start for those classes
    raw = MethodContext(names, text, backbone.embed_dim, 32, (3, 3), 8, backbone)
    with torch.no_grad():
        t_raw = F.normalize(DualCoOp(_cfg("dualcoop", n_ctx=4, ctx_init="a photo of a"),
                                     raw).prompt_pos(), dim=-1)
    assert not torch.allclose(t_raw[:2], t[:2], atol=1e-3)
    with pytest.raises(ValueError, match="prompt_names has 2 entries for 3 classes"):
        MethodContext(names, text, backbone.embed_dim, 32, (3, 3), 8, backbone,
                      prompt_names=words[:2])
