"""FrozenCLIP / PromptEncoder against open_clip's own forward passes (the reference we did not
write), on tiny configs for the numerics and on the real RN50 / RN101 / ViT-B-16 architectures
(random weights) for the geometry at 224 and 448 px."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trm_lib.backbone import weights
from trm_lib.backbone.clip import (
    BackboneError,
    FrozenCLIP,
    interpolate_pos_embed,
    register_model_configs,
)
from trm_lib.config.run_config import BackboneConfig
from trm_lib.core.prompts import PromptEncoder

torch.set_num_threads(1)

TEXT = {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
CONFIGS = {
    "test-RN": {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1],
                                                "width": 8, "head_width": 64}, "text_cfg": TEXT},
    "test-ViT": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64,
                                                 "patch_size": 8, "head_width": 32},
                 "text_cfg": TEXT},
    "test-ViT-avg": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64,
                                                     "patch_size": 8, "head_width": 32,
                                                     "pool_type": "avg"}, "text_cfg": TEXT},
    "test-ViT-lnpool": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1,
                                                        "width": 64, "patch_size": 8,
                                                        "head_width": 32,
                                                        "final_ln_after_pool": True},
                        "text_cfg": TEXT},
}


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model_configs")
    for name, cfg in CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    assert sorted(register_model_configs(folder)) == sorted(CONFIGS)
    return folder


def _perturb(backbone: FrozenCLIP, seed: int = 0) -> FrozenCLIP:
    """Random BatchNorm / LayerNorm affine and statistics, so that every residual branch and norm
    matters (open_clip zero-initialises bn3 and LayerNorms start as the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in backbone.model.visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return backbone


def _close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    assert ours.shape == ref.shape
    scale = ref.abs().max().item()
    assert scale > 1e-3, "reference is degenerate; the comparison would prove nothing"
    torch.testing.assert_close(ours, ref, rtol=rel, atol=rel * scale)


def _images(b: FrozenCLIP, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, b.image_size, b.image_size, generator=g)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------

def test_register_model_configs_idempotent_and_strict(config_dir, tmp_path):
    before = len(open_clip.factory._MODEL_CONFIG_PATHS)
    assert sorted(register_model_configs(config_dir)) == sorted(CONFIGS)
    assert len(open_clip.factory._MODEL_CONFIG_PATHS) == before
    assert "test-RN" in open_clip.list_models()
    (tmp_path / "broken.json").write_text(json.dumps({"embed_dim": 8, "vision_cfg": {}}))
    with pytest.raises(BackboneError, match="broken.json.*text_cfg"):
        register_model_configs(tmp_path)
    assert register_model_configs(tmp_path / "absent") == []


# ---------------------------------------------------------------------------------------------
# ResNet: re-implemented attention pool
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [None, 128])
def test_resnet_global_equals_encode_image(config_dir, size):
    b = _perturb(FrozenCLIP("test-RN", image_size=size))
    x = _images(b)
    out = b.encode_images(x, raw=True)
    h, w = b.grid
    assert (b.image_size, b.grid) == ((64, (2, 2)) if size is None else (128, (4, 4)))
    assert out["dense"].shape == (2, h * w, b.embed_dim)
    assert out["dense_raw"].shape == (2, h * w, b.dense_dim) and b.dense_dim == 8 * 32
    with torch.no_grad():
        _close(out["global"], b.model.encode_image(x))
        layer4 = b.model.visual.forward_intermediates(x, indices=1, intermediates_only=True)
    # raw tokens are open_clip's layer4 map, flattened row-major
    _close(out["dense_raw"], layer4["image_intermediates"][0].flatten(2).transpose(1, 2))
    assert all(v.dtype == torch.float32 for v in out.values())


def test_resnet_dense_tokens_are_the_pool_value_path(config_dir):
    """With a zero query projection the pool attends uniformly, so open_clip's global output is
    the mean of c_proj(v_proj(.)) over [mean token, every location]: ties ``dense`` to open_clip's
    own attention pool rather than to a second copy of our formula."""
    b = _perturb(FrozenCLIP("test-RN", image_size=128))
    pool = b.model.visual.attnpool
    with torch.no_grad():
        pool.q_proj.weight.zero_()
        pool.q_proj.bias.zero_()
        x = _images(b)
        out = b.encode_images(x, raw=True)
        ref = b.model.encode_image(x)
        mean_tok = out["dense_raw"].mean(dim=1) + pool.positional_embedding[0]
        mean_val = pool.c_proj(pool.v_proj(mean_tok))
        L = out["dense"].shape[1]
        _close((mean_val + out["dense"].sum(dim=1)) / (L + 1), ref)
        # the shared helper (TinyCLIP pre-training's region loss uses it) gives the same tokens
        from trm_lib.backbone.clip import resnet_dense_tokens
        _close(resnet_dense_tokens(pool, out["dense_raw"]), out["dense"])


