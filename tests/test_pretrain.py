"""TinyCLIP pre-training: the multi-positive loss against hand-computed values and open_clip's own
ClipLoss, a 2-step pre-training of a tiny config (deterministic, loadable by open_clip through
``local-dir:``), the cache, and zero-shot mAP against sklearn on open_clip's own forward pass."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sklearn.metrics import average_precision_score

import trm_lib.tinyclip.pretrain as pt
from trm_lib.backbone.clip import register_model_configs
from trm_lib.config.run_config import ConfigError
from trm_lib.tinyclip.pretrain import PretrainConfig, multi_positive_clip_loss

torch.set_num_threads(1)

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}}
# 16 captions of 64 px, batches of 8, one epoch: 2 optimiser steps. Trained at 32 px (a 1x1
# layer4 map), saved at the native 64 px (2x2): the positional-embedding resize is exercised.
CFG = PretrainConfig(model="test-pretrain-RN", corpus_images=16, corpus_image_size=64,
                     train_size=32, epochs=1, batch_size=8, warmup_steps=1, lr=1e-3)


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain_configs")
    (folder / "test-pretrain-RN.json").write_text(json.dumps(TINY))
    register_model_configs(folder)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tinyclip") / "run"
    metrics = pt.pretrain(CFG, out, progress=False, evaluate=False)
    return out, metrics


# ---------------------------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------------------------

def test_loss_equals_open_clip_clip_loss_when_all_distinct():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    scale = torch.tensor(7.0)
    ref = open_clip.ClipLoss()(img, txt, scale)
    torch.testing.assert_close(multi_positive_clip_loss(img, txt, scale), ref)
    torch.testing.assert_close(multi_positive_clip_loss(img, txt, scale, torch.arange(6) * 3), ref)


def test_loss_duplicates_are_positives_hand_computed():
    # one-hot features: logits = s * I. Items 0 and 1 share a group, so rows 0 and 1 have the
    # target (1/2, 1/2, 0): loss_row = -(1/2)(s - log Z) - (1/2)(0 - log Z) = log Z - s/2 with
    # Z = e^s + 2; row 2 has target (0, 0, 1): log Z - s. Mean: log(e^s + 2) - 2s/3 (both sides).
    s = 2.0
    eye = torch.eye(3)
    got = multi_positive_clip_loss(eye, eye, s, torch.tensor([5, 5, 1]))
    expected = math.log(math.exp(s) + 2) - 2 * s / 3
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the standard loss would call item 1 a negative of item 0: log(e^s + 2) - s
    standard = multi_positive_clip_loss(eye, eye, s)
    assert standard.item() == pytest.approx(math.log(math.exp(s) + 2) - s, rel=1e-6)
    # what matters for training: the standard loss pushes an image away from the text of its
    # duplicate, the multi-positive loss pulls it towards it
    img = F.normalize(torch.tensor([[1.0, 0.2], [1.0, -0.2]]), dim=-1).requires_grad_(True)
    txt = img.detach().clone()
    multi_positive_clip_loss(img, txt, 10.0).backward()
    assert (img.grad[0] @ txt[1]).item() > 0  # descent direction -grad moves x_0 away from t_1
    img.grad = None
    multi_positive_clip_loss(img, txt, 10.0, torch.tensor([0, 0])).backward()
    assert (img.grad[0] @ txt[1]).item() < 0  # with the pair as positives, x_0 moves towards t_1


def test_region_similarity_is_spatial_softmax_pooling_of_token_cosines():
    # two tokens, one aligned with the text (cos 1), one orthogonal (cos 0): weights
    # softmax(k * (1, 0)) give k-dependent pooling between the mean (k -> 0) and the max (k -> inf)
    dense = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (B=1, L=2, D=2)
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)]])
    k = 3.0
    got = pt.region_similarity(dense, text, k)
    w = math.exp(k) / (math.exp(k) + 1)
    c = math.sqrt(0.5)  # the third text is equally similar to both tokens
    torch.testing.assert_close(got, torch.tensor([[w, w, c]]))
    assert pt.region_similarity(dense, text, 1e-6)[0, 0].item() == pytest.approx(0.5, abs=1e-5)
    assert pt.region_similarity(dense, text, 60.0)[0, 0].item() == pytest.approx(1.0, abs=1e-5)


def test_region_loss_trains_the_dense_tokens(tmp_path):
    # with region_weight > 0 the attention pool's value/output projections get a gradient from
    # the per-token path too, so the weights differ from a run without it
    assert CFG.region_weight > 0  # the default recipe has the region loss
    base = pt.pretrain(replace(CFG, region_weight=0.0), tmp_path / "a", progress=False,
                       evaluate=False)
    region = pt.pretrain(CFG, tmp_path / "b", progress=False, evaluate=False)
    assert base["weights_sha256"] != region["weights_sha256"]
    assert math.isfinite(region["final_loss"])


def test_loss_rejects_wrong_group_shape():
    with pytest.raises(ValueError, match="groups must have shape"):
        multi_positive_clip_loss(torch.eye(3), torch.eye(3), 1.0, torch.zeros(2))


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("positives", "all"), ("lr", 0.0), ("epochs", 0),
                                         ("train_size", 16), ("augment", "mixup"),
                                         ("corpus_clutter", 3.0), ("corpus_distractors", -1),
                                         ("corpus_min_size", 0.05), ("region_weight", -1.0),
                                         ("region_sharpness", 0.0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"PretrainConfig.{field}"):
        PretrainConfig(**{field: value})


def test_config_hash_tracks_config_and_architecture():
    assert pt.config_hash(CFG) == pt.config_hash(replace(CFG))
    assert pt.config_hash(CFG) != pt.config_hash(replace(CFG, seed=1))
    assert pt.tinyclip_dir(CFG).name.startswith("test-pretrain-RN-")
    with pytest.raises(ConfigError, match="not an open_clip model config"):
        pt.config_hash(replace(CFG, model="no-such-model"))


# ---------------------------------------------------------------------------------------------
# pre-training
# ---------------------------------------------------------------------------------------------

def test_pretrain_writes_an_open_clip_local_dir(trained):
    out, metrics = trained
    assert sorted(p.name for p in out.iterdir()) == ["open_clip_config.json",
                                                     "open_clip_model.safetensors",
                                                     "pretrain.json"]
    assert not list(out.parent.glob(".*partial*"))
    manifest = json.loads((out / "pretrain.json").read_text())
    assert manifest["steps"] == 2 and len(manifest["history"]) == 1
    assert manifest["config"] == json.loads(json.dumps(metrics["config"]))
    assert manifest["corpus"]["images"] == 16 and len(manifest["corpus"]["captions_sha256"]) == 64
    assert math.isfinite(manifest["final_loss"]) and manifest["zero_shot"] is None
    assert manifest["torch"] == torch.__version__

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    assert model.visual.attnpool.positional_embedding.shape == (2 * 2 + 1, 8 * 32)
    weights = load_file(str(out / "open_clip_model.safetensors"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    from PIL import Image

    image = preprocess(Image.new("RGB", (80, 80), (200, 30, 30)))[None]
    assert image.shape == (1, 3, 64, 64)
    with torch.no_grad():
        img, txt, _ = model(image, tokenizer(["a photo of a red car."]))[:3]
    assert img.shape == txt.shape == (1, 32) and torch.isfinite(img).all()


def test_pretrain_is_deterministic(trained, tmp_path):
    out, _ = trained
    again = pt.pretrain(CFG, tmp_path / "again", progress=False, evaluate=False)
    a = load_file(str(out / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "again" / "open_clip_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["weights_sha256"] == trained[1]["weights_sha256"]
    other = pt.pretrain(replace(CFG, seed=1), tmp_path / "other", progress=False, evaluate=False)
    assert other["weights_sha256"] != again["weights_sha256"]


def test_training_moves_the_weights(trained):
    """The 2 steps did something: the saved visual weights differ from the seeded init."""
    out, _ = trained
    torch.manual_seed(CFG.seed)
    init = open_clip.create_model(CFG.model, force_image_size=CFG.train_size).state_dict()
    saved = load_file(str(out / "open_clip_model.safetensors"))
    assert not torch.equal(init["visual.layer1.0.conv1.weight"],
                           saved["visual.layer1.0.conv1.weight"])


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------

def test_ensure_tinyclip_reuses_the_cache(monkeypatch):
    calls = []
    real = pt.pretrain

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pt, "pretrain", counting)
    first = pt.ensure_tinyclip(CFG.model, config=CFG, progress=False, evaluate=False)
    assert first == pt.tinyclip_dir(CFG) and len(calls) == 1
    stamp = (first / "open_clip_model.safetensors").stat().st_mtime_ns
    assert pt.ensure_tinyclip(CFG.model, config=CFG, progress=False, evaluate=False) == first
    assert len(calls) == 1
    assert (first / "open_clip_model.safetensors").stat().st_mtime_ns == stamp
    assert pt.ensure_tinyclip(CFG.model, config=CFG, force=True, progress=False,
                              evaluate=False) == first
    assert len(calls) == 2
    # a damaged folder is reported, naming the file
    (first / "pretrain.json").unlink()
    with pytest.raises(FileNotFoundError, match="pretrain.json"):
        pt.ensure_tinyclip(CFG.model, config=CFG, progress=False, evaluate=False)


def test_cli_prints_the_cached_run(capsys):
    pt.ensure_tinyclip(CFG.model, config=CFG, force=True, progress=False, evaluate=False)
    args = ["--model", CFG.model, "--corpus-images", "16", "--corpus-image-size", "64",
            "--train-size", "32", "--epochs", "1", "--batch-size", "8", "--warmup-steps", "1",
            "--lr", str(CFG.lr), "--no-eval", "--quiet"]
    assert pt.cli(args) == 0
    out = capsys.readouterr().out
    assert str(pt.tinyclip_dir(CFG)) in out and "epoch 1/1" in out and "cached" in out
    with pytest.raises(ConfigError, match="positives"):  # __main__ prints it as one line
        pt.cli(["--model", CFG.model, "--positives", "everything"])


# ---------------------------------------------------------------------------------------------
# zero-shot mAP
# ---------------------------------------------------------------------------------------------

def test_zero_shot_map_matches_sklearn_on_open_clip_scores(trained):
    from trm_lib.datasets import load
    from trm_lib.synth.pictograms import prompt_name

    out, _ = trained
    ds = load("synthscenes", split="test", image_size=64, n_train=1, n_test=24, progress=False)
    ours = pt.zero_shot_map(out, ds)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    model.eval()
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer(
            [f"a photo of a {prompt_name(c)}." for c in ds.class_names])), dim=-1)
        # FrozenCLIP resizes without centre crop; at the native size the two transforms agree
        images = torch.stack([preprocess(ds.load_image(i)) for i in range(len(ds))])
        # the feature cache stores embeddings as float16: round the reference the same way
        scores = (F.normalize(model.encode_image(images).half().float(), dim=-1) @ text.T).numpy()
    y = ds.labels == 1
    ref = np.mean([average_precision_score(y[:, c], scores[:, c])
                   for c in range(ds.num_classes) if y[:, c].any()])
    assert ours == pytest.approx(ref, abs=1e-6)
