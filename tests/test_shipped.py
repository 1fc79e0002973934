"""The shipped TinyCLIP weights: the recipe's smoke run exports a compact file whose rebuilt
model gives bit-identical text features (fixed prompts and CoOp's learnable-context path) and
image features; a damaged file is one error line; feature keys follow the file's checksum; the
package's own file has its recorded checksum, covers every prompt of the embedded world, is the
default weights with no pre-training, and (slow) reproduces the zero-shot mAP recorded in
docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trm_lib.tinyclip.pretrain as pt
import trm_lib.tinyclip.shipped as sh
from trm_lib.backbone.clip import FrozenCLIP, register_model_configs
from trm_lib.tinyclip.config import PretrainConfig, config_hash, default_config
from trm_lib.utils.errors import UserError
from trm_lib.utils.io import sha256_file

torch.set_num_threads(1)

#: the shipped file's SHA-256 (also in trm_lib/tinyclip/weights/SHA256SUMS): a new file is a
#: deliberate change of every number in the report
SHIPPED_SHA256 = "c485659086e3a78165ebccc8dfe167245f1e088d861327d46dc5eff100629093"
ROOT = Path(__file__).resolve().parents[1]

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}}
CFG = PretrainConfig(model="test-shipped-RN", corpus_images=16, corpus_image_size=64,
                     train_size=32, epochs=1, batch_size=8, warmup_steps=1, lr=1e-3)
CLI_ARGS = ["--model", CFG.model, "--corpus-images", "16", "--corpus-image-size", "64",
            "--train-size", "32", "--epochs", "1", "--batch-size", "8", "--warmup-steps", "1",
            "--lr", str(CFG.lr), "--no-eval", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shipped_configs")
    (folder / f"{CFG.model}.json").write_text(json.dumps(TINY))
    register_model_configs(folder)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The recipe run tiny through the CLI with ``--export``: (recipe folder, file, rebuilt)."""
    out = tmp_path_factory.mktemp("export") / f"{CFG.model}.safetensors"
    assert pt.cli([*CLI_ARGS, "--export", str(out)]) == 0
    rebuilt = sh.rebuild(out, tmp_path_factory.mktemp("rebuilt") / "folder")
    return pt.tinyclip_dir(CFG), out, rebuilt


def _texts() -> list[str]:
    return sh.corpus_texts(CFG)


def test_export_keeps_every_tensor_and_only_the_used_rows(exported):
    recipe, file, rebuilt = exported
    full = load_file(str(recipe / "open_clip_model.safetensors"))
    compact = load_file(str(file))
    again = load_file(str(rebuilt / "open_clip_model.safetensors"))
    assert set(again) == set(full)
    for k in full:
        if k != sh.EMBEDDING:
            assert torch.equal(full[k], compact[k]) and torch.equal(full[k], again[k]), k
    ids = compact[sh.IDS]
    tokenizer = FrozenCLIP(f"local-dir:{recipe}").tokenizer
    assert torch.equal(ids, torch.unique(tokenizer(_texts())))  # exactly the used ids
    assert torch.equal(again[sh.EMBEDDING][ids], full[sh.EMBEDDING][ids])
    unused = torch.ones(full[sh.EMBEDDING].shape[0], dtype=torch.bool)
    unused[ids] = False
    assert not again[sh.EMBEDDING][unused].any()
    assert file.stat().st_size < 0.5 * (recipe / "open_clip_model.safetensors").stat().st_size
    assert sh.read_checksums(file.parent)[file.name] == sha256_file(file)


def test_rebuilt_model_is_bit_identical_on_corpus_texts_and_images(exported):
    recipe, _, rebuilt = exported
    a, b = FrozenCLIP(f"local-dir:{recipe}"), FrozenCLIP(f"local-dir:{rebuilt}")
    texts = _texts()
    with torch.no_grad():
        ta = a.model.encode_text(a.tokenize(texts))
        tb = b.model.encode_text(b.tokenize(texts))
        images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        ia, ib = a.encode_images(images), b.encode_images(images)
    assert torch.equal(ta, tb)
    assert ia.keys() == ib.keys() and all(torch.equal(ia[k], ib[k]) for k in ia)
    names = ["car", "dog", "dining table"]
    assert torch.equal(a.encode_text(names), b.encode_text(names))