# ---------------------------------------------------------------------------------------------
# ViT: projected tokens after ln_post
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [None, 64])
def test_vit_class_token_and_tokens_equal_open_clip(config_dir, size):
    b = _perturb(FrozenCLIP("test-ViT", image_size=size))
    assert b.is_vit and b.grid == ((4, 4) if size is None else (8, 8))
    x = _images(b)
    out = b.encode_images(x, raw=True)
    visual = b.model.visual
    visual.output_tokens = True
    try:
        with torch.no_grad():
            pooled, tokens = visual(x)
    finally:
        visual.output_tokens = False
    _close(out["global"], pooled)
    _close(out["dense_raw"], tokens)
    _close(out["dense"], tokens @ visual.proj)
    with torch.no_grad():
        _close(out["global"], b.model.encode_image(x))


@pytest.mark.parametrize("name", ["test-ViT-avg", "test-ViT-lnpool"])
def test_vit_pool_variants_equal_encode_image(config_dir, name):
    b = _perturb(FrozenCLIP(name))
    x = _images(b)
    with torch.no_grad():
        _close(b.encode_images(x)["global"], b.model.encode_image(x))


# ---------------------------------------------------------------------------------------------
# Real architectures, random weights: geometry at 224 and 448 px
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,grid,dims,exact_at", [
    ("RN50", (7, 7), (1024, 2048), 224),
    ("RN101", (7, 7), (512, 2048), 448),
    ("ViT-B-16", (14, 14), (512, 768), None),
])
def test_real_architectures_at_224_and_448(name, grid, dims, exact_at):
    """Built once at 224 px, then resized to 448 px exactly as the constructor would (native
    build + interpolation), to keep the test cheap; numerics on the 1e-5 scale where marked."""
    b = FrozenCLIP(name, image_size=224)
    for size, g in ((224, grid), (448, (grid[0] * 2, grid[1] * 2))):
        if size != b.image_size:
            assert b.set_image_size(size) == g
        assert (b.grid, (b.embed_dim, b.dense_dim), b.image_size) == (g, dims, size)
        pos = (b.model.visual.positional_embedding if b.is_vit
               else b.model.visual.attnpool.positional_embedding)
        assert pos.shape[0] == g[0] * g[1] + 1
        if name.startswith("ViT") and size == 448:
            continue  # 785 tokens x 12 layers is slow on one core; tiny ViTs run resized
        x = _images(b, n=1)
        out = b.encode_images(x, raw=True)
        assert out["global"].shape == (1, dims[0])
        assert out["dense"].shape == (1, g[0] * g[1], dims[0])
        assert out["dense_raw"].shape == (1, g[0] * g[1], dims[1])
        if size == exact_at:
            with torch.no_grad():
                _close(out["global"], b.model.encode_image(x), rel=1e-5)


def test_constructor_size_equals_later_resize(config_dir):
    a = FrozenCLIP("test-RN", image_size=128)
    b = FrozenCLIP("test-RN")
    b.set_image_size(128)
    assert torch.equal(a.model.visual.attnpool.positional_embedding,
                       b.model.visual.attnpool.positional_embedding)
    assert a.identity() == b.identity()


# ---------------------------------------------------------------------------------------------
# Positional-embedding interpolation
# ---------------------------------------------------------------------------------------------

def test_interpolation_same_size_is_identity():
    pos = torch.randn(1 + 7 * 7, 16)
    torch.testing.assert_close(interpolate_pos_embed(pos, (7, 7)), pos, rtol=0, atol=1e-6)


def test_interpolation_matches_open_clip_loader_and_keeps_class_position():
    """open_clip resizes ViT embeddings on checkpoint load; our helper must agree with it."""
    from open_clip.model import resize_pos_embed

    pos = torch.randn(1 + 7 * 7, 16)
    fake = torch.nn.Module()
    fake.visual = torch.nn.Module()
    for new in ((14, 14), (4, 4), (10, 6)):
        fake.visual.grid_size = new
        state = {"visual.positional_embedding": pos.clone()}
        resize_pos_embed(state, fake)
        ours = interpolate_pos_embed(pos, new)
        assert ours.shape == (1 + new[0] * new[1], 16)
        torch.testing.assert_close(ours, state["visual.positional_embedding"])
        assert torch.equal(ours[0], pos[0])


