"""Real-dataset loaders on tiny fixtures written in the exact official formats.

The expected labels are the hand-written truths of ``tests/fixture_writers.py``; the peer
label-file round trip uses the real VOC2007 files shipped in ``trm_lib/data/voc2007_labels``.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import fixture_writers as fx
import numpy as np
import pytest

from trm_lib.datasets import DatasetError, MultiLabelDataset, labels, load
from trm_lib.datasets.classes import VOC2007_LABELS_DIR, VOC_CLASSES, voc2007_full_labels


def rows(ds: MultiLabelDataset) -> list[set[str]]:
    """Positives of every row as sets of class names (order-independent, readable diffs)."""
    return [{ds.class_names[c] for c in np.flatnonzero(r == 1)} for r in ds.labels]


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("real")
    return {"voc": fx.write_voc(base / "voc"), "coco": fx.write_coco(base / "coco"),
            "nus": fx.write_nuswide(base / "nus"), "vg": fx.write_vg(base / "vg"),
            "cub": fx.write_cub(base / "cub")}


# ---------------------------------------------------------------------------------------------
# Common behaviour
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["voc2007", "coco2014", "nuswide", "vg200", "cub"])
def test_root_none_says_a_root_is_needed_and_shows_the_layout(name):
    with pytest.raises(DatasetError) as err:
        load(name, root=None)
    msg = str(err.value)
    assert "needs a root" in msg and "expected layout" in msg


@pytest.mark.parametrize("name, key, options", [
    ("voc2007", "voc", {}), ("coco2014", "coco", {}), ("nuswide", "nus", {}),
    ("vg200", "vg", {"class_names": "placeholder"}), ("cub", "cub", {}),
])
def test_loaders_never_write_into_the_dataset_folder(data, name, key, options):
    root = data[key].parent if key == "cub" else data[key]
    before = tree_state(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for split in ("train", "test"):
            ds = load(name, root=data[key], split=split, **options)
            assert ds.labels.dtype == np.int8 and set(np.unique(ds.labels)) <= {1, -1}
            assert all(p.is_file() for p in ds.image_paths)
            ds.load_image(0)
    assert tree_state(root) == before


@pytest.mark.parametrize("name, key, options", [
    ("voc2007", "voc", {}), ("coco2014", "coco", {}), ("nuswide", "nus", {}),
    ("vg200", "vg", {"class_names": "placeholder"}), ("cub", "cub", {}),
])
def test_unknown_split_is_refused(data, name, key, options):
    with pytest.raises(DatasetError, match="split must be one of"):
        load(name, root=data[key], split="validation", **options)


# ---------------------------------------------------------------------------------------------
# VOC 2007
# ---------------------------------------------------------------------------------------------

def test_voc_labels_skip_difficult_objects(data):
    ds = load("voc2007", root=data["voc"], split="train")
    assert ds.class_names == VOC_CLASSES
    assert [p.stem for p in ds.image_paths] == fx.VOC_SPLITS["trainval"]
    assert rows(ds) == [fx.VOC_POSITIVES[i] for i in fx.VOC_SPLITS["trainval"]]
    assert ds.meta["difficult_only"] == fx.VOC_DIFFICULT_ONLY_TRAINVAL
    assert ds.meta["official_split"] == "trainval" and ds.split == "train"
    test = load("voc2007", root=data["voc"], split="test")
    assert rows(test) == [fx.VOC_POSITIVES[i] for i in fx.VOC_SPLITS["test"]]


def test_voc_accepts_devkit_voc2007_and_parent_roots(data):
    ref = load("voc2007", root=data["voc"], split="trainval")
    for root in (data["voc"] / "VOC2007", data["voc"].parent):
        ds = load("voc2007", root=root, split="trainval")
        assert ds.image_paths == ref.image_paths and np.array_equal(ds.labels, ref.labels)
        assert ds.fingerprint() == ref.fingerprint()


def test_voc_broken_xml_names_the_file(tmp_path):
    devkit = fx.write_voc(tmp_path)
    bad = devkit / "VOC2007" / "Annotations" / "000007.xml"
    bad.write_text("<annotation><object><name>car</name>")
    with pytest.raises(DatasetError, match="000007.xml: not valid XML"):
        load("voc2007", root=devkit)


def test_voc_unknown_class_and_missing_files_name_the_path(tmp_path):
    devkit = fx.write_voc(tmp_path)
    xml = devkit / "VOC2007" / "Annotations" / "000005.xml"
    xml.write_text(xml.read_text().replace("<name>chair</name>", "<name>unicorn</name>", 1))
    with pytest.raises(DatasetError, match="000005.xml.*'unicorn' is not a VOC class"):
        load("voc2007", root=devkit)
    (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(DatasetError) as err:
        load("voc2007", root=devkit, split="test")
    assert "ImageSets/Main/test.txt: file not found" in str(err.value)
    assert "JPEGImages/<id>.jpg" in str(err.value)  # the layout is shown


def test_voc_missing_image_policies(tmp_path):
    devkit = fx.write_voc(tmp_path)
    (devkit / "VOC2007" / "JPEGImages" / "000009.jpg").unlink()
    with pytest.raises(DatasetError, match="000009.jpg: image file not found .1 of 4"):
        load("voc2007", root=devkit)
    with pytest.warns(UserWarning, match="1 of 4 listed images are missing"):
        ds = load("voc2007", root=devkit, missing="skip")
    assert ds.meta["missing"] == ["JPEGImages/000009.jpg"]
    assert [p.stem for p in ds.image_paths] == ["000005", "000007", "000012"]
    assert rows(ds) == [fx.VOC_POSITIVES[i] for i in ("000005", "000007", "000012")]
    assert len(load("voc2007", root=devkit, missing="ignore")) == 4
    with pytest.raises(DatasetError, match="option missing='maybe'"):
        load("voc2007", root=devkit, missing="maybe")


def test_voc_all_images_missing_is_a_layout_error(tmp_path):
    devkit = fx.write_voc(tmp_path)
    shutil.rmtree(devkit / "VOC2007" / "JPEGImages")
    with pytest.raises(DatasetError, match="neither is any other of the 4 images"):
        load("voc2007", root=devkit, missing="skip")


@pytest.mark.skipif(not os.environ.get("TRM_VOC2007_ROOT"),
                    reason="set TRM_VOC2007_ROOT to a real VOCdevkit to run")
def test_real_voc2007_matches_the_shipped_label_matrices():
    root = os.environ["TRM_VOC2007_ROOT"]
    for split in ("trainval", "test"):
        ds = load("voc2007", root=root, split=split)
        assert np.array_equal(ds.labels, voc2007_full_labels(split))


# ---------------------------------------------------------------------------------------------
# COCO 2014
# ---------------------------------------------------------------------------------------------

def coco_ids(ds: MultiLabelDataset) -> list[int]:
    return [int(p.stem.rsplit("_", 1)[1]) for p in ds.image_paths]


def test_coco_maps_noncontiguous_ids_in_id_order(data):
    ds = load("coco2014", root=data["coco"], split="train")
    assert ds.class_names == fx.COCO_CLASS_ORDER
    assert ds.meta["category_ids"] == [1, 3, 18, 90]
    assert coco_ids(ds) == fx.COCO_ALL_ORDER == ds.meta["image_ids"]
    assert rows(ds) == [fx.COCO_POSITIVES[i] for i in fx.COCO_ALL_ORDER]
    test = load("coco2014", root=data["coco"], split="test")
    assert ds.meta["official_split"] == "train2014" and test.meta["official_split"] == "val2014"
    assert rows(test) == [fx.COCO_POSITIVES[i] for i in fx.COCO_IMAGES["val2014"]]
    assert coco_ids(load("coco2014", root=data["coco"], split="val")) == coco_ids(test)


def test_coco_annotated_images_follow_first_annotation_order(data):
    ds = load("coco2014", root=data["coco"], images="annotated")
    assert coco_ids(ds) == fx.COCO_ANNOTATED_ORDER
    assert rows(ds) == [fx.COCO_POSITIVES[i] for i in fx.COCO_ANNOTATED_ORDER]


def test_coco_crowd_option(data):
    incl = load("coco2014", root=data["coco"])
    excl = load("coco2014", root=data["coco"], crowd="exclude")
    assert excl.meta["crowd_annotations_dropped"] == 1
    expected = [fx.COCO_POSITIVES[i] - fx.COCO_CROWD_ONLY.get(i, set())
                for i in fx.COCO_ALL_ORDER]
    assert rows(excl) == expected and rows(incl) != expected
    with pytest.raises(DatasetError, match="option crowd='no'"):
        load("coco2014", root=data["coco"], crowd="no")


def test_coco_bad_json_and_dangling_ids_name_the_file(tmp_path):
    root = fx.write_coco(tmp_path)
    ann = root / "annotations" / "instances_train2014.json"
    text = ann.read_text()
    ann.write_text(text.replace('"category_id": 90', '"category_id": 91'))
    with pytest.raises(DatasetError, match="instances_train2014.json: annotation 1006 has "
                                           "category_id 91"):
        load("coco2014", root=root)
    ann.write_text(text[:-10])
    with pytest.raises(DatasetError, match="instances_train2014.json: not valid JSON"):
        load("coco2014", root=root)
    ann.unlink()
    with pytest.raises(DatasetError, match="annotations/instances_train2014.json: file not"):
        load("coco2014", root=root)


def test_coco_labels_without_images_with_missing_ignore(tmp_path):
    root = fx.write_coco(tmp_path)
    shutil.rmtree(root / "train2014")
    with pytest.raises(DatasetError, match="neither is any other of the 4 images"):
        load("coco2014", root=root)
    ds = load("coco2014", root=root, missing="ignore")  # label statistics need no pixels
    assert rows(ds) == [fx.COCO_POSITIVES[i] for i in fx.COCO_ALL_ORDER]


# ---------------------------------------------------------------------------------------------
# NUS-WIDE
# ---------------------------------------------------------------------------------------------

def nus_expected(split: str, drop_unlabeled: bool) -> tuple[list[str], list[set[str]]]:
    out = [(n.replace("\\", "/"), pos) for n, pos in fx.NUS_IMAGES[split]
           if n.replace("\\", "/") not in fx.NUS_MISSING and (pos or not drop_unlabeled)]
    return [n for n, _ in out], [pos for _, pos in out]


def test_nuswide_reads_windows_lists_and_skips_missing_images(data):
    with pytest.warns(UserWarning, match="1 of 5 listed images are missing"):
        ds = load("nuswide", root=data["nus"], split="train")
    names, positives = nus_expected("Train", drop_unlabeled=True)
    assert ds.class_names == fx.NUS_CONCEPTS
    assert [p.relative_to(data["nus"] / "Flickr").as_posix() for p in ds.image_paths] == names
    assert rows(ds) == positives
    assert ds.meta["missing"] == [f"Flickr/{m}" for m in sorted(fx.NUS_MISSING)]
    assert ds.meta["unlabeled_dropped"] == 1 and ds.meta["listed"] == 5


def test_nuswide_keep_unlabeled_and_flat_layout(tmp_path):
    root = fx.write_nuswide(tmp_path, official_layout=False)
    with pytest.warns(UserWarning):
        ds = load("nuswide", root=root, split="train", drop_unlabeled=False)
    names, positives = nus_expected("Train", drop_unlabeled=False)
    assert rows(ds) == positives and len(ds) == len(names) == 4
    assert ds.meta["unlabeled_dropped"] == 0
    test = load("nuswide", root=root, split="test")  # nothing missing: no warning
    assert rows(test) == nus_expected("Test", drop_unlabeled=True)[1]
    with pytest.raises(DatasetError, match="1 of 5 images of nuswide/train are missing"):
        load("nuswide", root=root, split="train", missing="error")


def test_nuswide_label_file_errors_name_the_file(tmp_path):
    root = fx.write_nuswide(tmp_path)
    labels = root / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Train.txt"
    labels.write_text("0\n1\n0\n")
    with pytest.raises(DatasetError, match="Labels_sky_Train.txt: 3 lines, but the image list "
                                           "has 5"):
        load("nuswide", root=root)
    labels.write_text("0\n1\n2\n0\n1\n")
    with pytest.raises(DatasetError, match="Labels_sky_Train.txt:3: '2' is not 0 or 1"):
        load("nuswide", root=root)
    labels.write_text("0\n1\nyes\n0\n1\n")
    with pytest.raises(DatasetError, match="Labels_sky_Train.txt:3: 'yes' is not 0 or 1"):
        load("nuswide", root=root)
    labels.write_text("0\n1\n\n0\n1\n")  # a blank line inside would shift every later row
    with pytest.raises(DatasetError, match="Labels_sky_Train.txt:3: '' is not 0 or 1"):
        load("nuswide", root=root)
    labels.unlink()
    with pytest.raises(DatasetError, match="Labels_sky_Train.txt: file not found"):
        load("nuswide", root=root)


# ---------------------------------------------------------------------------------------------
# VG-200
# ---------------------------------------------------------------------------------------------

def test_vg200_labels_folders_and_placeholder_names(data):
    ds = load("vg200", root=data["vg"], split="train", class_names="placeholder")
    assert ds.num_classes == 200 and ds.class_names[7] == "vg200_007"
    assert [p.name for p in ds.image_paths] == fx.VG_LISTS["train"]
    assert [p.parent.name for p in ds.image_paths] == [fx.VG_FOLDERS[n]
                                                       for n in fx.VG_LISTS["train"]]
    expected = -np.ones((3, 200), dtype=np.int8)
    expected[0, [0, 5, 199]] = 1
    expected[1, 3] = 1  # 3.jpg has an empty list: an all-negative row, kept as SST does
    assert np.array_equal(ds.labels, expected)
    assert ds.meta["class_names_source"] == "placeholder"


def test_vg200_class_names_are_required_and_checked(data, tmp_path):
    with pytest.raises(DatasetError, match="needs class_names"):
        load("vg200", root=data["vg"])
    names = [f"object {i}" for i in range(200)]
    path = tmp_path / "vg200_names.txt"
    path.write_text("\n".join(names) + "\n")
    ds = load("vg200", root=data["vg"], split="test", class_names=str(path))
    assert ds.class_names == names and rows(ds) == [{"object 5", "object 7"}]
    assert load("vg200", root=data["vg"], class_names=names).class_names == names
    path.write_text("\n".join(names[:150]) + "\n")
    with pytest.raises(DatasetError, match="vg200_names.txt: vg200 class_names must be 200"):
        load("vg200", root=data["vg"], class_names=path)


def test_vg200_annotations_elsewhere_and_bad_indices(tmp_path):
    root = fx.write_vg(tmp_path / "vg")
    ann = tmp_path / "vg_annotations"
    ann.mkdir()
    for f in ("train_list_500.txt", "test_list_500.txt", "vg_category_200_labels_index.json"):
        shutil.move(root / f, ann / f)
    with pytest.raises(DatasetError, match="train_list_500.txt: file not found"):
        load("vg200", root=root, class_names="placeholder")
    ds = load("vg200", root=root, class_names="placeholder", annotations=ann)
    assert len(ds) == 3
    (ann / "vg_category_200_labels_index.json").write_text('{"1.jpg": [0, 420], "2.jpg": [], '
                                                           '"3.jpg": [], "2417967.jpg": []}')
    with pytest.raises(DatasetError, match="entry '1.jpg' must be a list of integers in 0..199"):
        load("vg200", root=root, class_names="placeholder", annotations=ann)
    (ann / "vg_category_200_labels_index.json").write_text('{"1.jpg": [0]}')
    with pytest.raises(DatasetError, match="no entry for image '2417967.jpg'"):
        load("vg200", root=root, class_names="placeholder", annotations=ann)


# ---------------------------------------------------------------------------------------------
# CUB-200-2011
# ---------------------------------------------------------------------------------------------

CUB_TRAIN_ROWS = [[0, 1, 1, 0, 1], [1, 1, 0, 0, 0], [1, 0, 0, 1, 0]]  # images 2, 3, 5
CUB_TEST_ROWS = [[1, 0, 0, 1, 0], [0, 0, 1, 1, 1]]  # images 1, 4


def as_pm(bits: list[list[int]]) -> np.ndarray:
    return np.where(np.asarray(bits) == 1, 1, -1).astype(np.int8)


def test_cub_attributes_as_labels_with_malformed_lines(data):
    ds = load("cub", root=data["cub"], split="train")
    assert ds.class_names == fx.CUB_ATTRIBUTES
    assert ds.meta["image_ids"] == [2, 3, 5]
    assert [p.relative_to(data["cub"] / "images").as_posix() for p in ds.image_paths] == [
        fx.CUB_IMAGES[i] for i in (2, 3, 5)]
    assert np.array_equal(ds.labels, as_pm(CUB_TRAIN_ROWS))
    assert ds.meta["malformed_lines"] == [8, 24]  # (2, 3) and (5, 4), with 7 and 6 fields
    test = load("cub", root=data["cub"].parent, split="test", names="readable")
    assert test.class_names == fx.CUB_READABLE and test.meta["image_ids"] == [1, 4]
    assert np.array_equal(test.labels, as_pm(CUB_TEST_ROWS))


def test_cub_min_certainty(data):
    ds = load("cub", root=data["cub"], min_certainty=3)
    assert np.array_equal(ds.labels, as_pm([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]))
    with pytest.raises(DatasetError, match="min_certainty must be 1, 2, 3 or 4"):
        load("cub", root=data["cub"], min_certainty=5)


@pytest.mark.parametrize("where", ["inside", "attributes_dir"])
def test_cub_attribute_names_file_locations(tmp_path, where):
    base = fx.write_cub(tmp_path, attributes_at=where)
    assert load("cub", root=base).class_names == fx.CUB_ATTRIBUTES


def test_cub_errors_name_file_and_line(tmp_path):
    base = fx.write_cub(tmp_path)
    labels = base / "attributes" / "image_attribute_labels.txt"
    lines = labels.read_text().splitlines(keepends=True)
    labels.write_text("".join(lines[:3] + ["2 x 1 4 0.5\n"] + lines[4:]))
    with pytest.raises(DatasetError, match="image_attribute_labels.txt:4: the first four fields"):
        load("cub", root=base)
    labels.write_text("".join(lines[:10] + lines[11:]))  # drops (image 3, attribute 1)
    with pytest.raises(DatasetError, match="no line for image 3, attribute 1"):
        load("cub", root=base)
    (tmp_path / "attributes.txt").unlink()
    with pytest.raises(DatasetError) as err:
        load("cub", root=base)
    assert str(tmp_path / "attributes.txt") in str(err.value) and "also looked for" in str(
        err.value)


# ---------------------------------------------------------------------------------------------
# Peer partial-label files: import, export, byte-identical round trip
# ---------------------------------------------------------------------------------------------

def voc_trainval_stand_in(root: Path) -> MultiLabelDataset:
    """The real VOC2007 trainval label matrix on placeholder paths (no images needed)."""
    Y = voc2007_full_labels("trainval")
    paths = [root / "JPEGImages" / f"{i:06d}.jpg" for i in range(len(Y))]
    return MultiLabelDataset("voc2007", "train", root, paths, Y, list(VOC_CLASSES))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_peer_voc_files_import_export_byte_identical(tmp_path, p):
    ds = voc_trainval_stand_in(tmp_path / "voc")
    src = VOC2007_LABELS_DIR / "partial-labels" / f"train_proportion_{p:g}.txt"
    Y = labels.observed_labels(ds, "proportion", p, source="peer", path=src)
    assert Y.shape == (5011, 20) and set(np.unique(Y)) == {-1, 0, 1}
    known = Y != 0
    assert np.array_equal(Y[known], ds.labels[known])  # every known entry is the true label
    assert abs(known.mean() - p) < 0.02  # protocol A keeps about a fraction p of the entries
    out = labels.write_peer_labels(tmp_path / "export" / src.name, Y)
    assert out.read_bytes() == src.read_bytes()


def test_our_protocol_a_mask_round_trips_through_the_peer_format(tmp_path):
    ds = voc_trainval_stand_in(tmp_path / "voc")
    ours = labels.observed_labels(ds, "proportion", 0.3, seed=0, cache_root=tmp_path / "cache")
    path = labels.write_peer_labels(tmp_path / "export" / "train_proportion_0.3.txt", ours)
    back = labels.observed_labels(ds, "proportion", 0.3, source="peer", path=path)
    assert np.array_equal(back, ours) and back.dtype == ours.dtype
    # and a second export of the import is byte-identical to the first
    again = labels.write_peer_labels(tmp_path / "export" / "again.txt", back)
    assert again.read_bytes() == path.read_bytes()

