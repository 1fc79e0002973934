"""The frozen-feature cache: contents, reuse, invalidation, resume, corruption, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from trm_lib.backbone.clip import FrozenCLIP, register_model_configs
from trm_lib.backbone.features import (
    FeatureCacheError,
    FeatureStore,
    compute_features,
    feature_key,
    store_dir,
)
from trm_lib.datasets import read_generic, write_generic
from trm_lib.tools.features import bench, cli

torch.set_num_threads(1)

TINY_RN = {"embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8,
                                           "head_width": 64},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2,
                        "layers": 1}}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    (folder / "feat-RN.json").write_text(json.dumps(TINY_RN))
    register_model_configs(folder)
    return FrozenCLIP("feat-RN", batch_size=4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    rel = []
    for i in range(7):
        pixels = rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)
        rel.append(f"img/{i}.jpg")
        Image.fromarray(pixels).save(root / rel[-1])
    labels = np.where(rng.random((7, 3)) < 0.5, 1, -1)
    write_generic(root, "train", rel, labels, ["cat", "dog", "diningtable"])
    return read_generic(root, "train")


@pytest.fixture()
def counted(backbone, monkeypatch):
    """Count backbone forward calls (the thing the cache exists to avoid)."""
    calls = []
    original = backbone.encode_images

    def encode(images, raw=False):
        calls.append(len(images))
        return original(images, raw=raw)

    monkeypatch.setattr(backbone, "encode_images", encode)
    return calls


def _reference(backbone, dataset, raw=False):
    images = torch.stack([backbone.transform()(dataset.load_image(i)) for i in range(len(dataset))])
    return backbone.encode_images(images, raw=raw)


def test_contents_dtype_and_batch(backbone, dataset, tmp_path):
    store = compute_features(backbone, dataset, batch_size=3, cache_root=tmp_path,
                             progress=False)
    L = backbone.grid[0] * backbone.grid[1]
    assert len(store) == 7 and store.grid == backbone.grid == (2, 2)
    assert (store.embed_dim, store.dense_dim) == (16, 256)
    assert isinstance(store.global_feats, np.memmap) and store.global_feats.dtype == np.float16
    assert store.dense.dtype == np.float16 and store.dense.shape == (7, L, 16)
    assert store.dense_raw is None
    with pytest.raises(ValueError, match="read-only"):
        store.dense[0, 0, 0] = 1.0
    assert store.path == store_dir(feature_key(backbone, dataset), tmp_path)
    assert store.path.parent == tmp_path / "features"

    ref = _reference(backbone, dataset)
    order = [5, 0, 3, 3, 6]
    batch = store.batch(order)
    assert set(batch) == {"global", "dense"}
    assert all(v.dtype == torch.float32 for v in batch.values())
    for k in batch:  # float16 storage: relative error ~1e-3
        expect = ref[k][order]
        torch.testing.assert_close(batch[k], expect, rtol=2e-3, atol=2e-3 * expect.abs().max())
    with pytest.raises(IndexError, match="out of range"):
        store.batch([7])


def test_raw_features(backbone, dataset, tmp_path):
    store = compute_features(backbone, dataset, raw=True, cache_root=tmp_path, progress=False)
    batch = store.batch(torch.tensor([1, 2]))
    assert batch["dense_raw"].shape == (2, 4, 256)
    ref = _reference(backbone, dataset, raw=True)["dense_raw"][[1, 2]]
    torch.testing.assert_close(batch["dense_raw"], ref, rtol=2e-3, atol=2e-3 * ref.abs().max())


def test_reuse_does_not_run_the_backbone(backbone, dataset, tmp_path, counted):
    first = compute_features(backbone, dataset, batch_size=4, cache_root=tmp_path,
                             progress=False)
    assert counted == [4, 3]
    second = compute_features(backbone, dataset, batch_size=4, cache_root=tmp_path,
                              progress=False)
    assert counted == [4, 3] and second.path == first.path
    np.testing.assert_array_equal(second.dense, first.dense)


def test_key_changes_invalidate(backbone, dataset, tmp_path):
    base = store_dir(feature_key(backbone, dataset), tmp_path)
    assert store_dir(feature_key(backbone, dataset, raw=True), tmp_path) != base
    assert store_dir(feature_key(backbone, dataset.subset(range(5))), tmp_path) != base
    assert store_dir(feature_key(backbone, dataset.subset(range(7), split="val")),
                     tmp_path) != base
    other = FrozenCLIP("feat-RN", seed=1)
    assert store_dir(feature_key(other, dataset), tmp_path) != base
    bigger = FrozenCLIP("feat-RN", image_size=96)
    key = feature_key(bigger, dataset)
    assert key["grid"] == [3, 3] and store_dir(key, tmp_path) != base
    # deterministic: the same inputs give the same folder in a new process / object
    assert store_dir(feature_key(FrozenCLIP("feat-RN"), dataset), tmp_path) == base


def test_resume_after_interruption(backbone, dataset, tmp_path, monkeypatch):
    original = backbone.encode_images
    calls, fail = [], {"at": 2}

    def flaky(images, raw=False):
        calls.append(len(images))
        if len(calls) == fail["at"]:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the second batch
        return original(images, raw=raw)

    monkeypatch.setattr(backbone, "encode_images", flaky)
    with pytest.raises(KeyboardInterrupt):
        compute_features(backbone, dataset, batch_size=3, cache_root=tmp_path, progress=False)
    folder = store_dir(feature_key(backbone, dataset), tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["completed"], manifest["complete"]) == (3, False)
    with pytest.raises(FeatureCacheError, match="incomplete store"):
        FeatureStore(folder)

    calls.clear()
    fail["at"] = None
    resumed = compute_features(backbone, dataset, batch_size=3, cache_root=tmp_path,
                               progress=False)
    assert calls == [3, 1]  # rows 3..6 only
    fresh = compute_features(backbone, dataset, batch_size=3, cache_root=tmp_path / "fresh",
                             progress=False)
    np.testing.assert_array_equal(resumed.dense, fresh.dense)
    np.testing.assert_array_equal(resumed.global_feats, fresh.global_feats)


def test_corrupt_or_foreign_manifest(backbone, dataset, tmp_path, capsys, counted):
    """Opened directly, a damaged store is refused naming the file; compute_features recomputes
    it with one warning line naming the folder."""
    store = compute_features(backbone, dataset, cache_root=tmp_path, progress=False)
    manifest_path = store.path / "manifest.json"
    good = manifest_path.read_text()

    def refused_then_rebuilt(pattern):
        with pytest.raises(FeatureCacheError, match=pattern):
            FeatureStore(store.path)
        counted.clear()
        capsys.readouterr()
        again = compute_features(backbone, dataset, cache_root=tmp_path, progress=False)
        err = capsys.readouterr().err.strip()
        assert err.startswith("warning: ") and "\n" not in err and str(store.path) in err
        assert sum(counted) == len(dataset)  # recomputed
        np.testing.assert_array_equal(again.dense, store.dense)

    manifest = json.loads(good)
    manifest["key"]["raw"] = True
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FeatureCacheError, match=r"manifest.json: manifest key does not match"):
        from trm_lib.backbone.store import read_manifest
        read_manifest(store.path, feature_key(backbone, dataset))
    compute_features(backbone, dataset, cache_root=tmp_path, progress=False)
    assert "manifest key does not match" in capsys.readouterr().err

    manifest_path.write_text("{not json")
    refused_then_rebuilt(r"manifest.json: not valid JSON")

    manifest_path.write_text(json.dumps({"format": 2}))
    refused_then_rebuilt(r"manifest.json: corrupt manifest, missing")

    good = manifest_path.read_text()
    (store.path / "dense.npy").unlink()
    refused_then_rebuilt(r"dense.npy: listed in .* but missing")

    good = manifest_path.read_text()
    manifest = json.loads(good)
    manifest["arrays"]["global"]["shape"] = [8, 16]
    manifest_path.write_text(json.dumps(manifest))
    refused_then_rebuilt(r"global.npy: shape \(7, 16\)")


def test_non_finite_features_are_refused(backbone, dataset, tmp_path, monkeypatch):
    original = backbone.encode_images

    def overflow(images, raw=False):
        out = original(images, raw=raw)
        out["dense"][0, 0, 0] = 1e6  # beyond float16
        return out

    monkeypatch.setattr(backbone, "encode_images", overflow)
    with pytest.raises(FeatureCacheError, match=r"dense.npy: non-finite dense features .*0.jpg"):
        compute_features(backbone, dataset, cache_root=tmp_path, progress=False)


def test_default_location_is_the_trm_cache(backbone, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TRM_CACHE", str(tmp_path / "cache"))
    store = compute_features(backbone, dataset, progress=False)
    assert store.path.parent == tmp_path / "cache" / "features"


def test_cli_and_bench(backbone, dataset, tmp_path, capsys):
    args = ["--dataset", "folder", "--root", str(dataset.root), "--split", "train",
            "--model", "feat-RN", "--pretrained", "none", "--device", "cpu",
            "--cache-root", str(tmp_path), "--quiet"]
    assert cli(args) == 0
    out = capsys.readouterr().out
    folder = store_dir(feature_key(backbone, dataset), tmp_path)
    assert str(folder) in out and "dense (7, 4, 16)" in out

    assert bench(["--dataset", "folder", "--root", str(dataset.root), "--n", "5",
                  "--model", "feat-RN", "--pretrained", "none", "--device", "cpu",
                  "--batch-size", "4", "--train-batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "5 images" in out and "speed-up per epoch" in out