def test_interpolation_of_a_smooth_field_stays_smooth():
    """A linear ramp sampled at cell centres is reproduced exactly by bicubic upsampling away
    from the borders (cubic convolution reproduces linear functions)."""
    old, new = 8, 16
    centres = (torch.arange(old) + 0.5) / old
    ramp = centres[None, :].expand(old, old).reshape(-1, 1)  # depends on x only
    out = interpolate_pos_embed(torch.cat([torch.zeros(1, 1), ramp]), (new, new))[1:]
    grid = out.reshape(new, new)
    expect = (torch.arange(new) + 0.5) / new
    torch.testing.assert_close(grid[:, 3:-3], expect[3:-3].expand(new, -1), rtol=0, atol=1e-5)


def test_interpolation_rejects_non_square_without_grid():
    with pytest.raises(BackboneError, match="not a square"):
        interpolate_pos_embed(torch.randn(1 + 12, 4), (4, 4))


def test_image_size_must_fit_the_stride(config_dir):
    with pytest.raises(BackboneError, match="multiple of 32"):
        FrozenCLIP("test-RN", image_size=100)
    with pytest.raises(BackboneError, match="multiple of the patch size"):
        FrozenCLIP("test-ViT", image_size=36)


# ---------------------------------------------------------------------------------------------
# Weights: tags, files, local-dir folders, seeded random init
# ---------------------------------------------------------------------------------------------

def test_quickgelu_mismatch_is_an_error():
    with pytest.raises(BackboneError, match="RN101-quickgelu"):
        FrozenCLIP("RN101", pretrained="openai")


def test_unknown_pretrained_and_missing_file(config_dir, tmp_path):
    with pytest.raises(BackboneError, match="nor an open_clip tag"):
        FrozenCLIP("test-RN", pretrained="no-such-tag")
    with pytest.raises(BackboneError, match="weights.pt: pretrained weights file not found"):
        FrozenCLIP("test-RN", pretrained=str(tmp_path / "weights.pt"))
    with pytest.raises(BackboneError, match="not an open_clip model config"):
        FrozenCLIP("no-such-model")