@pytest.mark.parametrize("init", [None, "a photo of a"])
def test_learnable_context_path_is_bit_identical(exported, init):
    """CoOp / DualCoOp splice learnable vectors into the text tower's embeddings: forward and
    the context's gradient agree exactly between the recipe's and the rebuilt model."""
    from trm_lib.core.prompts import PromptEncoder

    recipe, _, rebuilt = exported
    outs = []
    for folder in (recipe, rebuilt):
        torch.manual_seed(0)
        enc = PromptEncoder(FrozenCLIP(f"local-dir:{folder}"), ["car", "dog"], n_ctx=4,
                            init=init)
        feats = enc()
        feats.square().sum().backward()
        outs.append((feats.detach(), enc.ctx.grad.clone()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert outs[0][1].abs().sum() > 0


def test_damaged_file_is_one_error_line(exported, tmp_path):
    _, file, _ = exported
    bad = tmp_path / file.name
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / sh.CHECKSUMS).write_text((file.parent / sh.CHECKSUMS).read_text())
    with pytest.raises(UserError, match="damaged") as err:
        sh.rebuild(bad, tmp_path / "out")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    (tmp_path / sh.CHECKSUMS).unlink()
    with pytest.raises(UserError, match="no checksum"):
        sh.verify(bad)


def test_feature_keys_follow_the_shipped_checksum(exported, tmp_path):
    recipe, file, rebuilt = exported
    key = FrozenCLIP(f"local-dir:{rebuilt}").identity()["weights_sha256"]
    twice = sh.rebuild(file, tmp_path / "twice")
    assert FrozenCLIP(f"local-dir:{twice}").identity()["weights_sha256"] == key
    # a different shipped file (one more kept row) makes a different key
    other = tmp_path / "other" / file.name
    sh.export(recipe, other, [*_texts(), "zebra"])
    assert sh.verify(other) != sh.verify(file)
    moved = sh.rebuild(other, tmp_path / "other-folder")
    assert FrozenCLIP(f"local-dir:{moved}").identity()["weights_sha256"] != key
    assert json.loads((moved / "open_clip_config.json").read_text())["shipped_sha256"] == \
        sh.verify(other)


# ---------------------------------------------------------------------------------------------
# the package's own file
# ---------------------------------------------------------------------------------------------

def test_the_shipped_file_is_the_recorded_one():
    file = sh.shipped_file("TinyCLIP-RN")
    assert file.stat().st_size <= 10 * 1024 * 1024
    assert sha256_file(file) == SHIPPED_SHA256
    assert sh.read_checksums()[file.name] == SHIPPED_SHA256
    manifest = sh.shipped_manifest("TinyCLIP-RN")
    # the documented recipe is what produced it: `python -m trm_lib pretrain` rebuilds it
    assert manifest["config_hash"] == config_hash(default_config("TinyCLIP-RN"))


def test_shipped_file_covers_every_prompt_of_the_embedded_world():
    from trm_lib.datasets.classes import VOC_CLASSES  # the embedded world's classes

    state, _ = sh._read(sh.shipped_file("TinyCLIP-RN"))
    kept = set(state[sh.IDS].tolist())
    tokenizer = FrozenCLIP("TinyCLIP-RN").tokenizer
    used = set(sh.token_ids(tokenizer, sh.prompt_texts(VOC_CLASSES)).tolist())
    assert used <= kept


def test_words_outside_the_kept_rows_are_warned_about_not_silently_zero():
    import warnings

    from trm_lib.datasets.classes import VOC_CLASSES

    backbone = FrozenCLIP("TinyCLIP-RN", "tinyclip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the embedded world's prompts: no warning
        backbone.encode_text(["potted plant", "tv monitor", *VOC_CLASSES[:3]])
    with pytest.warns(UserWarning, match=r"1 text\(s\) hold words .*zebra"):
        backbone.encode_text(["dog", "zebra"])


def test_default_tinyclip_is_the_shipped_file_without_pretraining(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pre-trained although weights ship with the package")

    monkeypatch.setattr(pt, "pretrain", refuse)
    folder = pt.ensure_tinyclip("TinyCLIP-RN", progress=False)
    assert folder == sh.shipped_dir("TinyCLIP-RN", SHIPPED_SHA256)
    backbone = FrozenCLIP("TinyCLIP-RN", "tinyclip")
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    assert cfg["shipped_sha256"] == SHIPPED_SHA256
    assert backbone.identity()["weights_sha256"] is not None


def _recorded_zero_shot() -> float:
    text = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    found = re.search(r"shipped TinyCLIP-RN zero-shot test mAP: ([0-9.]+)", text)
    assert found, "docs/BENCHMARKS.md records no shipped zero-shot mAP"
    return float(found.group(1))


@pytest.mark.slow
def test_shipped_weights_cover_the_corpus_and_give_the_recorded_zero_shot_map():
    """Every caption of the recipe's corpus is built from kept rows, and the embedded world's
    zero-shot test mAP with the shipped weights is the figure in docs/BENCHMARKS.md (to 0.05
    points) on this machine."""
    cfg = default_config("TinyCLIP-RN")
    state, _ = sh._read(sh.shipped_file(cfg.model))
    tokenizer = FrozenCLIP(cfg.model).tokenizer
    assert set(sh.token_ids(tokenizer, sh.corpus_texts(cfg)).tolist()) <= \
        set(state[sh.IDS].tolist())
    value = pt.zero_shot_map(pt.ensure_tinyclip(cfg.model, progress=False))
    assert 100 * value == pytest.approx(_recorded_zero_shot(), abs=0.05)
