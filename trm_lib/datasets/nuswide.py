"""NUS-WIDE (81 concepts) from the official release files.

The official labels are one file per concept and split, ``Labels_<concept>_{Train,Test}.txt``,
with one 0/1 per line aligned with ``ImageList/{Train,Test}Imagelist.txt`` (161,789 / 107,859
lines, Windows paths such as ``actor\\0001_2124494179.jpg``). Many Flickr images can no longer be
downloaded, so missing image files are skipped with a warning by default (``missing="skip"``)
and listed in ``dataset.meta["missing"]``.

About 22 % of the images carry none of the 81 concepts. ``drop_unlabeled=True`` (default) drops
them, which is the convention of the authors' own lineage (SADCL's ``nus_wide.py`` skips rows
whose label sum is 0); pass ``False`` to keep them as all-negative rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import register
from ._real import first_existing, handle_missing, need_root, official_split, read_lines
from .base import DatasetError, MultiLabelDataset

LAYOUT = """<root>/
  Flickr/<folder>/<name>.jpg
  ImageList/TrainImagelist.txt, TestImagelist.txt    (lines like actor\\0001_2124494179.jpg)
  Groundtruth/TrainTestLabels/Labels_<concept>_Train.txt, Labels_<concept>_Test.txt
                                                      (one 0/1 per image; TrainTestLabels/ at
                                                      the root is accepted too)
  ConceptsList/Concepts81.txt                        (or Concepts81.txt at the root)"""

SPLITS = {"train": "Train", "test": "Test"}


def _read_binary_column(path: Path, n: int) -> np.ndarray:
    """One ``Labels_<concept>_<split>.txt`` (a 0/1 per line) as a boolean vector of length n."""
    lines = path.read_bytes().removeprefix(b"\xef\xbb\xbf").replace(b"\r", b"").split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    digits = b"".join(lines)
    if len(digits) == len(lines):  # fast path: one character per line (values checked below)
        values = np.frombuffer(digits, dtype=np.uint8).astype(np.int64) - ord("0")
    else:
        values = np.array([int(v) if v.strip().isdigit() else -1 for v in lines], dtype=np.int64)
    if values.size != n:
        raise DatasetError(f"{path}: {values.size} lines, but the image list has {n}")
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        raise DatasetError(f"{path}:{bad[0] + 1}: {lines[bad[0]].decode(errors='replace')!r} "
                           f"is not 0 or 1")
    return values.astype(bool)


@register("nuswide")
def load_nuswide(root: str | os.PathLike | None = None, split: str = "train", *,
                 drop_unlabeled: bool = True, missing: str = "skip") -> MultiLabelDataset:
    """NUS-WIDE ``Train`` (``split="train"``) or ``Test`` (``"test"``) with the 81 concepts.

    Rows follow the image list (minus missing and, by default, unlabelled images); columns follow
    ``Concepts81.txt``. ``meta`` records ``missing`` (relative paths) and ``unlabeled_dropped``.
    """
    base = need_root("nuswide", root, LAYOUT)
    official = official_split("nuswide", split, SPLITS)
    concepts_file = first_existing([base / "ConceptsList" / "Concepts81.txt",
                                    base / "Concepts81.txt"], LAYOUT)
    concepts = read_lines(concepts_file)
    if not concepts or len(set(concepts)) != len(concepts):
        raise DatasetError(f"{concepts_file}: expected one distinct concept name per line")
    list_file = first_existing([base / "ImageList" / f"{official}Imagelist.txt"], LAYOUT)
    rel = [line.replace("\\", "/") for line in read_lines(list_file)]
    label_dir = first_existing([base / "Groundtruth" / "TrainTestLabels",
                                base / "TrainTestLabels"], LAYOUT, what="folder")
    positive = np.stack([
        _read_binary_column(first_existing(
            [label_dir / f"Labels_{c}_{official}.txt"], LAYOUT), len(rel))
        for c in concepts], axis=1)
    labels = np.where(positive, 1, -1).astype(np.int8)

    image_dir = base / "Flickr"
    paths = [image_dir / r for r in rel]
    meta = {"official_split": official, "drop_unlabeled": drop_unlabeled, "listed": len(rel)}
    keep = handle_missing("nuswide", split, base, paths, missing, meta, LAYOUT)
    unlabeled = ~positive[keep].any(axis=1)
    meta["unlabeled_dropped"] = int(unlabeled.sum()) if drop_unlabeled else 0
    if drop_unlabeled:
        keep = keep[~unlabeled]
    return MultiLabelDataset("nuswide", split, base, [paths[i] for i in keep], labels[keep],
                             concepts, meta)
