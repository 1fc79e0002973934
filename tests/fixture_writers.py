"""Tiny copies of the real datasets in their exact official on-disk formats, for loader tests.

Each ``write_*`` builds a few 8x8 JPEGs plus the annotation files in the layout users already
have (VOC XML, COCO ``instances_*.json``, NUS-WIDE per-concept 0/1 columns with Windows paths,
the SST/SSGRL VG lists and index json, CUB's space-separated tables with the release's
malformed attribute lines). Next to each writer sits the *expected* result, written out by hand
rather than derived from the same data, so a loader test compares against an independent truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: the overrides of a one-epoch linear-probe run on a generic-format tiny world (random TinyCLIP
#: weights, 64 px, CPU): what the reliability tests train, in one place
TINY_RUN = {"data.dataset": "folder", "data.proportion": 0.5, "data.val_fraction": 0.25,
            "backbone.model": "TinyCLIP-RN", "backbone.pretrained": None,
            "backbone.image_size": 64, "backbone.batch_size": 32, "train.epochs": 1,
            "train.batch_size": 16, "train.lr": 0.01, "train.device": "cpu",
            "train.progress": False, "method.name": "linear_probe"}

def write_jpeg(path: Path, seed: int = 0) -> Path:
    """An 8x8 RGB JPEG with seeded noise (distinct files, so nothing dedups them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline=newline) as fh:
        fh.write(text)
    return path


# ---------------------------------------------------------------------------------------------
# PASCAL VOC 2007
# ---------------------------------------------------------------------------------------------

# image id -> objects as (class name, difficult flag)
VOC_OBJECTS: dict[str, list[tuple[str, int]]] = {
    "000005": [("chair", 0), ("chair", 1), ("person", 0)],
    "000007": [("car", 0)],
    "000009": [("horse", 0), ("person", 1)],  # person only difficult -> negative
    "000012": [("car", 1), ("dog", 0)],  # car only difficult -> negative
    "000001": [("dog", 0), ("person", 0)],
    "000004": [("car", 0), ("car", 0)],
}
VOC_SPLITS = {"trainval": ["000005", "000007", "000009", "000012"],
              "test": ["000001", "000004"],
              "train": ["000005", "000009"], "val": ["000007", "000012"]}
# Hand-written truth: positives per image after skipping difficult objects.
VOC_POSITIVES = {"000005": {"chair", "person"}, "000007": {"car"}, "000009": {"horse"},
                 "000012": {"dog"}, "000001": {"dog", "person"}, "000004": {"car"}}
VOC_DIFFICULT_ONLY_TRAINVAL = 2  # (000009, person) and (000012, car)


def _voc_xml(image_id: str, objects: list[tuple[str, int]]) -> str:
    objs = "".join(f"""
\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>{difficult}</difficult>
\t\t<bndbox>
\t\t\t<xmin>1</xmin>
\t\t\t<ymin>1</ymin>
\t\t\t<xmax>7</xmax>
\t\t\t<ymax>7</ymax>
\t\t</bndbox>
\t</object>""" for name, difficult in objects)
    return f"""<annotation>
\t<folder>VOC2007</folder>
\t<filename>{image_id}.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t\t<image>flickr</image>
\t\t<flickrid>{int(image_id) + 341012865}</flickrid>
\t</source>
\t<owner>
\t\t<flickrid>Fried Camels</flickrid>
\t\t<name>Jinky the Fruit Bat</name>
\t</owner>
\t<size>
\t\t<width>8</width>
\t\t<height>8</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>{objs}
</annotation>
"""


