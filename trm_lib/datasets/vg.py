"""VG-200: Visual Genome images with the 200 most frequent object categories (SST/SARB split).

Formats, as read by SSGRL's ``datasets/vgdataset.py`` and SST/SARB's ``datasets/vg.py``
(HCPLab-SYSU; the lists come from SSGRL's ``data/VG/``):

- ``train_list_500.txt`` / ``test_list_500.txt``: one image file name per line (``2328403.jpg``);
  98,249 / 10,000 images, shared with VG-500.
- ``vg_category_200_labels_index.json``: ``{"<file name>": [category index, ...]}`` with
  indices in 0..199 — SST derived it from ``vg_category_500_labels_index.json`` by keeping the
  indices below 200 (the 500 categories are ordered by frequency). An image whose list is empty
  is kept as an all-negative row, as SST/SARB do.
- images in ``VG_100K/`` (and ``VG_100K_2/``, the second part of the Visual Genome download).

The category *names* were never released (open issues SSGRL #12 and #28), and CLIP-based methods
need them for their text embeddings. Pass ``class_names=`` a file with 200 names, one per line in
index order (or a list); ``class_names="placeholder"`` uses ``vg200_000``… for work that does not
read class names (statistics, a linear probe) — text-based methods are meaningless with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import register
from ._real import first_existing, handle_missing, need_root, official_split, read_lines
from .base import DatasetError, MultiLabelDataset

NUM_CLASSES = 200
LABELS_FILE = "vg_category_200_labels_index.json"
IMAGE_DIRS = ("VG_100K", "VG_100K_2")
LAYOUT = f"""<root>/
  VG_100K/<id>.jpg   (and VG_100K_2/<id>.jpg)
  train_list_500.txt, test_list_500.txt      one image file name per line
  {LABELS_FILE}   {{"<id>.jpg": [category indices 0..199], ...}}
(the three annotation files may live elsewhere: annotations=<folder>)"""

SPLITS = {"train": "train", "test": "test"}


def _class_names(class_names: str | os.PathLike | Sequence[str] | None) -> tuple[list[str], str]:
    if class_names is None:
        raise DatasetError(
            "dataset 'vg200' needs class_names: the VG-200 category names are not part of the "
            "SST/SSGRL release. Pass class_names=<file with 200 names, one per line, in index "
            "order> (data.options.class_names in a config), or class_names='placeholder' for "
            "work that never reads class names")
    if isinstance(class_names, str) and class_names == "placeholder":
        return [f"vg200_{i:03d}" for i in range(NUM_CLASSES)], "placeholder"
    if isinstance(class_names, str | os.PathLike):
        path = Path(class_names).expanduser()
        if not path.is_file():
            raise DatasetError(f"{path}: class-name file not found (vg200 option class_names)")
        names, source = read_lines(path), str(path)
    else:
        names, source = [str(n) for n in class_names], "list"
    if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
        raise DatasetError(f"{source}: vg200 class_names must be {NUM_CLASSES} distinct names, "
                           f"got {len(names)} ({len(set(names))} distinct)")
    return names, source


@register("vg200")
def load_vg200(root: str | os.PathLike | None = None, split: str = "train", *,
               class_names: str | os.PathLike | Sequence[str] | None = None,
               annotations: str | os.PathLike | None = None,
               missing: str = "error") -> MultiLabelDataset:
    """VG-200 ``train`` or ``test`` (SST/SARB split), rows in list-file order.

    ``class_names``: see the module docstring. ``annotations``: folder holding the two list files
    and the labels json (default: ``root``). ``missing``: ``error`` | ``skip`` | ``ignore``.
    """
    base = need_root("vg200", root, LAYOUT)
    official = official_split("vg200", split, SPLITS)
    names, names_source = _class_names(class_names)
    ann_dir = Path(annotations).expanduser().absolute() if annotations is not None else base
    list_file = first_existing([ann_dir / f"{official}_list_500.txt"], LAYOUT)
    label_file = first_existing([ann_dir / LABELS_FILE], LAYOUT)
    files = [line.split()[0] for line in read_lines(list_file)]
    try:
        index = json.loads(label_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{label_file}: not valid JSON ({err})") from None
    if not isinstance(index, dict):
        raise DatasetError(f"{label_file}: expected an object mapping image file names to lists "
                           f"of category indices")

    labels = -np.ones((len(files), NUM_CLASSES), dtype=np.int8)
    for row, name in enumerate(files):
        if name not in index:
            raise DatasetError(f"{label_file}: no entry for image {name!r} of {list_file.name}")
        cats = index[name]
        if not isinstance(cats, list) or not all(type(c) is int and 0 <= c < NUM_CLASSES
                                                  for c in cats):
            raise DatasetError(f"{label_file}: entry {name!r} must be a list of integers in "
                               f"0..{NUM_CLASSES - 1}, got {cats!r} (is this the 500-category "
                               f"file?)")
        labels[row, cats] = 1

    # An image may sit in either download part; the first folder holding it wins.
    listings = {d: _names_in(base / d) for d in IMAGE_DIRS}
    paths = [next((base / d / f for d in IMAGE_DIRS if f in listings[d]), base / IMAGE_DIRS[0] / f)
             for f in files]
    meta = {"official_split": official, "class_names_source": names_source,
            "annotations": str(ann_dir)}
    keep = handle_missing("vg200", split, base, paths, missing, meta, LAYOUT)
    return MultiLabelDataset("vg200", split, base, [paths[i] for i in keep], labels[keep],
                             names, meta)


def _names_in(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it}
    except (FileNotFoundError, NotADirectoryError):
        return set()
