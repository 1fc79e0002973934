"""SynthScenes and the caption corpus: determinism, label fidelity, format round-trips, atomicity.

Worlds here are tiny (24 images per split at 64 px) so the whole file runs in seconds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trm_lib.config.run_config import ConfigError
from trm_lib.datasets import DatasetError, load, read_generic
from trm_lib.datasets.classes import VOC_CLASSES, voc2007_full_labels
from trm_lib.synth import files as synth_files
from trm_lib.synth import world as syn
from trm_lib.synth.pictograms import (
    DRAWERS,
    Rand,
    Sketch,
    generic_spec,
    get_spec,
    prompt_name,
    render_object,
)
from trm_lib.utils.io import read_json, sha256_file

TINY = syn.WorldConfig(image_size=64, n_train=24, n_test=24)


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    return syn.generate_world(tmp_path_factory.mktemp("w") / "world", TINY, workers=1,
                              progress=False)


# --- pictograms ----------------------------------------------------------------------------

def test_prompt_names_are_natural_and_cover_voc():
    assert prompt_name("diningtable") == "dining table"
    assert prompt_name("tvmonitor") == "tv monitor"
    assert prompt_name("pottedplant") == "potted plant"
    assert prompt_name("aeroplane") == "aeroplane"
    assert prompt_name("traffic_light") == "traffic light"
    assert set(VOC_CLASSES) <= set(DRAWERS)


def test_render_object_draws_inside_its_box_and_describes_it():
    rng = np.random.default_rng(0)
    for cls in VOC_CLASSES:
        im = Image.new("RGB", (100, 100), (128, 128, 128))
        info = render_object(im, cls, (20, 30, 80, 70), rng, angle=0.0, flip=False)
        x0, y0, x1, y1 = info["box"]
        assert 18 <= x0 < x1 <= 82 and 28 <= y0 < y1 <= 72, (cls, info["box"])
        arr = np.asarray(im).astype(int)
        changed = np.abs(arr - 128).sum(axis=2) > 0
        assert changed.sum() > 200, cls  # something substantial was drawn
        ys, xs = np.nonzero(changed)
        assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1, cls
        assert prompt_name(cls) in info["phrase"] and info["color"] in info["phrase"]


def test_generic_drawer_signatures_differ_by_index_and_aliases_resolve():
    sigs = set()
    for i in range(80):
        spec = generic_spec(f"class{i}", i)
        sk = Sketch(spec.aspect)
        spec.draw(sk, Rand(np.random.default_rng(0)), spec.rgb[0])
        sigs.add((tuple(round(v, 3) for v in sk.xy), spec.rgb))
    assert len(sigs) == 80
    assert get_spec("airplane").draw is DRAWERS["aeroplane"].draw
    assert get_spec("airplane").name == "airplane"
    assert get_spec("zebra", 3).rgb is not None  # unknown name -> generic signature


def test_rand_matches_uniform_ranges_and_is_deterministic():
    a, b = Rand(np.random.default_rng(5)), Rand(np.random.default_rng(5))
    xs = [a.integers(3, 7) for _ in range(2000)]
    assert xs == [b.integers(3, 7) for _ in range(2000)]
    assert set(xs) == {3, 4, 5, 6}
    assert abs(np.mean([a.poisson(3.0) for _ in range(4000)]) - 3.0) < 0.15
    assert abs(np.std([a.normal(0, 2) for _ in range(4000)]) - 2.0) < 0.15


# --- world ---------------------------------------------------------------------------------

def test_same_seed_is_byte_identical_for_any_worker_count(tiny_world, tmp_path):
    other = syn.generate_world(tmp_path / "again", TINY, workers=2, chunk=5, progress=False)
    a, b = tree_digest(tiny_world), tree_digest(other)
    assert len(a) == 2 * 24 + 6  # images + classes, 2 annotations, 2 sidecars, world.json
    assert a == b


def test_different_seed_gives_different_images(tiny_world, tmp_path):
    cfg = syn.WorldConfig(image_size=64, n_train=24, n_test=24, seed=1)
    other = tree_digest(syn.generate_world(tmp_path / "s1", cfg, workers=1, progress=False))
    mine = tree_digest(tiny_world)
    images = [k for k in mine if k.endswith(".jpg")]
    assert all(mine[k] != other[k] for k in images)
    assert mine["annotations/train.csv"] == other["annotations/train.csv"]  # same VOC rows


def test_labels_read_back_equal_the_voc_rows(tiny_world):
    for split, src in (("train", "trainval"), ("test", "test")):
        ds = read_generic(tiny_world, split)
        np.testing.assert_array_equal(ds.labels, voc2007_full_labels(src)[:24])
        assert ds.class_names == VOC_CLASSES
        assert [p.name for p in ds.image_paths] == [f"{i:05d}.jpg" for i in range(24)]
        with Image.open(ds.image_paths[0]) as im:
            assert im.format == "JPEG" and im.size == (64, 64)


def test_boxes_show_every_positive_and_no_negative(tiny_world):
    for split in ("train", "test"):
        ds = load("synthscenes", root=tiny_world, split=split)
        objects = syn.load_objects(ds)
        assert len(objects) == len(ds)
        for row, objs in zip(ds.labels, objects):
            positives = {VOC_CLASSES[c] for c in np.flatnonzero(row == 1)}
            drawn = {o["class"] for o in objs}
            assert drawn == positives
            for cls in positives:  # at least one instance visible enough
                assert max(o["visible"] for o in objs if o["class"] == cls) >= TINY.min_visible
            for o in objs:
                x0, y0, x1, y1 = o["box"]
                assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def test_crowded_rows_still_show_every_positive():
    """Rows with more positives than max_objects (COCO-like) keep one visible instance each."""
    cfg = syn.WorldConfig(image_size=64, max_objects=4)
    for i in range(3):
        _, objs = syn.render_world_image("train", i, list(range(20)), cfg)
        assert {o["class"] for o in objs} == set(VOC_CLASSES)
        assert all(o["visible"] >= cfg.min_visible for o in objs)


def test_world_statistics_are_varied(tmp_path):
    """Several scales (small objects too), occlusion and repeated instances all occur."""
    cfg = syn.WorldConfig(image_size=96, n_train=120, n_test=1)
    root = syn.generate_world(tmp_path / "w", cfg, workers=1, progress=False)
    meta = read_json(root / "world.json")["splits"]["train"]
    assert meta["small_instances"] > 5 and meta["occluded_instances"] > 5
    assert meta["instances_per_image"] > meta["positives_per_image"]


def test_manifest_records_config_and_checksums(tiny_world):
    meta = read_json(tiny_world / "world.json")
    assert meta["config"]["image_size"] == 64 and meta["version"] == syn.GENERATOR_VERSION
    assert meta["prompt_names"][VOC_CLASSES.index("diningtable")] == "dining table"
    for split in ("train", "test"):
        info = meta["splits"][split]
        assert info["images"] == 24
        assert info["annotations_sha256"] == sha256_file(tiny_world / info["annotations"])
        assert info["objects_sha256"] == sha256_file(tiny_world / info["objects"])


def test_custom_classes_and_labels_round_trip(tmp_path):
    classes = ["airplane", "zebra", "kite", "person", "umbrella"]
    rng = np.random.default_rng(0)
    Y = np.where(rng.random((10, 5)) < 0.4, 1, -1).astype(np.int8)
    Y[0] = -1  # an image without any positive is allowed (background only)
    root = syn.generate_world(tmp_path / "c", syn.WorldConfig(image_size=64),
                              labels={"train": Y, "val": Y[:4]}, classes=classes, workers=1,
                              progress=False)
    for split, want in (("train", Y), ("val", Y[:4])):
        ds = read_generic(root, split)
        np.testing.assert_array_equal(ds.labels, want)
        assert ds.class_names == classes
    objs = syn.load_objects(load("synthscenes", root=root, split="train"))
    assert objs[0] == []
    for row, o in zip(Y, objs):
        assert {x["class"] for x in o} == {classes[c] for c in np.flatnonzero(row == 1)}


def test_bad_labels_are_rejected_with_the_field(tmp_path):
    with pytest.raises(DatasetError, match=r"labels\['train'\] has shape"):
        syn.generate_world(tmp_path / "x", TINY, labels={"train": np.ones((3, 4))},
                           classes=["a", "b", "c"], progress=False)
    with pytest.raises(DatasetError, match="1, -1"):
        syn.generate_world(tmp_path / "x", TINY, labels={"train": np.zeros((3, 3))},
                           classes=["a", "b", "c"], progress=False)
    with pytest.raises(ConfigError, match="n_train=24 exceeds"):
        syn.generate_world(tmp_path / "x", TINY, labels={"train": np.ones((3, 3))},
                           classes=["a", "b", "c"], progress=False)
    assert not (tmp_path / "x").exists()


def test_interrupted_generation_leaves_no_world_and_resumes(tmp_path, monkeypatch):
    root = tmp_path / "w"
    saved = []
    real_save = synth_files._save_part

    def failing_save(path, result):
        if len(saved) == 3:
            raise KeyboardInterrupt("simulated interruption")
        saved.append(path)
        real_save(path, result)

    monkeypatch.setattr(synth_files, "_save_part", failing_save)
    with pytest.raises(KeyboardInterrupt):
        syn.generate_world(root, TINY, workers=1, chunk=4, progress=False)
    assert not root.exists()
    assert (tmp_path / ".w.partial").is_dir()

    rendered = []
    real_render = syn.render_world_image

    def counting_render(*args, **kwargs):
        rendered.append(args[:2])
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synth_files, "_save_part", real_save)
    monkeypatch.setattr(syn, "render_world_image", counting_render)
    syn.generate_world(root, TINY, workers=1, chunk=4, progress=False)
    assert len(rendered) == 48 - 3 * 4  # the three finished chunks were not redrawn
    assert not (tmp_path / ".w.partial").exists()
    monkeypatch.setattr(syn, "render_world_image", real_render)
    fresh = syn.generate_world(tmp_path / "fresh", TINY, workers=1, progress=False)
    assert tree_digest(root) == tree_digest(fresh)


def test_existing_folder_with_another_config_is_an_error(tiny_world):
    with pytest.raises(DatasetError, match="another config"):
        syn.generate_world(tiny_world, syn.WorldConfig(image_size=64, n_train=24, n_test=24,
                                                       seed=3), progress=False)


# --- loader registry and cache -------------------------------------------------------------

def test_loader_generates_the_cached_world_once_and_reuses_it(monkeypatch):
    ds = load("synthscenes", split="test", image_size=64, n_train=6, n_test=5, progress=False,
              workers=1)
    assert ds.name == "synthscenes" and len(ds) == 5 and ds.root.parent.name == "synthscenes"
    assert ds.root == syn.world_dir(syn.WorldConfig(image_size=64, n_train=6, n_test=5))
    assert Path(os.environ["TRM_CACHE"]) in ds.root.parents

    def boom(*a, **k):
        raise AssertionError("regenerated a cached world")

    monkeypatch.setattr(syn, "_run_chunks", boom)
    again = load("synthscenes", split="train", image_size=64, n_train=6, n_test=5)
    np.testing.assert_array_equal(again.labels, voc2007_full_labels("trainval")[:6])
    sub = again.subset([4, 1])
    objs = syn.load_objects(sub)
    assert objs == [syn.load_objects(again)[4], syn.load_objects(again)[1]]


def test_loader_rejects_unknown_options_and_bad_values(tiny_world):
    with pytest.raises(DatasetError, match="unknown option.*imagesize"):
        load("synthscenes", split="train", imagesize=64)
    with pytest.raises(ConfigError, match="WorldConfig.image_size"):
        load("synthscenes", split="train", image_size=8)
    with pytest.raises(DatasetError, match="image_size=64"):
        load("synthscenes", root=tiny_world, split="train", image_size=128)
    with pytest.raises(DatasetError, match="no split 'val'"):
        load("synthscenes", root=tiny_world, split="val")
    with pytest.raises(ConfigError, match="WorldConfig.min_visible"):
        syn.WorldConfig(min_visible=0.0)


def test_config_hash_tracks_every_field():
    base = syn.config_hash(syn.WorldConfig())
    assert base == syn.config_hash(syn.WorldConfig())
    assert base != syn.config_hash(syn.WorldConfig(seed=1))
    assert base != syn.config_hash(syn.WorldConfig(clutter=0.5))


# --- caption corpus ------------------------------------------------------------------------

def test_caption_corpus_is_deterministic_and_names_its_classes(tmp_path):
    cfg = syn.CaptionConfig(n_images=30, image_size=64, two_object_prob=0.5)
    a = syn.ensure_captions(cfg, tmp_path / "a", progress=False, workers=1)
    b = syn.ensure_captions(cfg, tmp_path / "b", progress=False, workers=2)
    assert tree_digest(a) == tree_digest(b)
    df = syn.load_captions(a)
    assert list(df.columns) == ["image", "caption", "classes", "path"] and len(df) == 30
    assert df.attrs["classes"] == VOC_CLASSES
    assert any(len(c) == 2 for c in df["classes"])
    for i, row in df.iterrows():
        for cls in row["classes"]:
            assert prompt_name(cls) in row["caption"]
        assert row["caption"].endswith(".")
        _, caption, picks = syn.render_caption_sample(i, cfg)
        assert caption == row["caption"] and [VOC_CLASSES[c] for c in picks] == row["classes"]
        assert Path(row["path"]).is_file()
    other = syn.ensure_captions(syn.CaptionConfig(n_images=30, image_size=64, seed=2),
                                tmp_path / "c", progress=False, workers=1)
    assert tree_digest(other)["images/00000.jpg"] != tree_digest(a)["images/00000.jpg"]


def test_caption_corpus_default_location_is_cached():
    cfg = syn.CaptionConfig(n_images=4, image_size=64)
    root = syn.ensure_captions(cfg, progress=False, workers=1)
    assert root.parent == Path(os.environ["TRM_CACHE"]) / "captions"
    assert syn.ensure_captions(cfg, progress=False) == root


def test_caption_text_uses_prompt_names_for_compounds():
    cfg = syn.CaptionConfig(classes=("diningtable", "tvmonitor"), two_object_prob=1.0,
                            image_size=64)
    _, caption, picks = syn.render_caption_sample(0, cfg)
    assert sorted(picks) == [0, 1]
    assert "dining table" in caption and "tv monitor" in caption and " and " in caption


def test_caption_backgrounds_clutter_and_distractors_are_options():
    plain = syn.CaptionConfig(image_size=64, clutter=0.0, distractors=0.0)
    busy = syn.CaptionConfig(image_size=64, clutter=1.0, distractors=3.0)
    a = [syn.render_caption_sample(i, plain) for i in range(4)]
    b = [syn.render_caption_sample(i, busy) for i in range(4)]
    again = [syn.render_caption_sample(i, busy) for i in range(4)]
    assert all(x[0].tobytes() == y[0].tobytes() for x, y in zip(b, again))
    assert all(x[0].tobytes() != y[0].tobytes() for x, y in zip(a, b))
    assert syn.config_hash(plain) != syn.config_hash(busy)


@pytest.mark.parametrize("field,value", [("clutter", -0.1), ("distractors", 21.0),
                                         ("min_size", 0.95)])
def test_caption_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"CaptionConfig.{field}"):
        syn.CaptionConfig(**{field: value})


# --- CLI and bench -------------------------------------------------------------------------

def test_cli_prints_the_folder_and_counts(tmp_path, capsys):
    rc = syn.cli(["--root", str(tmp_path / "w"), "--image-size", "64", "--n-train", "3",
                  "--n-test", "2", "--quiet", "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and str(tmp_path / "w") in out and "train: 3 images" in out
    assert "test: 2 images" in out
    with pytest.raises(ConfigError, match="image_size"):  # __main__ prints it as one line
        syn.cli(["--image-size", "7", "--quiet"])


def test_bench_runs():
    assert syn.bench(["--size", "64", "--n", "3"]) == 0


# --- cache-key guard -----------------------------------------------------------------------

# Pixel digest of a few renders per GENERATOR_VERSION. If this fails after you changed drawing or
# layout code, bump GENERATOR_VERSION (cached worlds, corpora and TinyCLIP weights are keyed on
# it) and add the new digest. If only Pillow/numpy changed, their rasterisation or streams moved:
# record the digest for this version and note it in the changelog.
GOLDEN = {"2": "ff8a6855ec77a829"}


def test_render_digest_matches_generator_version():
    h = hashlib.sha256()
    cfg = syn.WorldConfig(image_size=64)
    for i, pos in enumerate([[14], [6, 11], [4, 8, 10, 14]]):
        im, _ = syn.render_world_image("train", i, pos, cfg)
        h.update(im.tobytes())
    for i in range(3):
        plain = syn.CaptionConfig(image_size=64, clutter=0.0, distractors=0.0, min_size=0.55)
        im, caption, _ = syn.render_caption_sample(i, plain)
        h.update(im.tobytes())
        h.update(caption.encode())
    assert GOLDEN.get(syn.GENERATOR_VERSION) == h.hexdigest()[:16], (
        "rendering changed without a GENERATOR_VERSION bump (see the comment above GOLDEN)")
