"""MS-COCO 2014 from the official image folders and ``instances_*.json`` files.

One flat N x 80 matrix (DualCoOp's 3-row area buckets caused a label-leak dispute). The 80
category ids are not contiguous (1..90); columns follow increasing id, names come from the json.

Two image sets circulate, so ``images=`` chooses: ``"all"`` (default; 82,783 train / 40,504
val, as SST/SARB and TaI-DPT) or ``"annotated"`` (only images with at least one annotation,
82,081 / 40,137, as ASL/DualCoOp/SCPNet). Crowd annotations (``iscrowd=1``) count as positives
by default because every peer does (pycocotools' ``getAnnIds(imgIds=...)`` returns them);
``crowd="exclude"`` drops them. Row order reproduces the peers' so their mask files line up:
``"all"`` follows the json's ``images`` list (pycocotools ``coco.imgs``), ``"annotated"`` the
order in which images first appear in ``annotations`` (pycocotools ``coco.imgToAnns``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import register
from ._real import choice, first_existing, handle_missing, need_root, official_split
from .base import DatasetError, MultiLabelDataset

LAYOUT = """<root>/
  train2014/COCO_train2014_<id>.jpg
  val2014/COCO_val2014_<id>.jpg
  annotations/instances_train2014.json, instances_val2014.json"""

SPLITS = {"train": "train2014", "test": "val2014", "val": "val2014"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: field {key!r} missing or not a list")
    return data


def _field(path: Path, where: str, record: Any, key: str) -> Any:
    try:
        return record[key]
    except (KeyError, TypeError):
        raise DatasetError(f"{path}: {where} has no field {key!r}") from None


@register("coco2014")
def load_coco2014(root: str | os.PathLike | None = None, split: str = "train", *,
                  images: str = "all", crowd: str = "include",
                  missing: str = "error") -> MultiLabelDataset:
    """COCO 2014 ``train2014`` (``split="train"``) or ``val2014`` (``"test"``/``"val"``).

    ``images``: ``all`` | ``annotated``; ``crowd``: ``include`` | ``exclude``; ``missing``:
    ``error`` | ``skip`` | ``ignore`` for listed images whose JPEG is absent.
    """
    base = need_root("coco2014", root, LAYOUT)
    official = official_split("coco2014", split, SPLITS)
    choice("coco2014", "images", images, ("all", "annotated"))
    choice("coco2014", "crowd", crowd, ("include", "exclude"))
    ann_file = first_existing([base / "annotations" / f"instances_{official}.json"], LAYOUT)
    image_dir = base / official  # its absence is reported by handle_missing (unless "ignore")
    data = _read_json(ann_file)

    cats = sorted(data["categories"], key=lambda c: _field(ann_file, "a category", c, "id"))
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    class_names = [str(_field(ann_file, f"category {c['id']}", c, "name")) for c in cats]

    file_names: dict[Any, str] = {}
    for im in data["images"]:
        file_names[_field(ann_file, "an image", im, "id")] = _field(
            ann_file, f"image {im.get('id')}", im, "file_name")
    anns = data["annotations"]
    if images == "all":
        order = list(file_names)
    else:  # first appearance in the annotation list, as pycocotools' imgToAnns
        order = list(dict.fromkeys(_field(ann_file, "an annotation", a, "image_id")
                                   for a in anns))
    row_of = {image_id: r for r, image_id in enumerate(order)}

    labels = -np.ones((len(order), len(cats)), dtype=np.int8)
    crowd_dropped = 0
    for a in anns:
        image_id = _field(ann_file, "an annotation", a, "image_id")
        cat = _field(ann_file, f"annotation {a.get('id')}", a, "category_id")
        if image_id not in file_names:
            raise DatasetError(f"{ann_file}: annotation {a.get('id')} refers to image "
                               f"{image_id}, which is not in 'images'")
        if cat not in cat_index:
            raise DatasetError(f"{ann_file}: annotation {a.get('id')} has category_id {cat}, "
                               f"which is not in 'categories'")
        if crowd == "exclude" and a.get("iscrowd", 0):
            crowd_dropped += 1
            continue
        labels[row_of[image_id], cat_index[cat]] = 1

    paths = [image_dir / file_names[i] for i in order]
    meta = {"official_split": official, "images": images, "crowd": crowd,
            "category_ids": [c["id"] for c in cats], "image_ids": order,
            "crowd_annotations_dropped": crowd_dropped}
    keep = handle_missing("coco2014", split, base, paths, missing, meta, LAYOUT)
    if keep.size < len(order):
        meta["image_ids"] = [order[i] for i in keep]
    return MultiLabelDataset("coco2014", split, base, [paths[i] for i in keep], labels[keep],
                             class_names, meta)