def test_random_init_is_seeded(config_dir):
    a, b, c = (FrozenCLIP("test-RN", seed=s) for s in (0, 0, 1))
    pa, pb, pc = (m.model.visual.conv1.weight for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.identity() == b.identity() != c.identity()
    assert a.identity()["pretrained"] == "random(seed=0)"


def test_weights_file_loading_and_resize(config_dir, tmp_path):
    src = _perturb(FrozenCLIP("test-RN", seed=3))
    path = tmp_path / "tiny.pt"
    torch.save(src.model.state_dict(), path)
    b = FrozenCLIP("test-RN", pretrained=str(path))
    for (k, v), (k2, v2) in zip(src.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    ident = b.identity()
    assert ident["pretrained"] == "file" and len(ident["weights_sha256"]) == 64
    # the weights are named by their hash, not their path: a copy shares the feature store
    copy = tmp_path / "elsewhere" / path.name
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert FrozenCLIP("test-RN", pretrained=str(copy)).identity() == ident
    # at 128 px the loaded pool embedding is interpolated (open_clip would fail the strict load)
    big = FrozenCLIP("test-RN", pretrained=str(path), image_size=128)
    expect = interpolate_pos_embed(src.model.visual.attnpool.positional_embedding, (4, 4))
    torch.testing.assert_close(big.model.visual.attnpool.positional_embedding, expect)
    assert big.identity()["weights_sha256"] == ident["weights_sha256"]
    torch.save({"state_dict": src.model.state_dict()}, path)  # other container, other hash
    assert FrozenCLIP("test-RN", pretrained=str(path)).identity()["weights_sha256"] != \
        ident["weights_sha256"]


def test_local_dir_loading(config_dir, tmp_path):
    src = _perturb(FrozenCLIP("test-ViT", seed=5))
    folder = tmp_path / "tiny-vit"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIGS["test-ViT"]}))
    torch.save(src.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    x = _images(src)
    ref = src.encode_images(x)["global"]
    for b in (FrozenCLIP("test-ViT", pretrained=f"local-dir:{folder}"),
              FrozenCLIP(f"local-dir:{folder}"),
              FrozenCLIP("test-ViT", pretrained=str(folder))):
        torch.testing.assert_close(b.encode_images(x)["global"], ref)
        assert b.identity()["weights_sha256"] is not None
        assert "random" not in b.identity()["pretrained"]

    (folder / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(BackboneError, match="no weights file"):
        FrozenCLIP("test-ViT", pretrained=f"local-dir:{folder}")
    with pytest.raises(BackboneError, match="open_clip_config.json: not found"):
        FrozenCLIP("test-ViT", pretrained=f"local-dir:{tmp_path}")


def test_tinyclip_goes_through_its_registered_provider(config_dir, tmp_path, monkeypatch):
    """'tinyclip' resolves through the provider trm_lib.tinyclip.pretrain registers in
    trm_lib.backbone.weights; the backbone never imports pre-training, and nobody has to import
    the provider first: the registry imports the declared module when the name is asked for."""
    code = ("import sys\nfrom trm_lib.backbone.weights import WEIGHT_PROVIDERS\n"
            "assert 'trm_lib.tinyclip.pretrain' not in sys.modules\n"
            "provider = WEIGHT_PROVIDERS.get('tinyclip')\n"
            "assert 'trm_lib.tinyclip.pretrain' in sys.modules\n"
            "assert provider.__module__ == 'trm_lib.tinyclip.pretrain'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(BackboneError, match="provider 'nope' unknown .*tinyclip"):
        weights.WEIGHT_PROVIDERS.get("nope")
    src = FrozenCLIP("test-RN", seed=7)
    folder = tmp_path / "tinyclip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIGS["test-RN"]}))
    torch.save(src.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    calls = []
    monkeypatch.setitem(weights.WEIGHT_PROVIDERS._items, "tinyclip",
                        lambda name: calls.append(name) or folder)
    b = FrozenCLIP("test-RN", pretrained="tinyclip")
    assert calls == ["test-RN"]
    assert torch.equal(b.model.visual.conv1.weight, src.model.visual.conv1.weight)


# ---------------------------------------------------------------------------------------------
# Frozen behaviour, batching, config, transforms
# ---------------------------------------------------------------------------------------------

def test_frozen_and_always_eval(config_dir):
    b = FrozenCLIP("test-RN")
    assert not any(p.requires_grad for p in b.parameters())
    wrapper = torch.nn.Sequential(b)
    wrapper.train()
    assert not b.training and not any(m.training for m in b.modules())
    out = b.encode_images(_images(b))
    assert not out["global"].requires_grad


def test_batching_and_input_checks(config_dir):
    b = _perturb(FrozenCLIP("test-RN", batch_size=2))
    x = _images(b, n=5)
    chunked = b.encode_images(x)
    b.batch_size = 16
    whole = b.encode_images(x)
    for k in whole:
        torch.testing.assert_close(chunked[k], whole[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(BackboneError, match=r"\(B, 3, 64, 64\)"):
        b.encode_images(torch.zeros(1, 3, 32, 32))


def test_folded_batchnorm_gives_the_open_clip_features(config_dir):
    """Features come from a BatchNorm-folded copy of the ResNet tower: the same numbers as
    open_clip's own eval-mode tower, ``model`` itself untouched, and the copy remade when the
    weights change in place."""
    from trm_lib.backbone.clip import fold_batchnorm, resnet_feature_map

    b = _perturb(FrozenCLIP("test-RN", seed=2))
    x = _images(b)
    with torch.no_grad():
        ref = resnet_feature_map(b.model.visual, x)
        got = resnet_feature_map(b._folded_visual(), x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in b.model.visual.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in b._folded_visual().modules())
    assert "_folded" not in dict(b.named_modules()) and all(
        not k.startswith("_folded") for k in b.state_dict())
    # not a second copy of the tower: no attention pool, no BatchNorm, no tensor of `model`,
    # only the folded convolutions (as many numbers as the tower's conv weights and biases)
    folded, visual = b._folded_visual(), b.model.visual
    theirs = {id(t) for t in (*visual.parameters(), *visual.buffers())}
    mine = [*folded.parameters(), *folded.buffers()]
    assert not any(id(t) in theirs for t in mine)
    assert isinstance(folded.attnpool, torch.nn.Identity)
    convs = [m for m in visual.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(t.numel() for t in mine) == sum(m.weight.numel() + m.out_channels for m in convs)
    copied = copy.deepcopy(visual).eval()  # the copy the folded view replaced: same numbers
    fold_batchnorm(copied)
    with torch.no_grad():
        xc = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(resnet_feature_map(copied.to(memory_format=torch.channels_last), xc),
                           resnet_feature_map(folded, xc))
    before = b.encode_images(x)["dense"]
    with torch.no_grad():
        b.model.visual.bn1.weight.mul_(2.0)  # an in-place edit: the folded copy must follow
        ref2 = b.attention_pool(resnet_feature_map(b.model.visual, x).flatten(2).transpose(1, 2))
    after = b.encode_images(x)["dense"]
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, ref2["dense"], atol=1e-5, rtol=1e-4)
    stem = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert fold_batchnorm(stem.eval()) == 1 and isinstance(stem[1], torch.nn.Identity)
    with pytest.raises(BackboneError, match="eval-mode"):
        fold_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))


def test_from_config(config_dir):
    cfg = BackboneConfig(model="test-RN", pretrained=None, image_size=128, batch_size=3,
                         templates=["a {}.", "a photo of a {}."])
    b = FrozenCLIP.from_config(cfg, device="cpu")
    assert (b.image_size, b.grid, b.batch_size, b.precision) == (128, (4, 4), 3, "auto")
    assert b.templates == ("a {}.", "a photo of a {}.")
    assert b.identity() == {"model": "test-RN", "pretrained": "random(seed=0)",
                            "weights_sha256": None, "image_size": 128, "precision": "fp32",
                            "batchnorm": "folded"}
    with pytest.raises(BackboneError, match="precision"):
        FrozenCLIP("test-RN", precision="int8")


def test_transforms(config_dir):
    b = FrozenCLIP("test-RN")
    mean = tuple(int(round(m * 255)) for m in b.mean)
    image = Image.new("RGB", (90, 50), mean)
    x = b.transform()(image)
    assert x.shape == (3, 64, 64)
    assert x.abs().max() < 0.02  # the mean colour normalises to ~0
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8))
    assert torch.equal(b.transform()(image), b.transform(train=True, augment="none")(image))
    for augment in ("crop_flip", "cutout"):
        assert b.transform(train=True, augment=augment)(image).shape == (3, 64, 64)
    with pytest.raises(BackboneError, match="augment"):
        b.transform(train=True, augment="mixup")


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

def test_encode_text_ensemble_and_name_map(config_dir):
    b = FrozenCLIP("test-RN")
    templates = ("a photo of a {}.", "a {} in a scene.")
    t = b.encode_text(["cat", "dining table"], templates)
    assert t.shape == (2, 32)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        singles = [F.normalize(b.model.encode_text(b.tokenizer([tp.format("cat")])), dim=-1)
                   for tp in templates]
    torch.testing.assert_close(t[0], F.normalize(sum(singles)[0], dim=-1))
    mapped = b.encode_text(["diningtable"], templates,
                           name_map=lambda s: {"diningtable": "dining table"}.get(s, s))
    torch.testing.assert_close(mapped[0], t[1])
    with pytest.raises(BackboneError, match="context length 32"):
        b.encode_text(["word " * 40])


def test_prompt_encoder_matches_encode_text_and_trains_only_ctx(config_dir):
    b = FrozenCLIP("test-ViT")
    names = ["cat", "dining table", "potted plant"]
    enc = PromptEncoder(b, names, n_ctx=4, init="a photo of a")
    assert list(enc.state_dict()) == ["ctx"]
    assert [n for n, _ in enc.named_parameters()] == ["ctx"]
    assert enc.ctx.shape == (3, 4, 32)
    out = enc()
    torch.testing.assert_close(F.normalize(out, dim=-1),
                               b.encode_text(names, ("a photo of a {}.",)),
                               rtol=1e-5, atol=1e-5)
    out.pow(2).sum().backward()
    assert enc.ctx.grad is not None and enc.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in b.parameters())


def test_prompt_encoders_encoded_together_match_their_own_passes(config_dir):
    """DualCoOp's two prompt sets go through the text tower as one batch: each gets what its
    own forward gives, and gradients reach each context from its own texts only."""
    from trm_lib.core.prompts import encode_together

    b = FrozenCLIP("test-ViT")
    names = ["cat", "dining table", "potted plant"]
    torch.manual_seed(0)
    pos, neg = PromptEncoder(b, names, n_ctx=4), PromptEncoder(b, names, n_ctx=4)
    t_pos, t_neg = encode_together(pos, neg)
    torch.testing.assert_close(t_pos, pos(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t_neg, neg(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(t_pos, t_neg)
    t_pos.pow(2).sum().backward()  # the positive texts alone
    assert pos.ctx.grad.abs().sum() > 0 and (neg.ctx.grad is None or neg.ctx.grad.abs().sum() == 0)


def test_prompt_encoder_shared_random_context(config_dir):
    b = FrozenCLIP("test-RN")
    torch.manual_seed(0)
    enc = PromptEncoder(b, ["cat", "dog"], n_ctx=6, class_specific=False)
    assert enc.ctx.shape == (1, 6, 32)
    assert enc().shape == (2, 32)
    with pytest.raises(BackboneError, match="has 4 tokens but n_ctx=16"):
        PromptEncoder(b, ["cat"], init="a photo of a")
