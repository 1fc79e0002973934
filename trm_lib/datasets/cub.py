"""CUB-200-2011 as a 312-attribute multi-label set (the single-positive benchmark of SPML/SCPNet).

Entry (image, attribute) is positive when ``is_present`` is 1 in
``attributes/image_attribute_labels.txt`` (and, optionally, the worker's certainty is at least
``min_certainty``: 1 not visible, 2 guessing, 3 probably, 4 definitely), negative otherwise.

The file has 312 lines per image, ``<image_id> <attribute_id> <is_present> <certainty_id>
<time>``, but a handful of lines of the official release carry extra fields (pandas:
"Expected 5 fields ... saw 7"), which is why several public loaders special-case 6-field lines.
We read the first four fields of every line, tolerate extra ones and record their line numbers
in ``meta["malformed_lines"]``; every (image, attribute) pair must still be present.

``attributes.txt`` (``<id> has_bill_shape::curved_(up_or_down)``) sits *beside*
``CUB_200_2011/`` in the official archive; copies inside it are accepted as well. Class names are
those strings by default (``names="raw"``); ``names="readable"`` turns them into prompt-friendly
phrases (``curved (up or down) bill shape``), in the spirit of SCPNet's ``cub_labels.txt``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import register
from ._real import choice, first_existing, handle_missing, need_root, official_split, read_lines
from .base import DatasetError, MultiLabelDataset

LAYOUT = """CUB_200_2011/
  images.txt                                 <image_id> <class folder>/<name>.jpg
  train_test_split.txt                       <image_id> <1 train | 0 test>
  images/<class folder>/<name>.jpg
  attributes/image_attribute_labels.txt      <image_id> <attribute_id> <is_present> <certainty> <time>
attributes.txt                               <attribute_id> <name>  (beside CUB_200_2011/, or
                                             inside it, or in CUB_200_2011/attributes/)