def write_voc(root: Path) -> Path:
    """``root/VOCdevkit/VOC2007/...``; returns the ``VOCdevkit`` folder."""
    base = root / "VOCdevkit" / "VOC2007"
    for seed, (image_id, objects) in enumerate(VOC_OBJECTS.items()):
        write_jpeg(base / "JPEGImages" / f"{image_id}.jpg", seed)
        _write(base / "Annotations" / f"{image_id}.xml", _voc_xml(image_id, objects))
    for split, ids in VOC_SPLITS.items():
        _write(base / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    return root / "VOCdevkit"


# ---------------------------------------------------------------------------------------------
# MS-COCO 2014
# ---------------------------------------------------------------------------------------------

# Listed out of id order on purpose: columns must follow increasing id (1, 3, 18, 90).
COCO_CATEGORIES = [(18, "dog", "animal"), (1, "person", "person"), (90, "toothbrush", "indoor"),
                   (3, "car", "vehicle")]
COCO_CLASS_ORDER = ["person", "car", "dog", "toothbrush"]
# split -> images in the json's order, and annotations as (image id, category id, iscrowd)
COCO_IMAGES = {"train2014": [25, 9, 34, 30], "val2014": [42, 73]}
COCO_ANNOTATIONS = {
    "train2014": [(30, 18, 0), (9, 1, 0), (9, 3, 0), (25, 3, 0), (25, 1, 1), (30, 18, 0),
                  (9, 90, 0)],
    "val2014": [(73, 3, 0), (73, 1, 0)],
}
# Hand-written truth. images="all" follows the json's image order; "annotated" the order of
# first appearance in the annotation list (30, 9, 25); image 34 has no annotation.
COCO_ALL_ORDER = [25, 9, 34, 30]
COCO_ANNOTATED_ORDER = [30, 9, 25]
COCO_POSITIVES = {25: {"car", "person"}, 9: {"person", "car", "toothbrush"}, 34: set(),
                  30: {"dog"}, 42: set(), 73: {"car", "person"}}
COCO_CROWD_ONLY = {25: {"person"}}  # positives that exist only through a crowd annotation


def coco_file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def write_coco(root: Path) -> Path:
    """``root/{train2014,val2014,annotations}``; returns ``root``."""
    categories = [{"supercategory": s, "id": i, "name": n} for i, n, s in COCO_CATEGORIES]
    for split, ids in COCO_IMAGES.items():
        images = []
        for image_id in ids:
            name = coco_file_name(split, image_id)
            write_jpeg(root / split / name, image_id)
            images.append({"license": 3, "file_name": name,
                           "coco_url": f"http://images.cocodataset.org/{split}/{name}",
                           "height": 8, "width": 8, "date_captured": "2013-11-14 16:28:13",
                           "flickr_url": "http://farm4.staticflickr.com/1/1.jpg",
                           "id": image_id})
        annotations = [{"segmentation": [[1.0, 1.0, 6.0, 1.0, 6.0, 6.0]], "area": 12.5,
                        "iscrowd": crowd, "image_id": image_id, "bbox": [1.0, 1.0, 5.0, 5.0],
                        "category_id": cat, "id": 1000 + k}
                       for k, (image_id, cat, crowd) in enumerate(COCO_ANNOTATIONS[split])]
        data = {"info": {"description": "COCO 2014 Dataset", "version": "1.0", "year": 2014},
                "images": images, "licenses": [{"url": "http://x", "id": 3, "name": "x"}],
                "annotations": annotations, "categories": categories}
        _write(root / "annotations" / f"instances_{split}.json", json.dumps(data))
    return root


# ---------------------------------------------------------------------------------------------
# NUS-WIDE
# ---------------------------------------------------------------------------------------------

NUS_CONCEPTS = ["animal", "beach", "clouds", "person", "sky"]
# split -> (Windows-style image list entry, positives); the "zoo" image is never written to disk
# (lost from Flickr), the "sky\0004" image has no concept at all.
NUS_IMAGES = {
    "Train": [("actor\\0001_2124494179.jpg", {"person"}),
              ("beach\\0002_2130208612.jpg", {"beach", "sky", "clouds"}),
              ("sky\\0004_2116339463.jpg", set()),
              ("zoo\\0005_2149025153.jpg", {"animal"}),
              ("sky\\0006_2135406346.jpg", {"sky"})],
    "Test": [("animal\\0001_2124494180.jpg", {"animal"}),
             ("beach\\0002_2130208613.jpg", {"beach", "person"})],
}
NUS_MISSING = {"zoo/0005_2149025153.jpg"}


def write_nuswide(root: Path, official_layout: bool = True) -> Path:
    """Official layout (``Groundtruth/TrainTestLabels``, ``ConceptsList``) or the flat one
    (``TrainTestLabels/``, ``Concepts81.txt`` at the root). Windows line ends, as released."""
    concepts = (root / "ConceptsList" / "Concepts81.txt" if official_layout
                else root / "Concepts81.txt")
    _write(concepts, "".join(f"{c}\n" for c in NUS_CONCEPTS), newline="\r\n")
    label_dir = (root / "Groundtruth" / "TrainTestLabels" if official_layout
                 else root / "TrainTestLabels")
    everything = []
    for split, rows in NUS_IMAGES.items():
        _write(root / "ImageList" / f"{split}Imagelist.txt",
               "".join(f"{name}\n" for name, _ in rows), newline="\r\n")
        for c in NUS_CONCEPTS:
            _write(label_dir / f"Labels_{c}_{split}.txt",
                   "".join(f"{int(c in pos)}\n" for _, pos in rows), newline="\r\n")
        for seed, (name, _) in enumerate(rows):
            rel = name.replace("\\", "/")
            everything.append(f"C:\\ImageData\\Flickr\\{name}")
            if rel not in NUS_MISSING:
                write_jpeg(root / "Flickr" / rel, seed)
    _write(root / "ImageList" / "Imagelist.txt", "".join(f"{p}\n" for p in everything),
           newline="\r\n")
    return root


# ---------------------------------------------------------------------------------------------
# VG-200 (SST/SARB release of the SSGRL split)
# ---------------------------------------------------------------------------------------------

VG_LISTS = {"train": ["1.jpg", "2417967.jpg", "3.jpg"], "test": ["2.jpg"]}
VG_INDEX = {"1.jpg": [0, 5, 199], "2417967.jpg": [3], "3.jpg": [], "2.jpg": [5, 7],
            "99.jpg": [1]}  # the json covers more images than the lists use
VG_FOLDERS = {"1.jpg": "VG_100K", "2.jpg": "VG_100K", "3.jpg": "VG_100K",
              "2417967.jpg": "VG_100K_2"}


def write_vg(root: Path) -> Path:
    """``root/{VG_100K,VG_100K_2}`` + the three annotation files; returns ``root``."""
    for seed, (name, folder) in enumerate(VG_FOLDERS.items()):
        write_jpeg(root / folder / name, seed)
    for split, names in VG_LISTS.items():
        _write(root / f"{split}_list_500.txt", "".join(f"{n}\n" for n in names))
    _write(root / "vg_category_200_labels_index.json", json.dumps(VG_INDEX))
    return root


# ---------------------------------------------------------------------------------------------
# CUB-200-2011
# ---------------------------------------------------------------------------------------------

CUB_IMAGES = {1: "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
              2: "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg",
              3: "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
              4: "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg",
              5: "003.Sooty_Albatross/Sooty_Albatross_0031_1066.jpg"}
CUB_TRAIN = {1: 0, 2: 1, 3: 1, 4: 0, 5: 1}
CUB_ATTRIBUTES = ["has_bill_shape::curved_(up_or_down)", "has_bill_shape::dagger",
                  "has_wing_color::blue", "has_size::large_(16_-_32_in)",
                  "has_shape::upright-perching_water-like"]
CUB_READABLE = ["curved (up or down) bill shape", "dagger bill shape", "blue wing color",
                "large (16 - 32 in) size", "upright-perching water-like shape"]
# (image id) -> per attribute (is_present, certainty_id)
CUB_LABELS = {
    1: [(1, 4), (0, 3), (0, 1), (1, 2), (0, 4)],
    2: [(0, 4), (1, 4), (1, 2), (0, 3), (1, 3)],
    3: [(1, 3), (1, 1), (0, 4), (0, 4), (0, 2)],
    4: [(0, 1), (0, 1), (1, 4), (1, 4), (1, 4)],
    5: [(1, 4), (0, 4), (0, 4), (1, 1), (0, 3)],
}
# Lines (image id, attribute id) written with extra fields, like the release's malformed lines.
CUB_MALFORMED = {(2, 3): "2 3 1 2 0 0 5.627\n", (5, 4): "5 4 1 1 0 11.98\n"}


def write_cub(root: Path, attributes_at: str = "beside") -> Path:
    """``root/CUB_200_2011/...``; ``attributes.txt`` ``beside`` the folder (as in the official
    archive), ``inside`` it, or in ``attributes/``. Returns ``root/CUB_200_2011``."""
    base = root / "CUB_200_2011"
    _write(base / "images.txt", "".join(f"{i} {p}\n" for i, p in CUB_IMAGES.items()))
    _write(base / "train_test_split.txt", "".join(f"{i} {t}\n" for i, t in CUB_TRAIN.items()))
    _write(base / "classes.txt", "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n"
                                 "3 003.Sooty_Albatross\n")
    _write(base / "image_class_labels.txt",
           "".join(f"{i} {int(p[:3])}\n" for i, p in CUB_IMAGES.items()))
    for i, rel in CUB_IMAGES.items():
        write_jpeg(base / "images" / rel, i)
    attr_text = "".join(f"{k} {name}\n" for k, name in enumerate(CUB_ATTRIBUTES, start=1))
    where = {"beside": root / "attributes.txt", "inside": base / "attributes.txt",
             "attributes_dir": base / "attributes" / "attributes.txt"}[attributes_at]
    _write(where, attr_text)
    lines = []
    for i, values in CUB_LABELS.items():
        for a, (present, certainty) in enumerate(values, start=1):
            lines.append(CUB_MALFORMED.get((i, a), f"{i} {a} {present} {certainty} "
                                                   f"{(i * 7 + a) % 13 + 0.5:.3f}\n"))
    _write(base / "attributes" / "image_attribute_labels.txt", "".join(lines))
    _write(base / "attributes" / "certainties.txt",
           "1 not visible\n2 guessing\n3 probably\n4 definitely\n")
    return base


# ---------------------------------------------------------------------------------------------
# A tiny learnable world in the generic folder format (trainer, explorer and DDP tests)
# ---------------------------------------------------------------------------------------------
SQUARE_CLASSES = ["red", "green", "blue", "white"]
SQUARE_COLORS = np.array([[220, 30, 30], [30, 200, 30], [30, 30, 220], [240, 240, 240]], np.uint8)


def write_square_world(root: Path, n_train: int = 48, n_test: int = 24, seed: int = 0,
                       ext: str = "png") -> Path:
    """64-px images of grey noise with a 20-px square of each present class's colour (each image
    has at least one class), written in the generic format so the real loader path reads it."""
    from trm_lib.datasets import write_generic

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        rel, labels = [], []
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            present = rng.random(len(SQUARE_CLASSES)) < 0.4
            present[rng.integers(len(SQUARE_CLASSES))] = True
            img = rng.integers(60, 140, size=(64, 64, 3)).astype(np.uint8)
            for c in np.flatnonzero(present):
                y0, x0 = rng.integers(0, 44, size=2)
                img[y0:y0 + 20, x0:x0 + 20] = SQUARE_COLORS[c]
            name = f"{split}/{i:03d}.{ext}"
            Image.fromarray(img).save(root / name, **({"quality": 92} if ext == "jpg" else {}))
            rel.append(name)
            labels.append(np.where(present, 1, -1))
        write_generic(root, split, rel, np.asarray(labels), SQUARE_CLASSES)
    return root
