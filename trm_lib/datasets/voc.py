"""PASCAL VOC 2007 from its official devkit layout.

An image is positive for a class when it has at least one *non-difficult* object of that class.
Objects marked ``<difficult>1</difficult>`` are skipped, so an image whose only instance of a
class is difficult counts as a negative for it — what every peer does (e.g. SST/SARB's
``datasets/voc2007.py``, TaI-DPT's shipped matrices in ``trm_lib/data/voc2007_labels``), and what
makes our rows comparable with the peers' partial-label files row for row.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from . import register
from ._real import first_existing, handle_missing, need_root, official_split, read_lines
from .base import DatasetError, MultiLabelDataset
from .classes import VOC_CLASSES

LAYOUT = """VOCdevkit/VOC2007/
  JPEGImages/<id>.jpg
  Annotations/<id>.xml
  ImageSets/Main/trainval.txt, test.txt   (one image id per line)
root may be VOCdevkit, VOCdevkit/VOC2007, or a folder holding VOCdevkit/"""

SPLITS = {"train": "trainval", "trainval": "trainval", "test": "test"}


def find_voc2007(root: Path) -> Path:
    """The ``VOC2007`` folder under any of the accepted roots."""
    candidates = [root / "VOC2007", root, root / "VOCdevkit" / "VOC2007"]
    for path in candidates:
        if (path / "Annotations").is_dir() or (path / "ImageSets").is_dir():
            return path
    return first_existing([c / "Annotations" for c in candidates], LAYOUT, what="folder")


def parse_annotation(path: Path, class_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(present, difficult_only)`` boolean vectors over the classes for one XML file."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as err:
        raise DatasetError(f"{path}: not valid XML ({err})") from None
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found (expected layout:\n{LAYOUT})"
                           ) from None
    present = np.zeros(len(class_index), dtype=bool)
    difficult = np.zeros(len(class_index), dtype=bool)
    for obj in tree.getroot().findall("object"):
        name = (obj.findtext("name") or "").strip().lower()
        if name not in class_index:
            raise DatasetError(f"{path}: <object><name> {name!r} is not a VOC class "
                               f"({', '.join(class_index)})")
        if (obj.findtext("difficult") or "0").strip() == "1":
            difficult[class_index[name]] = True
        else:
            present[class_index[name]] = True
    return present, difficult & ~present


@register("voc2007")
def load_voc2007(root: str | os.PathLike | None = None, split: str = "train", *,
                 missing: str = "error") -> MultiLabelDataset:
    """VOC2007 ``trainval`` (for ``split="train"``/``"trainval"``) or ``test``.

    Rows follow ``ImageSets/Main/<split>.txt``; columns follow :data:`VOC_CLASSES`. ``missing``:
    what to do with listed images whose JPEG is absent (``error``/``skip``/``ignore``).
    ``meta["difficult_only"]`` counts (image, class) entries that are negative only because
    every instance was difficult.
    """
    base = find_voc2007(need_root("voc2007", root, LAYOUT))
    official = official_split("voc2007", split, SPLITS)
    ids = [line.split()[0] for line in read_lines(
        first_existing([base / "ImageSets" / "Main" / f"{official}.txt"], LAYOUT))]
    if not ids:
        raise DatasetError(f"{base / 'ImageSets' / 'Main' / f'{official}.txt'}: no image ids")
    class_index = {c: i for i, c in enumerate(VOC_CLASSES)}
    labels = -np.ones((len(ids), len(VOC_CLASSES)), dtype=np.int8)
    difficult_only = 0
    for row, image_id in enumerate(ids):
        present, diff = parse_annotation(base / "Annotations" / f"{image_id}.xml", class_index)
        labels[row, present] = 1
        difficult_only += int(diff.sum())
    paths = [base / "JPEGImages" / f"{image_id}.jpg" for image_id in ids]
    meta = {"official_split": official, "difficult_only": difficult_only,
            "difficult": "negative"}
    keep = handle_missing("voc2007", split, base, paths, missing, meta, LAYOUT)
    return MultiLabelDataset("voc2007", split, base, [paths[i] for i in keep], labels[keep],
                             list(VOC_CLASSES), meta)