root may be CUB_200_2011 or the folder holding it"""

SPLITS = {"train": "1", "test": "0"}
_MAX_FIELDS = 8  # widest line the fast parser accepts; wider ones take the slow path


def readable_name(raw: str) -> str:
    """``has_bill_shape::curved_(up_or_down)`` -> ``curved (up or down) bill shape``."""
    group, _, value = raw.partition("::")
    group = group.removeprefix("has_").replace("_", " ")
    return f"{value.replace('_', ' ')} {group}".strip() if value else group


def _id_table(path: Path) -> dict[int, str]:
    """``<int id> <value>`` lines as a dict; the error names the file and line."""
    out: dict[int, str] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"{path}:{lineno}: expected '<id> <value>', got {line[:60]!r}")
        out[int(parts[0])] = parts[1]
    if not out:
        raise DatasetError(f"{path}: empty file")
    return out


def _attribute_table(path: Path) -> tuple[np.ndarray, list[int]]:
    """``(M, 4)`` int64 rows ``image_id, attribute_id, is_present, certainty_id`` of
    ``image_attribute_labels.txt`` and the numbers of the lines that do not have 5 fields.

    pandas' C parser reads the 3.7M lines in ~2 s (a Python loop takes ~10 s); any file it cannot
    read cleanly goes through :func:`_attribute_table_slow`, whose errors name the line.
    """
    import pandas as pd

    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, names=list(range(_MAX_FIELDS)),
                         engine="c", skip_blank_lines=False)
    except (ValueError, pd.errors.ParserError):
        return _attribute_table_slow(path)
    if len(df) == 0 or any(df[c].dtype.kind != "i" for c in range(4)):
        return _attribute_table_slow(path)
    odd = df[4].isna().to_numpy() | df[list(range(5, _MAX_FIELDS))].notna().any(axis=1).to_numpy()
    return df[[0, 1, 2, 3]].to_numpy(np.int64), (np.flatnonzero(odd) + 1).tolist()


def _attribute_table_slow(path: Path) -> tuple[np.ndarray, list[int]]:
    rows: list[tuple[int, ...]] = []
    malformed: list[int] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if len(parts) < 4:
                raise DatasetError(f"{path}:{lineno}: expected '<image_id> <attribute_id> "
                                   f"<is_present> <certainty_id> <time>', got "
                                   f"{line.strip()[:60]!r}")
            if len(parts) != 5:
                malformed.append(lineno)
            try:
                rows.append(tuple(int(v) for v in parts[:4]))
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: the first four fields must be integers, "
                                   f"got {line.strip()[:60]!r}") from None
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4), malformed


def _attribute_labels(path: Path, ids: list[int], n_attr: int,
                      min_certainty: int) -> tuple[np.ndarray, list[int]]:
    """The {1,-1} (len(ids), n_attr) matrix for images ``ids``, and the malformed line numbers."""
    table, malformed = _attribute_table(path)
    image_id, attr, present, certainty = table.T
    bad = np.flatnonzero((attr < 1) | (attr > n_attr) | ((present != 0) & (present != 1)))
    if bad.size:
        raise DatasetError(f"{path}:{bad[0] + 1}: attribute_id must be in 1..{n_attr} and "
                           f"is_present 0 or 1, got {table[bad[0]].tolist()}")
    row_of = np.full(max(int(image_id.max(initial=0)), max(ids)) + 1, -1, dtype=np.int64)
    row_of[ids] = np.arange(len(ids))
    rows = row_of[np.clip(image_id, 0, None)]
    mine = (rows >= 0) & (image_id >= 0)  # lines of the other split are skipped
    seen = np.zeros((len(ids), n_attr), dtype=bool)
    seen[rows[mine], attr[mine] - 1] = True
    if not seen.all():
        r, a = np.argwhere(~seen)[0]
        raise DatasetError(f"{path}: no line for image {ids[r]}, attribute {a + 1} "
                           f"({int((~seen).sum())} (image, attribute) pairs missing)")
    labels = -np.ones((len(ids), n_attr), dtype=np.int8)
    pos = mine & (present == 1) & (certainty >= min_certainty)
    labels[rows[pos], attr[pos] - 1] = 1
    return labels, malformed


@register("cub")
def load_cub(root: str | os.PathLike | None = None, split: str = "train", *,
             names: str = "raw", min_certainty: int = 1,
             missing: str = "error") -> MultiLabelDataset:
    """CUB-200-2011 official ``train`` (5,994) or ``test`` (5,794) images x 312 attributes.

    Rows follow ``images.txt``; columns follow ``attributes.txt`` ids. ``names``: ``raw`` |
    ``readable``; ``min_certainty``: 1..4 (1 = ``is_present`` alone); ``missing``: ``error`` |
    ``skip`` | ``ignore``.
    """
    given = need_root("cub", root, LAYOUT)
    official = official_split("cub", split, SPLITS)
    choice("cub", "names", names, ("raw", "readable"))
    if min_certainty not in (1, 2, 3, 4):
        raise DatasetError(f"dataset 'cub': option min_certainty must be 1, 2, 3 or 4, got "
                           f"{min_certainty!r}")
    base = given / "CUB_200_2011" if (given / "CUB_200_2011").is_dir() else given
    images = _id_table(first_existing([base / "images.txt"], LAYOUT))
    is_train = _id_table(first_existing([base / "train_test_split.txt"], LAYOUT))
    attr_file = first_existing([base.parent / "attributes.txt", base / "attributes.txt",
                                base / "attributes" / "attributes.txt"], LAYOUT)
    attributes = _id_table(attr_file)
    if sorted(attributes) != list(range(1, len(attributes) + 1)):
        raise DatasetError(f"{attr_file}: attribute ids must be 1..{len(attributes)} without gaps")
    raw_names = [attributes[i] for i in range(1, len(attributes) + 1)]

    ids = []
    for image_id in images:
        if image_id not in is_train:
            raise DatasetError(f"{base / 'train_test_split.txt'}: no line for image {image_id} "
                               f"of images.txt")
        if is_train[image_id].strip() not in ("0", "1"):
            raise DatasetError(f"{base / 'train_test_split.txt'}: image {image_id} has "
                               f"is_training_image {is_train[image_id]!r}, expected 0 or 1")
        if is_train[image_id].strip() == official:
            ids.append(image_id)
    if not ids:
        raise DatasetError(f"{base / 'train_test_split.txt'}: no image has is_training_image "
                           f"{official} (split {split!r})")
    label_file = first_existing([base / "attributes" / "image_attribute_labels.txt"], LAYOUT)
    labels, malformed = _attribute_labels(label_file, ids, len(raw_names), min_certainty)

    paths = [base / "images" / images[i] for i in ids]
    meta = {"official_split": "train" if official == "1" else "test", "image_ids": ids,
            "attribute_names": raw_names, "min_certainty": min_certainty,
            "malformed_lines": malformed}
    keep = handle_missing("cub", split, base, paths, missing, meta, LAYOUT)
    if keep.size < len(ids):
        meta["image_ids"] = [ids[i] for i in keep]
    class_names = raw_names if names == "raw" else [readable_name(n) for n in raw_names]
    if len(set(class_names)) != len(class_names):
        raise DatasetError(f"{attr_file}: attribute names are not distinct (names={names!r})")
    return MultiLabelDataset("cub", split, base, [paths[i] for i in keep], labels[keep],
                             class_names, meta)
